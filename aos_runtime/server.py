"""Server bootstrap shared by every service.

A service hands over its servicers; this module gives it the rest, once:
credentials (bearer JWT → tenant, actor, scopes; the scope each RPC needs is read
from its ``aos.evidence.v1.required_scope`` option), admission (an in-flight limit for
every call, a per-tenant fair queue for the RPCs declared ``heavy``: aos_runtime.admission),
error mapping, request ids
and a JSON call log, gRPC health (per service, NOT_SERVING while the database is
unreachable, recovering by itself), server reflection, keepalive and message-size
limits, and a graceful drain on SIGTERM. Reads of evidence (the RPCs declaring
``aos.evidence.v1.access``) are recorded as access entries in the caller's ledger by the
call wrapper too (aos_runtime.access), never by a handler.
"""
from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor as descriptor_mod
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from aos.evidence.v1 import options_pb2
from aos_runtime import auth, errors, heap, metrics, tracing
from aos_runtime.access import AccessRecorder
from aos_runtime.admission import NO_BYTES, OPEN, Admission, ByteHold, Permit
from aos_runtime.config import Settings
from aos_runtime.db import Database, call_deadline, heavy_call, min_wal_position
from aos_runtime.faults import Overloaded
from aos_runtime.headers import MIN_WAL_POSITION_HEADER, WAL_POSITION_HEADER
from aos_runtime.observability import request_id
from aos_runtime.pagination import PageTokens

log = logging.getLogger("aos.server")

# Open to every caller: a load balancer or grpcurl needs no token for these.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Refusals that are access decisions (recorded as AccessDenied): the caller may not, or the
# evidence is not there for it (another tenant's id answers NOT_FOUND too, by design).
ACCESS_DECISIONS = frozenset({grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND})
# A client stream refused before its client finished writing it is read to its end (and dropped)
# before the refusal goes out, at most this many bytes for at most this long (``drain``).
DRAIN_BYTES = 4 * 1024 * 1024   # a whole RecordRunStream (its runs are at most 4 MiB over all chunks)
DRAIN_S = 2.0
# A pg_lsn as PostgreSQL prints it: two hex words.
_WAL_POSITION = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")


async def drain(requests: AsyncIterator[Any]) -> None:
    """Reads what is left of a client stream the server is about to refuse, and drops it, so that
    the refusal reaches the client as itself. A status sent while the client still writes ends
    the stream under it (trailers, then RST_STREAM NO_ERROR); grpc.aio's client (grpcio 1.85)
    then fails its next write and reports that failure — INTERNAL "Internal error from Core" —
    in place of the status it was sent (grpc/grpc#36066, open; the client-side fix is
    grpc/grpc#43486, not released). Read to its end, the stream has no write left to fail: the
    client half-closes and reads the status. Bounded — DRAIN_BYTES, DRAIN_S — as a web server's
    lingering close is (nginx's lingering_time): past either the refusal goes out anyway, and a
    client still writing then may see INTERNAL again. A stream already read to its end, or one
    its client cancelled, ends at once. Raw chunks (a call shed before its request is parsed)
    are counted as they came; parsed ones by their size."""
    read = 0
    try:
        async with asyncio.timeout(DRAIN_S):
            async for chunk in requests:
                read += len(chunk) if isinstance(chunk, bytes) else chunk.ByteSize()
                if read > DRAIN_BYTES:
                    return
    except Exception:  # noqa: BLE001 - the time bound, or a chunk that does not parse: the refusal goes out as is
        return


@dataclass(frozen=True)
class ServiceContext:
    """What a service's handlers get from the runtime: the pool, the page-token key and
    the settings (for what only one service needs, such as the export signing keys)."""
    db: Database
    page_tokens: PageTokens
    settings: Settings | None = None


@dataclass(frozen=True)
class Servicer:
    """One gRPC service implementation and how to register it."""
    descriptor: descriptor_mod.ServiceDescriptor
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    implementation: Any
    # Work the service does by itself while it serves (e.g. publishing checkpoints): started
    # with the server, cancelled when it drains.
    background: Callable[[], Coroutine[Any, Any, None]] | None = None
    # The scope of every method of a service whose protos are another project's (OTLP's
    # TraceService) and so carry no ``required_scope`` option; None: read from the option.
    scope: str | None = None
    # Its requests' bytes count against AOS_INGEST_INFLIGHT_BYTES (aos_runtime.admission.InflightBytes).
    bound_bytes: bool = False


