"""Errors as callers see them (SPEC section 3, AIP-193).

Handlers raise ``ApiError`` (usually through the helpers below); the layers below the
edge raise domain faults (``aos_runtime.faults``) and know nothing of gRPC. The
server's call wrapper turns either — or any database failure — into a canonical
status with ``google.rpc.ErrorInfo`` (UPPER_SNAKE reason, domain ``aos.evidence``)
and, for bad input, ``google.rpc.BadRequest`` field violations. A caller's mistake
never ends as UNKNOWN or INTERNAL.
"""
from __future__ import annotations

import asyncio
import collections
import math
import re
from collections.abc import Sequence

import grpc
import psycopg
import sqlalchemy.exc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from aos_runtime import faults
from aos_runtime.headers import MIN_WAL_POSITION_HEADER

DOMAIN = "aos.evidence"
# AIP-193: an ErrorInfo reason is UPPER_SNAKE_CASE. Checked when an ApiError is built, so a
# reason made from a phrase ("TRACE OF RUN_NOT_FOUND") fails the first test that reaches it.
REASON = re.compile(r"[A-Z][A-Z0-9_]*[A-Z0-9]")


# What a NOT_FOUND is about; defined with the fault below the edge, named here for handlers.
Resource = faults.Resource


class ApiError(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str, *,
                 violations: list[tuple[str, str]] | None = None,
                 metadata: dict[str, str] | None = None, details: Sequence[Message] = ()) -> None:
        if not isinstance(reason, str) or not REASON.fullmatch(reason):
            raise ValueError(f"ErrorInfo reason must be UPPER_SNAKE_CASE, got {reason!r}")
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.violations = list(violations or [])
        self.metadata = dict(metadata or {})
        self.details = list(details)   # further google.rpc details (QuotaFailure, RetryInfo, ...)

    def to_status(self, trailing_metadata: tuple[tuple[str, str], ...] = ()) -> grpc.Status:
        details = []
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        details.append(_pack(info))
        if self.violations:
            bad = error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in self.violations])
            details.append(_pack(bad))
        details += [_pack(d) for d in self.details]
        status = rpc_status.to_status(
            status_pb2.Status(code=getattr(code_pb2, self.code.name), message=self.message, details=details))
        # The RetryInfo also on its own, as the OpenTelemetry OTLP/gRPC exporters read it
        # (opentelemetry-exporter-otlp-proto-grpc reads only this key, not the Status details).
        retry = tuple((RETRY_INFO_KEY, d.SerializeToString()) for d in self.details
                      if isinstance(d, error_details_pb2.RetryInfo))
        return _Status(status.code, status.details,
                       tuple(trailing_metadata) + tuple(status.trailing_metadata) + retry)


RETRY_INFO_KEY = "google.rpc.retryinfo-bin"


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    """A status with extra trailing metadata (the request id) next to the rich details."""


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class Violations:
    """Collects every bad field of a request, so the caller learns them all at once."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        self.items.append((field, description))

    def check(self, ok: bool, field: str, description: str) -> None:
        if not ok:
            self.add(field, description)

    def raise_if_any(self) -> None:
        if self.items:
            error = invalid_argument(", ".join(sorted({f for f, _ in self.items})), "")
            error.violations = list(self.items)
            raise error


def invalid_argument(field: str, description: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", f"invalid request fields: {field}",
                    violations=[(field, description)])


def not_found(resource: Resource, resource_id: str) -> ApiError:
    # Another tenant's record answers exactly like a missing one: existence is never revealed.
    return ApiError(grpc.StatusCode.NOT_FOUND, resource.reason, f"{resource.value} {resource_id!r} not found",
                    metadata={"resource": resource.name.lower(), "id": resource_id})


def unauthenticated(reason: str, message: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, reason, message)


def permission_denied(scope: str) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING",
                    f"this call needs the scope {scope!r}", metadata={"required_scope": scope})


def actor_type_refused(scope: str, actor_type: str, allowed: tuple[str, ...]) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, "ACTOR_TYPE_REFUSED",
                    f"the scope {scope!r} is for {' or '.join(allowed)} callers, not {actor_type}",
                    metadata={"required_scope": scope, "actor_type": actor_type})


def from_exception(exc: BaseException, *, deadline_passed: bool) -> ApiError:
    """Classify a failure that is not an ApiError: the domain faults (aos_runtime.faults) and
    the database's own failures, each to its one status. Unknown failures are INTERNAL."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, faults.Fault):
        return _from_fault(exc)
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "DATABASE_POOL_EXHAUSTED",
                        "no database connection became free in time; retry with backoff")
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    if isinstance(orig, psycopg.errors.QueryCanceled) or isinstance(exc, asyncio.TimeoutError):
        if deadline_passed:
            return ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED",
                            "the call's deadline passed; its query was cancelled")
        return ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "QUERY_TIMEOUT",
                        "the query ran past the statement timeout and was cancelled")
    if isinstance(orig, psycopg.errors.ForeignKeyViolation) and \
            (orig.diag.constraint_name or "").endswith("_tenant_id_fkey"):
        # A valid token for a tenant the platform has no row for: reads find nothing, and a
        # write (an export, its ledger entry, a checkpoint) meets the tenant foreign key.
        return ApiError(grpc.StatusCode.FAILED_PRECONDITION, "TENANT_NOT_FOUND",
                        "the token's tenant is not provisioned on this platform; nothing can be recorded for it")
    if isinstance(orig, (psycopg.OperationalError, psycopg.InterfaceError, ConnectionError, OSError)) \
            or (isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated):
        return ApiError(grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE",
                        "the database is unreachable; retry with backoff")
    return ApiError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error; see the server log for the request id")


