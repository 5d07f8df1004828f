"""A small Python client of the Ingest API: how producers outside the suite write evidence.

    from aos_recording.client import IngestClient, audit_event
    with IngestClient("ingest.example:50054", token=TOKEN) as ingest:
        results = ingest.append_audit_events([audit_event(...), ...])

What it does for the producer, and nothing more:

- **token auth**: the bearer token (scope ``evidence.write``, actor type AGENT or SYSTEM) goes
  with every call; the tenant and the actor are the token's (the server takes them from it,
  never from the payload). No database login: a producer needs no ``aos_producer`` role.
- **batching**: any number of audit events or system records, sent in batches of at most
  ``batch_size`` items (500 by default; the server takes 1,000) and ``MAX_BATCH_BYTES`` (under
  the server's 4 MiB), results answered in the producer's order.
- **idempotent ids**: an item without its id gets a random one *before* the first attempt,
  so each retry carries the same id and the server answers ALREADY_PRESENT instead of
  appending it twice (``audit_event()`` likewise fixes ``occurred_at`` when the event is made).
- **streamed runs**: ``record_run_stream`` sends a run's fields, then its steps as a producer
  makes them (RecordRunStream); the server records the run when the stream ends.
- **retries**: RESOURCE_EXHAUSTED (the server is full: its in-flight bytes or calls, an
  exhausted pool), UNAVAILABLE and DEADLINE_EXCEEDED are retried, waiting the delay the
  server's ``google.rpc.RetryInfo`` names, else an exponential backoff with jitter, at most
  ``max_attempts`` times in all; any other error is raised at once (bad input is not retried).
  Retrying a batch whose answer was lost is safe for the same reason as above.

The suite's own tools (scenarios, bulk loads) keep the direct writers (aos_recording.writers).
"""
from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aos.evidence.v1 import evidence_pb2
from aos.ingest.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc

DEFAULT_BATCH = 500
MAX_BATCH_ITEMS = 1000                 # the server's limit per request
MAX_BATCH_BYTES = 3 * 1024 * 1024      # under the server's 4 MiB per request, with room for framing
DEFAULT_CHUNK_STEPS = 100              # steps per RecordRunStream chunk
MAX_CHUNK_BYTES = 1024 * 1024          # bytes per chunk (the server bounds the whole run to 4 MiB)
RETRIED = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE,
                     grpc.StatusCode.DEADLINE_EXCEEDED})
Item = TypeVar("Item", pb.AuditEvent, pb.SystemRecordInput)
WithId = TypeVar("WithId", pb.AuditEvent, pb.SystemRecordInput, pb.RunInput)


def audit_event(*, event_type: evidence_pb2.AuditEventType | str,
                entity_type: evidence_pb2.AuditEntityType | str, entity_id: str, event_id: str = "",
                occurred_at: datetime | None = None, action_reason: str | None = None,
                correlation_id: str | None = None, before_state: dict[str, Any] | None = None,
                after_state: dict[str, Any] | None = None) -> pb.AuditEvent:
    """An AuditEvent (enums as aos.evidence.v1 values or their names); id and time filled in when left out."""
    event = pb.AuditEvent(event_id=event_id or new_id(), event_type=event_type, entity_type=entity_type,
                          entity_id=entity_id)
    event.occurred_at.FromDatetime(occurred_at or datetime.now(timezone.utc))
    if action_reason is not None:
        event.action_reason = action_reason
    if correlation_id is not None:
        event.correlation_id = correlation_id
    for name, state in (("before_state", before_state), ("after_state", after_state)):
        if state is not None:
            getattr(event, name).CopyFrom(_struct(state))
    return event


def new_id() -> str:
    """A producer id for an item: unique, and kept for every retry of it."""
    return f"evt-{uuid.uuid4().hex}"


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


class IngestError(Exception):
    """A call that failed for good: not retryable, or still failing after ``max_attempts``."""

    def __init__(self, code: grpc.StatusCode, message: str, attempts: int) -> None:
        super().__init__(f"{code.name}: {message} (after {attempts} attempt(s))")
        self.code = code
        self.attempts = attempts