def _pass_bytes(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """A response serializer that hands an answer already in its wire form (bytes: issue #22's
    stored forms, aos_evidence.wire) to grpc as it is, and serializes a message as usual."""
    def serializer(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serialize(response)
    return serializer


def preserialized(descriptor: descriptor_mod.ServiceDescriptor) -> Callable[[Any, grpc.aio.Server], None]:
    """An ``add_to_server`` for ``descriptor``'s servicer, like protoc's ``add_…_to_server``,
    whose handlers may answer with the response's bytes instead of the message."""
    from google.protobuf import message_factory

    def add(implementation: Any, server: grpc.aio.Server) -> None:
        handlers = {}
        for method in descriptor.methods:
            request = message_factory.GetMessageClass(method.input_type)
            response = message_factory.GetMessageClass(method.output_type)
            if method.client_streaming:
                raise ValueError(f"{method.full_name}: client streams are not in the contract")
            make = grpc.unary_stream_rpc_method_handler if method.server_streaming else \
                grpc.unary_unary_rpc_method_handler
            handlers[method.name] = make(getattr(implementation, method.name),
                                         request_deserializer=request.FromString,
                                         response_serializer=_pass_bytes(response.SerializeToString))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
        server.add_registered_method_handlers(descriptor.full_name, handlers)
    return add


def heavy_methods(descriptors) -> frozenset[str]:
    """``/pkg.Service/Method`` of every RPC whose proto declares ``(aos.evidence.v1.heavy) = true``.

    Declared in the contract, next to the scope, rather than in a table here: a client reading
    the proto learns which calls are admitted through the heavy queue (and may be refused with
    TENANT_HEAVY_LIMIT), and a new RPC is classified where it is written."""
    return frozenset(f"/{service.full_name}/{method.name}" for service in descriptors for method in service.methods
                     if method.GetOptions().Extensions[options_pb2.heavy])


def required_scopes(descriptors, given: dict[str, str] | None = None) -> dict[str, str]:
    """``/pkg.Service/Method`` → scope, from the contract. A method without one is a startup error,
    unless its service's scope is ``given`` ({service full name: scope}, for foreign protos)."""
    scopes = {}
    for service in descriptors:
        if given and service.full_name in given:
            if given[service.full_name] not in auth.SCOPES:
                raise ValueError(f"{service.full_name} is given no valid scope ({given[service.full_name]!r})")
            scopes.update({f"/{service.full_name}/{m.name}": given[service.full_name] for m in service.methods})
            continue
        for method in service.methods:
            scope = method.GetOptions().Extensions[options_pb2.required_scope]
            if scope not in auth.SCOPES:
                raise ValueError(f"{method.full_name} declares no valid required_scope ({scope!r})")
            scopes[f"/{service.full_name}/{method.name}"] = scope
    return scopes


class CallSlot:
    """The admission slot a call holds now: released when the call ends, whichever it is then
    (``continue_as_stream`` swaps a heavy slot for a stream's)."""

    __slots__ = ("admission", "permit", "tenant")

    def __init__(self, admission: Admission | None, tenant: str, permit: Permit) -> None:
        self.admission, self.tenant, self.permit = admission, tenant, permit


_call_slot: contextvars.ContextVar[CallSlot | None] = contextvars.ContextVar("call_slot", default=None)
# The principal CallPolicy verified for a call before its request was read (to ask the call's gate
# whether it is refused at once), with the authorization values it came from: the call wrapper
# takes it instead of verifying the same token twice. Per call: each call runs in its own task.
_verified: contextvars.ContextVar[tuple[tuple[str, ...], auth.Principal] | None] = contextvars.ContextVar(
    "verified_principal", default=None)


async def continue_as_stream() -> None:
    """For a streaming call declared heavy whose heavy part is done and whose rest only hands
    stored bytes on (DownloadExport, once it found the export): its heavy slot is swapped for a
    stream slot (``AOS_DOWNLOADS_PER_TENANT`` of a tenant at once, none waiting: else
    RESOURCE_EXHAUSTED TENANT_HEAVY_LIMIT with RetryInfo), and its further transactions run on
    the light pool — so a slow client holds neither a heavy slot nor a heavy connection for as
    long as it takes to read. Raises Overloaded (the call then fails before its first message)."""
    heavy_call.set(False)
    slot = _call_slot.get()
    if slot is None or slot.admission is None or slot.admission.streams is None:
        return
    stream = await slot.admission.streams.acquire(slot.tenant, call_deadline.get())
    slot.permit.release()
    slot.permit = stream


class CallPolicy(grpc.aio.ServerInterceptor):
    """Wraps every contract RPC: authenticate, authorise, admit (aos_runtime.admission),
    bound, log, map errors."""

    def __init__(self, verifier: auth.TokenVerifier, scopes: dict[str, str], *,
                 admission: Admission | None = None, heavy: frozenset[str] = frozenset(), service: str = "",
                 access: AccessRecorder | None = None, bound_bytes: frozenset[str] = frozenset()) -> None:
        self._service = service  # the metrics' label
        self._bound_bytes = bound_bytes
        self._verifier = verifier
        self._scopes = scopes
        self._admission = admission
        self._heavy = heavy
        self._access = access
        # The service's heavy workers warming (ServiceServer.start): a heavy call waits for them
        # before its turn in the heavy gate (``_admit``); None or done: nothing to wait for.
        self.heavy_ready: asyncio.Future[None] | None = None
        # method → (the handler wrapped, its wrapper): built on a method's first call, not on
        # every call (issue #22); a handler the server hands over anew is wrapped anew.
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        if self._admission is not None:
            started = time.monotonic()
            heavy = method in self._heavy
            refusal = self._admission.shed(heavy, method) or self._refused_now(details, handler, method, heavy)
            if refusal is not None:
                return self._shed(handler, method, refusal, started)
        kept = self._wrapped.get(method)
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler, method: str):
        scope = self._scopes.get(method)
        if scope is None:  # registered but not in the contract: refuse rather than guess
            scope = "__undeclared__"
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, scope),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, method, scope),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._client_stream(handler.stream_unary, method, scope),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        # A bidirectional stream is in no contract: refused rather than served unchecked.
        async def refused(requests, context):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method}: bidirectional streams are not served")
            yield  # pragma: no cover - abort raised
        return grpc.stream_stream_rpc_method_handler(refused, request_deserializer=handler.request_deserializer,
                                                     response_serializer=handler.response_serializer)

    def _refused_now(self, details, handler, method: str, heavy: bool) -> Overloaded | None:
        """The refusal the call's gate would answer at once (``FairGate.refusal_now``: its tenant's
        heavy queue full, its wait or predicted end too long), decided here, before the call's
        request is read — where the call wrapper would decide it only after the request came in and
        was parsed (issue #19: refusals in < 10 ms as the caller sees them). Needs the tenant, so the
        token is verified here (the wrapper then takes that principal, ``_verified``), and only when
        the gate could refuse anyone now. A call whose token or scope fails is left to the wrapper
        (UNAUTHENTICATED, PERMISSION_DENIED before any refusal for load, as before); a client
        stream is admitted when it ends, as before."""
        if not (handler.unary_unary or handler.unary_stream):
            return None
        gate = self._admission.gate(heavy) if self._admission is not None else None
        if gate is None or not gate.may_refuse():
            return None
        values = tuple(value for key, value in details.invocation_metadata or () if key == "authorization")
        try:
            principal = self._verifier.verify(auth.single_authorization(values))
        except auth.AuthError:
            return None
        _verified.set((values, principal))
        scope = self._scopes.get(method)
        allowed = auth.SCOPE_ACTOR_TYPES.get(scope or "")
        if scope not in principal.scopes or (allowed is not None and principal.actor_type not in allowed):
            return None
        refusal = gate.refusal_now(principal.tenant_id, method)
        if refusal is not None:
            auth.current_principal.set(principal)  # the call log names the tenant, as the wrapper's refusal does
        return refusal

    def _shed(self, handler, method: str, refusal: Overloaded, started: float):
        """A handler that answers the refusal at once (Admission.shed, or the gate's refusal decided
        before the request is read: ``_refused_now``): a shed call before its token is checked, so an
        unauthenticated call is refused the same; one line in the call log. ``started``: when the
        policy first looked at the call (the refusal is timed from it)."""
        async def refuse(context, requests: AsyncIterator[Any] | None = None) -> None:
            if method in self._heavy:
                reason = "TENANT_HEAVY_LIMIT" if refusal.tenant_limit else "SERVER_OVERLOADED"
                metrics.heavy_refused.labels(service=self._service, reason=reason).inc()
            metrics.admission_refused.labels(service=self._service, gate=refusal.gate, cause=refusal.cause).inc()
            await self._fail(context, method, refusal, started, requests=requests)

        # The request is never read, nor parsed: gRPC's asyncio server receives a unary call's
        # message before it runs the handler — one more round trip through its completion queue and
        # a turn of the event loop, behind every other call's work on a busy loop — but hands a
        # client-streaming handler its messages only as it reads them. So the refusal of a unary
        # (server-streaming) call is served as a client-streaming (bidirectional) one that reads
        # nothing: the wire is the same, and the status goes out as soon as the policy decided it.
        # The metrics keep the method's own kind (metrics.RPC_KIND).
        if handler.unary_unary or handler.stream_unary:
            async def unread(requests, context):
                # A unary call's one message comes with its end: nothing to wait for. A client
                # stream's client may still be writing: read first (``drain``).
                await refuse(context, requests if handler.stream_unary else None)
            setattr(unread, metrics.RPC_KIND, "unary" if handler.unary_unary else "client_stream")
            return grpc.stream_unary_rpc_method_handler(unread, request_deserializer=None,
                                                        response_serializer=handler.response_serializer)
        if handler.unary_stream:
            async def unread_stream(requests, context):
                await refuse(context)
                yield  # pragma: no cover - abort_with_status raised
            setattr(unread_stream, metrics.RPC_KIND, "server_stream")
            return grpc.stream_stream_rpc_method_handler(unread_stream, request_deserializer=None,
                                                         response_serializer=handler.response_serializer)
        return handler

    async def _admit(self, method: str) -> CallSlot:
        """Waits for the call's turn (light or heavy gate); raises Overloaded to refuse it.
        A heavy call admitted through the heavy gate runs its transactions on the heavy pool."""
        if self._admission is None:
            return CallSlot(None, "", OPEN)
        heavy = method in self._heavy and self._admission.heavy is not None
        principal = auth.current_principal.get()
        tenant = principal.tenant_id if principal else ""
        if heavy and self.heavy_ready is not None and not self.heavy_ready.done():
            # The service has just started and its heavy workers are not warm yet: the call waits
            # for them before it takes a heavy slot, so that the gate's service times (its wait
            # estimates, its refusals) never hold their start-up. Its own deadline still bounds it.
            await asyncio.wait([self.heavy_ready])
        try:
            slot = CallSlot(self._admission, tenant, await self._admission.gate(heavy).acquire(
                tenant, call_deadline.get(), method))
        except Overloaded as refused:
            if heavy:
                reason = "TENANT_HEAVY_LIMIT" if refused.tenant_limit else "SERVER_OVERLOADED"
                metrics.heavy_refused.labels(service=self._service, reason=reason).inc()
            metrics.admission_refused.labels(service=self._service, gate=refused.gate, cause=refused.cause).inc()
            raise
        heavy_call.set(heavy)
        _call_slot.set(slot)
        return slot

    def _hold_bytes(self, method: str, request: Any) -> ByteHold:
        """The request's bytes, held while it is processed when its service bounds them (the
        ingest writes); raises Overloaded (INGEST_BYTES_LIMIT) when a bound is full."""
        if method not in self._bound_bytes or self._admission is None or self._admission.inflight_bytes is None:
            return NO_BYTES
        principal = auth.current_principal.get()
        return self._admission.inflight_bytes.acquire(principal.tenant_id if principal else "", request.ByteSize())

    def _enter(self, context, method: str, scope: str) -> tuple[str, float]:
        """Per-call context: request id, deadline, principal. Raises ApiError to refuse the call."""
        metadata = tuple(context.invocation_metadata() or ())
        meta = {k: v for k, v in metadata}
        rid = meta.get("x-request-id") or uuid.uuid4().hex
        request_id.set(rid)
        remaining = context.time_remaining()
        call_deadline.set(time.monotonic() + remaining if remaining is not None else None)
        # Every entry, not the dict's last one: two credentials are refused, never one picked.
        values = tuple(value for key, value in metadata if key == "authorization")
        early = _verified.get()
        if early is not None and early[0] == values:  # verified a moment ago, before the request was read
            principal = early[1]
        else:
            try:
                principal = self._verifier.verify(auth.single_authorization(values))
            except auth.AuthError as exc:
                raise errors.unauthenticated(exc.reason, str(exc)) from None
        # Known before the scope check: a refusal of a verified caller is recorded in its tenant
        # (access evidence) and logged with it. Handlers only run once every check below passed.
        auth.current_principal.set(principal)
        if scope not in principal.scopes:
            raise errors.permission_denied(scope)
        allowed = auth.SCOPE_ACTOR_TYPES.get(scope)
        if allowed is not None and principal.actor_type not in allowed:
            raise errors.actor_type_refused(scope, principal.actor_type, allowed)
        wanted = meta.get(MIN_WAL_POSITION_HEADER)
        if wanted is not None and not _WAL_POSITION.fullmatch(wanted):
            raise errors.invalid_argument(MIN_WAL_POSITION_HEADER, "must be a WAL position as PostgreSQL writes it "
                                          f"(the {WAL_POSITION_HEADER} a write answered with), e.g. 0/16B3748")
        min_wal_position.set(wanted)
        return rid, time.monotonic()

    def _accessed(self, context, method: str, request: Any, *, refused: errors.ApiError | None = None) -> None:
        """Notes the call's access to evidence when its RPC declares one (aos_runtime.access):
        granted, or refused for a reason that is an access decision (scope, not found)."""
        if self._access is None or self._access.rule(method) is None:
            return
        principal = auth.current_principal.get()
        if principal is None:  # no verified caller: no tenant to record it in
            return
        if refused is not None and refused.code not in ACCESS_DECISIONS:
            return
        self._access.record(method, request, principal, granted=refused is None,
                            reason=refused.reason if refused is not None else None, peer=context.peer(),
                            metadata=tuple(context.invocation_metadata() or ()), request_id=request_id.get())

    def _access_room(self, method: str) -> None:
        """Refuses a read of evidence while its access entry could not be kept: the recorder's
        buffer is full (the database has not taken its entries for a while). Fail closed — no
        evidence is read unrecorded — rather than drop entries."""
        if self._access is not None and self._access.rule(method) is not None and self._access.full:
            principal = auth.current_principal.get()
            raise Overloaded(tenant_limit=False, tenant=principal.tenant_id if principal else "",
                             limit=f"access entries awaiting the ledger (at most {self._access.max_buffered})",
                             retry_after_s=1.0, message="this read's access entry cannot be recorded now: "
                             "the entries of earlier reads are still being written; retry shortly")

    async def _fail(self, context, method: str, exc: BaseException, started: float, request: Any = None, *,
                    record: bool = True, requests: AsyncIterator[Any] | None = None) -> None:
        """Answers the call with the status of ``exc`` (errors.from_exception), logged and recorded;
        a client stream's (``requests``) once what its client still sends is read (``drain``)."""
        remaining = context.time_remaining()
        error = errors.from_exception(exc, deadline_passed=remaining is not None and remaining <= 0)
        if error.code == grpc.StatusCode.INTERNAL:
            log.error("call failed", exc_info=exc, extra={"method": method})
        if record:
            self._accessed(context, method, request, refused=error)
        if isinstance(exc, Overloaded):
            metrics.refusal_time.labels(service=self._service).observe(time.monotonic() - started)
        self._log(method, error.code, started, error.reason)
        if requests is not None:
            await drain(requests)
        rid = request_id.get()
        await context.abort_with_status(error.to_status((("x-request-id", rid),) if rid else ()))

    def _log(self, method: str, code: grpc.StatusCode, started: float, reason: str | None = None) -> None:
        principal = auth.current_principal.get()
        log.info("call", extra={"method": method, "code": code.name,
                                "ms": round((time.monotonic() - started) * 1000, 2),
                                "tenant_id": principal.tenant_id if principal else None,
                                "reason": reason})

    def _unary(self, behavior, method: str, scope: str):
        async def wrapped(request, context):
            started = time.monotonic()
            slot = CallSlot(None, "", OPEN)
            held = NO_BYTES
            try:
                rid, started = self._enter(context, method, scope)
                context.set_trailing_metadata((("x-request-id", rid),))
                held = self._hold_bytes(method, request)
                slot = await self._admit(method)
                self._access_room(method)
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except BaseException as exc:  # noqa: BLE001 - every failure gets a status
                await self._fail(context, method, exc, started, request)
                return None
            finally:
                slot.permit.release()
                held.release()
            self._accessed(context, method, request)
            self._log(method, grpc.StatusCode.OK, started)
            return result
        return wrapped

    def _streaming(self, behavior, method: str, scope: str):
        async def wrapped(request, context):
            started = time.monotonic()
            slot = CallSlot(None, "", OPEN)
            first = True
            try:
                rid, started = self._enter(context, method, scope)
                context.set_trailing_metadata((("x-request-id", rid),))
                slot = await self._admit(method)
                self._access_room(method)
                async for message in behavior(request, context):
                    if first:  # evidence leaves with the first message: that is the access
                        self._accessed(context, method, request)
                        first = False
                    yield message
            except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
                raise
            except BaseException as exc:  # noqa: BLE001
                # A failure after the first message: its access is recorded already (granted).
                await self._fail(context, method, exc, started, request, record=first)
                return
            finally:
                slot.permit.release()  # the slot it holds at the end (continue_as_stream may swap it)
            self._log(method, grpc.StatusCode.OK, started)
        return wrapped


    def _client_stream(self, behavior, method: str, scope: str):
        """A client stream (IngestService.RecordRunStream): checked as a unary call when it
        opens (token, scope); each chunk's bytes held as it arrives (AOS_INGEST_INFLIGHT_BYTES),
        all released when the call ends; admitted through the light gate only once the client
        has ended its stream — the slot is held for the write, not while a slow client sends.
        The handler reads the chunks to their end before it writes."""
        async def wrapped(requests, context):
            started = time.monotonic()
            slot = CallSlot(None, "", OPEN)
            holds: list[ByteHold] = []

            async def chunks():
                nonlocal slot
                async for chunk in requests:
                    holds.append(self._hold_bytes(method, chunk))
                    yield chunk
                slot = await self._admit(method)

            try:
                rid, started = self._enter(context, method, scope)
                context.set_trailing_metadata((("x-request-id", rid),))
                self._access_room(method)
                result = await behavior(chunks(), context)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except BaseException as exc:  # noqa: BLE001 - every failure gets a status
                # Refused on its headers (token, scope) or part-way (a bound, a bad chunk): what
                # the client still writes is read first, else it may see INTERNAL (``drain``).
                await self._fail(context, method, exc, started, requests=requests)
                return None
            finally:
                slot.permit.release()
                for held in holds:
                    held.release()
            self._log(method, grpc.StatusCode.OK, started)
            return result
        return wrapped