def _from_fault(exc: faults.Fault) -> ApiError:
    """The one place a domain fault becomes a status; every Fault subclass has its line."""
    if isinstance(exc, faults.DeadlinePassed):
        # Waited in the queue past its deadline: no connection was spent on it.
        return ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", str(exc))
    if isinstance(exc, faults.PoolExhausted):
        return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "DATABASE_POOL_EXHAUSTED",
                        "every database connection stayed busy; retry with backoff",
                        details=_retry_info(exc.retry_after_s))
    if isinstance(exc, faults.Overloaded):
        # Refused before it started: nothing was done, so any call (a write too) may be retried.
        details = [error_details_pb2.QuotaFailure(violations=[error_details_pb2.QuotaFailure.Violation(
            subject=exc.tenant, description=exc.limit)]), *_retry_info(exc.retry_after_s)]
        if exc.ingest_bytes:
            return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "INGEST_BYTES_LIMIT", exc.message,
                            metadata={"limit": exc.limit}, details=details)
        if exc.tenant_limit:  # the tenant's own calls fill its share, not the process's
            return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "TENANT_HEAVY_LIMIT", exc.message,
                            metadata={"limit": exc.limit}, details=details)
        return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_OVERLOADED", exc.message,
                        metadata={"limit": exc.limit}, details=details)
    if isinstance(exc, faults.ReplicaBehind):
        # UNAVAILABLE: another instance (or this one a moment later) may have replayed further.
        return ApiError(grpc.StatusCode.UNAVAILABLE, "REPLICA_BEHIND",
                        f"this instance's database has replayed the WAL up to {exc.replayed}, not yet to "
                        f"{exc.wanted} ({MIN_WAL_POSITION_HEADER}); retry", metadata={"replayed": exc.replayed or ""})
    if isinstance(exc, faults.RecordNotFound):
        return not_found(exc.resource, exc.resource_id)
    if isinstance(exc, faults.EvidenceAlreadyRecorded):
        return ApiError(grpc.StatusCode.ALREADY_EXISTS, "EVIDENCE_CONFLICT",
                        f"{exc.message} (evidence is never overwritten; nothing was written)")
    if isinstance(exc, faults.LegalHoldReleased):
        return ApiError(grpc.StatusCode.FAILED_PRECONDITION, "LEGAL_HOLD_RELEASED", str(exc),
                        metadata={"hold_id": exc.hold_id})
    if isinstance(exc, faults.ExportRateLimited):
        return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "EXPORT_RATE_LIMITED", exc.message,
                        metadata=exc.metadata, details=_quota_details(exc))
    if isinstance(exc, faults.ExportStorageQuota):
        return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "EXPORT_STORAGE_QUOTA", exc.message,
                        metadata=exc.metadata, details=_quota_details(exc))
    if isinstance(exc, faults.LogHashesMissing):
        # The stored tree no longer answers: evidence was lost, and no retry brings it back.
        return ApiError(grpc.StatusCode.DATA_LOSS, "LOG_HASHES_MISSING",
                        f"the tenant's {exc.log} transparency log lacks {len(exc.missing)} stored hashes this "
                        "proof needs", metadata={"log": exc.log, "missing": ",".join(map(str, exc.missing[:20]))})
    if isinstance(exc, faults.CheckpointTreeMismatch):
        # A signed checkpoint and the stored tree disagree: the evidence was altered; no retry helps.
        return ApiError(grpc.StatusCode.DATA_LOSS, "CHECKPOINT_TREE_MISMATCH",
                        f"the tenant's {exc.log} transparency log no longer has the root its checkpoint of tree "
                        f"size {exc.size} signed", metadata={"log": exc.log, "tree_size": str(exc.size)})
    if isinstance(exc, faults.ExportContentErased):
        return ApiError(grpc.StatusCode.FAILED_PRECONDITION, "CONTENT_ERASED",
                        f"export {exc.export_id}: content erased after export "
                        f"({'up to ' if 'UNTRACKED' in exc.bases else ''}{exc.payloads} payloads); its stored "
                        "artifact was deleted with it. Its signed manifest stays (GetExport, VerifyExport); a copy "
                        "downloaded before verifies offline",
                        metadata={"payloads_erased": str(exc.payloads), "erasure_ids": ",".join(exc.erasure_ids),
                                  "erasure_bases": ",".join(exc.bases)})
    if isinstance(exc, faults.LegalHoldBlocksErasure):
        return ApiError(grpc.StatusCode.FAILED_PRECONDITION, "LEGAL_HOLD",
                        f"legal hold {exc.hold_id} covers this data subject: nothing was erased (the refused "
                        f"request is audit entry {exc.request_seq})",
                        metadata={"legal_hold_id": exc.hold_id, "request_seq": str(exc.request_seq)})
    return ApiError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error; see the server log for the request id")


def _quota_details(exc: faults.ExportRateLimited | faults.ExportStorageQuota) -> list[Message]:
    """google.rpc.QuotaFailure, and RetryInfo when waiting frees the quota (rounded up to the ms)."""
    details: list[Message] = [error_details_pb2.QuotaFailure(violations=[error_details_pb2.QuotaFailure.Violation(
        subject=exc.subject, description=exc.description)])]
    return details + _retry_info(exc.retry_after_s)


def _retry_info(seconds: float | None) -> list[Message]:
    """google.rpc.RetryInfo when a wait is known (rounded up to the ms); none otherwise."""
    if seconds is None:
        return []
    wait = duration_pb2.Duration()
    wait.FromMilliseconds(max(1, math.ceil(seconds * 1000)))
    return [error_details_pb2.RetryInfo(retry_delay=wait)]
