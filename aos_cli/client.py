"""Channels, stubs and the CLI's error model: every expected failure becomes a ``CliError``
carrying its exit code, so ``main`` prints one message and never a traceback."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aos.export.v1 import export_service_pb2_grpc, retention_service_pb2_grpc
from aos.ingest.v1 import ingest_service_pb2_grpc
from aos.logs.v1 import (
    audit_ledger_service_pb2_grpc,
    evidence_search_service_pb2_grpc,
    llm_runs_service_pb2_grpc,
    system_logs_service_pb2_grpc,
)
from aos.overview.v1 import overview_service_pb2_grpc
from aos_runtime import channels

EXIT_OK = 0
EXIT_FAILED = 1   # a verification did not hold
EXIT_USAGE = 2    # the caller's input: arguments, files, credentials, ids
EXIT_SERVICE = 3  # the service could not answer (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL …)

# Codes that mean "your request was wrong", as opposed to "the service failed".
_INPUT_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
})
_HINTS = {
    grpc.StatusCode.UNAVAILABLE: "is the service running at {address}? (`make run` starts the suite)",
    grpc.StatusCode.UNAUTHENTICATED: "pass --token or set AOS_TOKEN (`aos-evidence token mint` makes one)",
}
# Responses like a 1000-entry ledger page can exceed gRPC's 4 MiB default.
_CHANNEL_OPTIONS = channels.channel_options(64 * 1024 * 1024)


class CliError(Exception):
    """An expected failure: ``message`` (and ``details``) go to stderr, ``exit_code`` to the shell."""

    def __init__(self, message: str, exit_code: int, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.details = details or []


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class VerificationFailed(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_FAILED)


def rpc_error(error: grpc.RpcError, address: str) -> CliError:
    """The status code and message, ErrorInfo's reason and every BadRequest field violation."""
    code = error.code()
    details: list[str] = []
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # details inconsistent with the status: show the plain status only
        status = None
    for packed in status.details if status else ():
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            details.append(f"reason: {info.reason} ({info.domain})")
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            details += [f"field {v.field}: {v.description}" for v in bad.field_violations]
    if code in _HINTS:
        details.append("hint: " + _HINTS[code].format(address=address))
    exit_code = EXIT_USAGE if code in _INPUT_CODES else EXIT_SERVICE
    return CliError(f"{code.name}: {error.details() or '(no message)'}", exit_code, details)


class _Service:
    """A stub whose calls carry the token and deadline and raise ``CliError`` instead of gRPC errors."""

    def __init__(self, stub: object, address: str, metadata: Callable[[], tuple[tuple[str, str], ...]],
                 timeout_s: float) -> None:
        self._stub, self._address, self._metadata, self._timeout_s = stub, address, metadata, timeout_s

    def __getattr__(self, name: str) -> Callable[[Message], Any]:
        method = getattr(self._stub, name)
        if isinstance(method, grpc.UnaryStreamMultiCallable):
            return lambda request: self._stream(method, request)
        return lambda request: self._unary(method, request)

    def _unary(self, method: grpc.UnaryUnaryMultiCallable, request: Message) -> Any:
        try:
            return method(request, metadata=self._metadata(), timeout=self._timeout_s)
        except grpc.RpcError as error:
            raise rpc_error(error, self._address) from None

    def _stream(self, method: grpc.UnaryStreamMultiCallable, request: Message) -> Iterator[Any]:
        # The deadline covers the whole stream; errors surface while iterating.
        try:
            yield from method(request, metadata=self._metadata(), timeout=self._timeout_s)
        except grpc.RpcError as error:
            raise rpc_error(error, self._address) from None


class Client:
    """Lazily opened channels to the services: ``client.audit.ListAuditEntries(request)``."""

    def __init__(self, addresses: dict[str, str], token: Callable[[], str | None], timeout_s: float) -> None:
        self._addresses = addresses
        self._token = token
        self._timeout_s = timeout_s
        self._channels: dict[str, grpc.Channel] = {}
        self._auth: tuple[tuple[str, str], ...] | None = None

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        if self._auth is None:  # resolved on the first call: offline commands never need a token
            token = self._token()
            self._auth = (("authorization", f"Bearer {token}"),) if token else ()
        return self._auth

    def _service(self, service: str, stub_class: type) -> _Service:
        if service not in self._channels:
            self._channels[service] = grpc.insecure_channel(self._addresses[service], options=_CHANNEL_OPTIONS)
        return _Service(stub_class(self._channels[service]), self._addresses[service], self._metadata,
                        self._timeout_s)

    @property
    def overview(self) -> _Service:
        return self._service("overview", overview_service_pb2_grpc.OverviewServiceStub)

    @property
    def audit(self) -> _Service:
        return self._service("logs", audit_ledger_service_pb2_grpc.AuditLedgerServiceStub)

    @property
    def runs(self) -> _Service:
        return self._service("logs", llm_runs_service_pb2_grpc.LlmRunsServiceStub)

    @property
    def system(self) -> _Service:
        return self._service("logs", system_logs_service_pb2_grpc.SystemLogsServiceStub)

    @property
    def search(self) -> _Service:
        return self._service("logs", evidence_search_service_pb2_grpc.EvidenceSearchServiceStub)

    @property
    def exports(self) -> _Service:
        return self._service("export", export_service_pb2_grpc.ExportServiceStub)

    @property
    def retention(self) -> _Service:
        return self._service("export", retention_service_pb2_grpc.RetentionServiceStub)

    @property
    def ingest(self) -> _Service:
        return self._service("ingest", ingest_service_pb2_grpc.IngestServiceStub)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