@dataclass(frozen=True)
class PendingCalls:
    """How many calls gRPC's core holds for the process before the process has taken them
    (AOS_MAX_PENDING_CALLS, AOS_PENDING_CALLS_EARLY_DROP, AOS_MAX_UNREQUESTED_S).

    Why this is the first line of shedding: grpc.aio takes one call per registered method from
    the core per turn of the event loop (its ``_server_main_loop`` keeps one request per method
    outstanding). While the loop is busy, new calls wait in the core's pending list, unseen by
    any Python — CallPolicy, the gates and AOS_SHED_LAG_S only meet a call once it leaves that
    list. Without a bound it grows with the offered load (the 2x soak: accepted p99 10.9 s,
    refusals p50 1.4 s, #19). The core bounds it itself (src/core/server/server.cc, the
    RealRequestMatcher's pending list and its RandomEarlyDetection ``pending_backlog_protector_``):
    from ``early_drop`` pending calls of one method a new one is refused with a probability
    rising to 1 at ``max_calls``; a call older than ``max_unrequested_s`` is dropped when the
    process next takes a call. Those refusals never reach Python, so they cost the process
    nothing and come back while its loop is busy.

    What the caller gets (measured on grpcio 1.85.1, tests/reliability/test_fairness.py): status
    CANCELLED, details "CANCELLED", no trailers — not RESOURCE_EXHAUSTED, no RetryInfo (the core
    cannot attach one; its promise-based path would say RESOURCE_EXHAUSTED "Too many pending
    requests for this server", the filter-stack path grpcio uses cancels the stream). The call
    did nothing: it may be retried. The gateway answers it 429 with Retry-After (gateway/app.py).
    ``max_calls`` 0: gRPC's defaults (1000 / 3000 pending, 30 s). The defaults, 8 / 32 per method, are
    between what refuses fast under overload and what lets a burst of one method's calls that
    arrives within one turn of a healthy loop through: 4 / 16 refused parts of a 40-call burst and
    risked a 6-call one; 16 / 64 let the core's queue grow until the 1 s age bound, so refusals
    came back after ~1 s (BENCHMARKS.md compares 4 / 16, 8 / 32 and 16 / 64)."""
    max_calls: int = 32
    early_drop: int = 8
    max_unrequested_s: int = 1

    def options(self) -> list[tuple[str, Any]]:
        if self.max_calls <= 0:
            return []
        return [("grpc.server.max_pending_requests", min(self.early_drop, self.max_calls)),
                ("grpc.server.max_pending_requests_hard_limit", self.max_calls),
                ("grpc.server_max_unrequested_time_in_server", max(1, self.max_unrequested_s))]