class IngestClient:
    """The Ingest API over one gRPC channel (see the module's text). ``target``: host:port;
    ``credentials``: TLS channel credentials (None: a plaintext channel, for a local suite)."""

    def __init__(self, target: str, *, token: str, credentials: grpc.ChannelCredentials | None = None,
                 batch_size: int = DEFAULT_BATCH, max_attempts: int = 6, timeout_s: float = 30.0,
                 base_backoff_s: float = 0.1, max_backoff_s: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not 1 <= batch_size <= MAX_BATCH_ITEMS:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH_ITEMS}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._channel = (grpc.secure_channel(target, credentials) if credentials is not None
                         else grpc.insecure_channel(target))
        self._stub = pb_grpc.IngestServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self.retries = 0          # calls retried since the start (for the producer's own metrics)

    def __enter__(self) -> IngestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # --- the API ---------------------------------------------------------------------------
    def append_audit_events(self, events: Iterable[pb.AuditEvent]) -> list[pb.AuditEventResult]:
        """Appends the events in batches; one result per event, in order (CREATED,
        ALREADY_PRESENT, CONFLICT or INVALID with its violations: check ``status``)."""
        results: list[pb.AuditEventResult] = []
        for batch in self._batches([_with_id(e, "event_id") for e in events]):
            reply = self._call(self._stub.AppendAuditEvents, pb.AppendAuditEventsRequest(events=batch))
            results.extend(reply.results)
        return results

    def append_system_records(self, records: Iterable[pb.SystemRecordInput]) -> list[pb.SystemRecordResult]:
        """Writes the system records in batches; one result per record, in order."""
        results: list[pb.SystemRecordResult] = []
        for batch in self._batches([_with_id(r, "record_id") for r in records]):
            reply = self._call(self._stub.AppendSystemRecords, pb.AppendSystemRecordsRequest(records=batch))
            results.extend(reply.results)
        return results

    def record_run(self, run: pb.RunInput) -> pb.RecordRunResponse:
        """Records one finished run with its steps (ALREADY_EXISTS, raised, when its id holds another run)."""
        run = _with_id(run, "run_id")
        return self._call(self._stub.RecordRun, pb.RecordRunRequest(run=run))

    def record_run_stream(self, run: pb.RunInput, steps: Iterable[pb.StepInput] = (), *,
                          chunk_steps: int = DEFAULT_CHUNK_STEPS) -> pb.RecordRunStreamResponse:
        """Records one finished run sent as a stream (RecordRunStream): ``run``'s fields (and any
        steps it holds) first, then ``steps`` as they come — a generator may produce them while
        they are sent — in chunks of at most ``chunk_steps`` steps and ``MAX_CHUNK_BYTES``. The
        server records the run when the stream ends, exactly as ``record_run`` would (same hashes,
        same answer); a stream broken off records nothing. A retry sends the whole run again (the
        chunks already produced are kept for it; the server holds a run to 4 MiB, so do they)."""
        if not 1 <= chunk_steps <= MAX_BATCH_ITEMS:
            raise ValueError(f"chunk_steps must be 1 to {MAX_BATCH_ITEMS}")
        run = _with_id(run, "run_id")
        source = _chunks(run, iter(steps), chunk_steps)
        kept: list[pb.RecordRunStreamRequest] = []

        def chunks() -> Iterator[pb.RecordRunStreamRequest]:
            yield from list(kept)
            for chunk in source:
                kept.append(chunk)
                yield chunk
        return self._call(self._stub.RecordRunStream, None, stream=chunks)

    # --- batching and retries ---------------------------------------------------------------
    def _batches(self, items: Sequence[Item]) -> Iterable[list[Item]]:
        batch: list[Item] = []
        size = 0
        for item in items:
            item_size = item.ByteSize() + 8  # the repeated field's tag and length
            if batch and (len(batch) == self.batch_size or size + item_size > MAX_BATCH_BYTES):
                yield batch
                batch, size = [], 0
            batch.append(item)
            size += item_size
        if batch:
            yield batch

    def _call(self, method: Any, request: Any, *, stream: Callable[[], Iterator[Any]] | None = None) -> Any:
        """``method`` called with ``request`` (or, for a client stream, a new iterator from
        ``stream`` on each attempt), retried as the module's text says."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return method(stream() if stream is not None else request, metadata=self._metadata,
                              timeout=self.timeout_s)
            except grpc.RpcError as error:
                code = error.code()
                if code not in RETRIED or attempt == self.max_attempts:
                    raise IngestError(code, error.details() or "", attempt) from error
                self.retries += 1
                self._sleep(self.delay_s(error, attempt))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def delay_s(self, error: grpc.RpcError, attempt: int) -> float:
        """The server's RetryInfo delay when it names one, else exponential backoff with jitter."""
        told = retry_delay_s(error)
        if told is not None:
            return min(told, self.max_backoff_s)
        return min(self.base_backoff_s * 2 ** (attempt - 1), self.max_backoff_s) * random.uniform(0.8, 1.2)


def retry_delay_s(error: grpc.RpcError) -> float | None:
    """The delay of the google.rpc.RetryInfo in the error's status details, if any."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # details that do not match the status: none to trust
        return None
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToNanoseconds() / 1e9
    return None


def _chunks(run: pb.RunInput, steps: Iterator[pb.StepInput], chunk_steps: int) -> Iterator[pb.RecordRunStreamRequest]:
    """The run's chunks: its fields (with the steps it holds) first, then ``steps`` in chunks,
    the last marked ``last`` (a chunk is sent once the next step is known, so the last is known)."""
    pending = pb.RecordRunStreamRequest(run=run)
    chunk: list[pb.StepInput] = []
    size = 0
    for step in steps:
        step_size = step.ByteSize() + 8  # the repeated field's tag and length
        if chunk and (len(chunk) == chunk_steps or size + step_size > MAX_CHUNK_BYTES):
            yield pending
            pending, chunk, size = pb.RecordRunStreamRequest(steps=chunk), [], 0
        chunk.append(step)
        size += step_size
    if chunk:
        yield pending
        pending = pb.RecordRunStreamRequest(steps=chunk)
    pending.last = True
    yield pending


def _with_id(item: WithId, field: str) -> WithId:
    """The item with an id (a copy when one is filled in), so that its retries carry the same one."""
    if getattr(item, field):
        return item
    copy = type(item)()
    copy.CopyFrom(item)
    setattr(copy, field, new_id())
    return copy
