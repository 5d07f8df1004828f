"""Domain failures, raised where they happen and answered at the edge.

The database layer and the services raise these; the server's call wrapper turns each
into its gRPC status once, in ``aos_runtime.errors.from_exception``. This module imports
no grpc, so a layer below the edge (the database module, a store, the recording tools)
can say what went wrong without knowing how a caller is answered.
"""
from __future__ import annotations

import enum


class Fault(Exception):
    """A failure with a specific answer for the caller (never INTERNAL)."""


class Resource(enum.Enum):
    """What a NOT_FOUND is about: the member name gives the reason (``TRACE`` →
    ``TRACE_NOT_FOUND``), the value the phrase the message reads with."""
    RUN = "run"
    LLM_RUN = "llm run"
    TRACE = "trace of run"
    TRACE_STEP = "step of the trace of run"
    SYSTEM_BASELINE = "system baseline of run"
    AUDIT_ENTRY = "audit entry"
    EXPORT = "export"
    INCIDENT = "incident"
    CHECKPOINT = "kept checkpoint of tree size"
    LEGAL_HOLD = "legal hold"

    @property
    def reason(self) -> str:
        return f"{self.name}_NOT_FOUND"


class RecordNotFound(Fault):
    """The tenant has no ``resource`` with this id (another tenant's record is missing too:
    existence is never revealed)."""

    def __init__(self, resource: Resource, resource_id: str) -> None:
        super().__init__(f"{resource.value} {resource_id!r} not found")
        self.resource = resource
        self.resource_id = resource_id


class DeadlinePassed(Fault):
    """The call's deadline passed while it waited (for a database connection, or for its turn
    to start: an already expired call is not an overload)."""

    def __init__(self, before: str = "a database connection was free") -> None:
        super().__init__(f"the call's deadline passed before {before}")


class PoolExhausted(Fault):
    """Every database connection stayed busy for the whole pool timeout. ``retry_after_s``:
    when one is likely free again, from the pool's recent transaction times."""

    def __init__(self, retry_after_s: float | None = None) -> None:
        super().__init__("every database connection stayed busy; retry with backoff")
        self.retry_after_s = retry_after_s


class Overloaded(Fault):
    """The call could not start within its queue budget and was not started (aos_runtime.admission).

    ``tenant_limit``: the tenant's own calls fill its share (else the process's limit);
    ``limit``: which limit, in words, for google.rpc.QuotaFailure; ``retry_after_s``:
    when a slot is likely free, estimated from recent service times."""

    def __init__(self, *, tenant_limit: bool, tenant: str, limit: str, retry_after_s: float, message: str,
                 ingest_bytes: bool = False, gate: str = "", cause: str = "") -> None:
        super().__init__(message)
        # Which gate refused and why, for the metrics only (aos_admission_refused_total): one of
        # admission.CAUSES, "" for refusals not made by a gate (ingest bytes).
        self.gate = gate
        self.cause = cause
        self.ingest_bytes = ingest_bytes  # the ingest bytes in flight are full (INGEST_BYTES_LIMIT), not a gate
        self.tenant_limit = tenant_limit
        self.tenant = tenant
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.message = message


class ReplicaBehind(Fault):
    """The session's database had not replayed the WAL up to ``wanted`` in time;
    ``replayed`` is how far it got (None: nothing replayed yet)."""

    def __init__(self, replayed: str | None, wanted: str) -> None:
        super().__init__(f"replayed up to {replayed}, not yet to {wanted}")
        self.replayed = replayed
        self.wanted = wanted


class _Quota(Exception):
    """What a quota refusal tells: ``subject`` and ``description`` the violated quota
    (google.rpc.QuotaFailure); ``retry_after_s`` when waiting frees it (google.rpc.RetryInfo),
    None when only freeing room (or a new limit) will; ``metadata`` for ErrorInfo."""

    def __init__(self, message: str, *, subject: str, description: str, retry_after_s: float | None = None,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.subject = subject
        self.description = description
        self.retry_after_s = retry_after_s
        self.metadata = dict(metadata or {})


class ExportRateLimited(_Quota, Fault):
    """The tenant made as many exports in the last hour as AOS_EXPORT_RATE_PER_HOUR allows."""


class ExportStorageQuota(_Quota, Fault):
    """The tenant's stored export artifacts would pass AOS_EXPORT_STORED_BYTES_PER_TENANT."""


QUOTA_FAULTS = (ExportRateLimited, ExportStorageQuota)


class LogHashesMissing(Fault):
    """A tenant's transparency log lacks stored hashes a proof needs (``missing``: their
    indexes): the tree the database keeps (migration 0013) is damaged."""

    def __init__(self, log: str, missing: list[int]) -> None:
        super().__init__(f"the {log} log lacks stored hashes {missing[:5]}")
        self.log = log
        self.missing = missing


class CheckpointTreeMismatch(Fault):
    """The checkpoint kept (signed) at ``size`` has another root than the stored tree gives
    now: the tree was rewritten under a signed checkpoint. Never answered as a checkpoint."""

    def __init__(self, log: str, size: int) -> None:
        super().__init__(f"the {log} log's checkpoint kept at size {size} has another root than its stored tree")
        self.log = log
        self.size = size


class EvidenceAlreadyRecorded(Fault):
    """A producer's id is already recorded with other content: evidence is never overwritten
    (ALREADY_EXISTS; a retry of the same content is not this, it answers ALREADY_PRESENT)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LegalHoldReleased(Fault):
    """The legal hold was released already (a release is written once)."""

    def __init__(self, hold_id: str) -> None:
        super().__init__(f"legal hold {hold_id!r} is already released")
        self.hold_id = hold_id


class ExportContentErased(Fault):
    """An export's records had payloads erased after it was made (docs/ERASURE.md §5): its
    stored artifact was deleted with them, so there is nothing to download (FAILED_PRECONDITION)."""

    def __init__(self, export_id: str, payloads: int, erasure_ids: tuple[str, ...],
                 bases: tuple[str, ...] = ()) -> None:
        super().__init__(f"export {export_id}: content erased after export ({payloads} payloads)")
        self.export_id = export_id
        self.payloads = payloads
        self.erasure_ids = erasure_ids
        self.bases = bases  # the tombstones' bases (RECORDED, UNTRACKED: payloads is then an upper bound)


class LegalHoldBlocksErasure(Fault):
    """A legal hold covers the data subject an erasure names (docs/ERASURE.md): nothing was
    erased; the refused request is recorded (FAILED_PRECONDITION)."""

    def __init__(self, hold_id: str, request_seq: int) -> None:
        super().__init__(f"legal hold {hold_id} covers this subject: erasure refused")
        self.hold_id = hold_id
        self.request_seq = request_seq