def server_options(max_message_bytes: int, *, reuse_port: bool = False,
                   pending: PendingCalls | None = None) -> list[tuple[str, Any]]:
    """Channel arguments of every service's server. ``reuse_port``: one of several worker
    processes sharing the port (AOS_WORKERS > 1); otherwise a second server on a port in
    use fails to start instead of silently sharing its connections. ``pending``: the bound
    on calls gRPC's core holds before the process takes them (PendingCalls; None: gRPC's)."""
    return [
        *(pending.options() if pending is not None else []),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Keepalive: find dead peers behind NATs and idle load balancers.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]


# How long no light call must have run before the heap trim closes the light pool's idle
# connections too (heap_trimmer): a trim after an export in a busy process leaves them.
LIGHT_QUIET_S = 2.0


def heap_trimmer(name: str, admission: Admission | None, db: Database | None = None) -> heap.Trimmer | None:
    """The heap trim after heavy work (aos_runtime.heap): when the heavy gate and the downloads
    are both empty, ``db``'s idle connections closed first. None with AOS_HEAP_TRIM=off, no
    heavy gate, or no glibc."""
    if admission is None or admission.heavy is None or not admission.trim_heap:
        return None
    gates = [gate for gate in (admission.heavy, admission.streams) if gate is not None]
    light = admission.light

    def release() -> bool:
        # The heavy pool's idle connections always; the light pool's only once no light call
        # has run for LIGHT_QUIET_S (a new connection costs its next call the login,
        # aos_runtime.db) — else the trimmer tries once more that much later; under steady
        # light traffic its connections stay, buffers and all.
        if db is None:
            return True
        quiet = light.quiet_for(LIGHT_QUIET_S)
        db.release_idle_connections(light=quiet)
        return quiet

    trimmer = heap.Trimmer(name, lambda: all(gate.idle for gate in gates), release=release,
                           follow_up_s=LIGHT_QUIET_S + heap.TRIM_DELAY_S)
    if not trimmer.available:
        return None
    for gate in gates:
        gate.on_idle = trimmer.soon
    return trimmer


class ServiceServer:
    """One service's gRPC server over one database pool."""

    def __init__(self, name: str, servicers: list[Servicer], db: Database, verifier: auth.TokenVerifier, *,
                 host: str = "127.0.0.1", port: int = 0, max_message_bytes: int = 8 * 1024 * 1024,
                 grace_period_s: float = 10, health_probe_interval_s: float = 2, reuse_port: bool = False,
                 admission: Admission | None = None, access: AccessRecorder | None = None,
                 pending: PendingCalls | None = None) -> None:
        self.name = name
        self.access = access  # access evidence: started with the server, drained after its calls
        self.db = db
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.grace_period_s = grace_period_s
        self.health_probe_interval_s = health_probe_interval_s
        self.service_names = [s.descriptor.full_name for s in servicers]
        self.admission = admission  # its gates' state: what runs and waits now
        self.heavy_methods = heavy_methods([s.descriptor for s in servicers])
        self.health = health_aio.HealthServicer()
        for engine in db.engines():
            tracing.instrument_engine(engine)
        metrics.watch_database(db)
        if admission is not None:
            admission.lag.observe = metrics.loop_lag.labels(service=name).observe
        if admission is not None and admission.heavy is not None:
            metrics.heavy_queue_depth.labels(service=name).set_function(admission.heavy.waiting_total)
        self.trimmer = heap_trimmer(name, admission, db)
        if admission is not None:
            light = admission.light
            metrics.admission_inflight_limit.labels(service=name).set_function(lambda: light.concurrency)
            for gate in (admission.light, admission.heavy):
                if gate is not None:
                    gate.on_estimate = metrics.admission_service_observer(name, gate.limits.name)
        scopes = required_scopes([s.descriptor for s in servicers],
                                 {s.descriptor.full_name: s.scope for s in servicers if s.scope})
        self.policy = CallPolicy(verifier, scopes,
                                 admission=admission, heavy=self.heavy_methods, service=name, access=access,
                                 bound_bytes=frozenset(f"/{s.descriptor.full_name}/{m.name}" for s in servicers
                                                       if s.bound_bytes for m in s.descriptor.methods))
        self.server = grpc.aio.server(
            # Metrics outermost (every call counts, refused ones too), then the trace span, then the policy.
            interceptors=[metrics.RpcMetrics(), *tracing.server_interceptors(), self.policy],
            options=server_options(max_message_bytes, reuse_port=reuse_port, pending=pending))
        for servicer in servicers:
            servicer.add_to_server(servicer.implementation, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            self.service_names + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                  reflection.SERVICE_NAME], self.server)
        self._probe: asyncio.Task | None = None
        self._serving: bool | None = None
        self._background = [s.background for s in servicers if s.background is not None]
        self._tasks: list[asyncio.Task] = []
        self._warming: asyncio.Future[None] | None = None

    async def start(self) -> int:
        self.port = self.server.add_insecure_port(f"{self.host}:{self.requested_port}")
        if not self.port:
            raise OSError(f"cannot listen on {self.host}:{self.requested_port}")
        # The heavy worker processes (AOS_HEAVY_PROCESSES) of a service that serves heavy RPCs
        # start now and warm (their imports — the fork server's preload, a second or more in a new
        # process on a busy machine —, their connection open and checked) in the background: the
        # server takes its light calls meanwhile. A heavy call waits for them before its turn in the
        # heavy gate (CallPolicy.heavy_ready), so neither the gate's service times nor a job's time
        # (HeavyProcesses.durations) hold their start-up.
        if self.heavy_methods and self.db.offload is not None:
            self._warming = asyncio.ensure_future(self.db.offload.start())
            self._warming.add_done_callback(self._warmed)
            self.policy.heavy_ready = self._warming
        # At start there is no earlier answer to fall back on: give the first probe
        # longer than the periodic ones.
        await self._set_serving(await self._database_answers(timeout=max(5.0, 2 * self.health_probe_interval_s)))
        await self.server.start()
        if self.admission is not None:
            self.admission.lag.start()
        self._probe = asyncio.create_task(self._probe_database(), name=f"{self.name}-health-probe")
        if self.access is not None:
            self.access.start()
        self._tasks = [asyncio.create_task(work(), name=f"{self.name}-background-{i}")
                       for i, work in enumerate(self._background)]
        log.info("listening", extra={"service": self.name, "address": f"{self.host}:{self.port}",
                                     "grpc_services": self.service_names})
        return self.port

    def _warmed(self, warming: asyncio.Future[None]) -> None:
        if not warming.cancelled() and warming.exception() is not None:
            # A heavy call starts them again (HeavyProcesses._ready) and fails as they fail.
            log.error("heavy worker processes did not start", extra={
                "service": self.name, "error": f"{type(warming.exception()).__name__}: {warming.exception()}"})

    async def _database_answers(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - wait_for's bound
        try:
            await asyncio.wait_for(self.db.ping(), timeout=timeout or max(1.0, self.health_probe_interval_s))
            return True
        except Exception:  # noqa: BLE001 - any failure means not serving
            return False

    async def _set_serving(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        metrics.serving.set(self, self.name, serving)
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.service_names]:
            await self.health.set(name, status)
        log.log(logging.INFO if serving else logging.WARNING, "health",
                extra={"service": self.name, "status": health_pb2.HealthCheckResponse.ServingStatus.Name(status)})

    async def _probe_database(self) -> None:
        # NOT_SERVING after two failed probes in a row: one probe that ran slow on a
        # saturated machine must not pull a working service out of rotation; recovery
        # is reported on the first probe that answers.
        failures = 0
        while True:
            await asyncio.sleep(self.health_probe_interval_s)
            if await self._database_answers():
                failures = 0
                await self._set_serving(True)
            else:
                failures += 1
                if failures >= 2:
                    await self._set_serving(False)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: report NOT_SERVING, refuse new calls, let in-flight ones finish within the grace period."""
        await self.health.enter_graceful_shutdown()
        metrics.serving.set(self, self.name, False)
        if self._probe:
            self._probe.cancel()
        for task in self._tasks:
            task.cancel()
        if self.admission is not None:
            self.admission.lag.stop()
        await self.server.stop(self.grace_period_s if grace is None else grace)
        if self.access is not None:
            # After the calls: every access they made is buffered by now; written before the pool closes.
            await self.access.drain()
            if self.access.db is not self.db:
                await self.access.db.close()
        metrics.forget_database(self.db)
        metrics.serving.forget(self)
        # Closing the pool stops the heavy workers, those still warming too (HeavyProcesses.close).
        await self.db.close()
        if self._warming is not None:
            await asyncio.wait([self._warming])

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


async def run_until_signalled(server: ServiceServer) -> None:
    """Serve until SIGTERM or SIGINT, then drain."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    log.info("draining", extra={"service": server.name, "grace_s": server.grace_period_s})
    await server.stop()
