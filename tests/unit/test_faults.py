"""Domain faults (aos_runtime.faults) are raised below the edge and answered once, by
errors.from_exception, with the code, reason, message and ErrorInfo metadata callers
have always seen for them."""
from __future__ import annotations

import inspect

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from aos_runtime import errors, faults

CASES = [
    (faults.DeadlinePassed(), grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED",
     "the call's deadline passed before a database connection was free", {}),
    (faults.PoolExhausted(), grpc.StatusCode.RESOURCE_EXHAUSTED, "DATABASE_POOL_EXHAUSTED",
     "every database connection stayed busy; retry with backoff", {}),
    (faults.ReplicaBehind("0/3000060", "0/3000148"), grpc.StatusCode.UNAVAILABLE, "REPLICA_BEHIND",
     "this instance's database has replayed the WAL up to 0/3000060, not yet to 0/3000148 (x-aos-min-lsn); retry",
     {"replayed": "0/3000060"}),
    (faults.ReplicaBehind(None, "0/3000148"), grpc.StatusCode.UNAVAILABLE, "REPLICA_BEHIND",
     "this instance's database has replayed the WAL up to None, not yet to 0/3000148 (x-aos-min-lsn); retry",
     {"replayed": ""}),
    (faults.ExportRateLimited("at most 2 exports an hour", subject="tenant:t-1", description="2 exports per 3600 s",
                              retry_after_s=12.3401, metadata={"limit": "2"}),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "EXPORT_RATE_LIMITED", "at most 2 exports an hour", {"limit": "2"}),
    (faults.ExportStorageQuota("stored bytes", subject="tenant:t-1", description="1000 bytes"),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "EXPORT_STORAGE_QUOTA", "stored bytes", {}),
    (faults.LogHashesMissing("ledger", [7, 3]), grpc.StatusCode.DATA_LOSS, "LOG_HASHES_MISSING",
     "the tenant's ledger transparency log lacks 2 stored hashes this proof needs",
     {"log": "ledger", "missing": "7,3"}),
    (faults.CheckpointTreeMismatch("ledger", 12), grpc.StatusCode.DATA_LOSS, "CHECKPOINT_TREE_MISMATCH",
     "the tenant's ledger transparency log no longer has the root its checkpoint of tree size 12 signed",
     {"log": "ledger", "tree_size": "12"}),
    # Raised by the export builder for a run or incident the tenant does not have: answered as the
    # handlers' own errors.not_found would (another tenant's record reads as missing).
    (faults.RecordNotFound(faults.Resource.INCIDENT, "inc-9"), grpc.StatusCode.NOT_FOUND, "INCIDENT_NOT_FOUND",
     "incident 'inc-9' not found", {"resource": "incident", "id": "inc-9"}),
    # RetentionService: a release is written once.
    (faults.LegalHoldReleased("hold_1"), grpc.StatusCode.FAILED_PRECONDITION, "LEGAL_HOLD_RELEASED",
     "legal hold 'hold_1' is already released", {"hold_id": "hold_1"}),
    (faults.RecordNotFound(faults.Resource.LEGAL_HOLD, "hold_2"), grpc.StatusCode.NOT_FOUND, "LEGAL_HOLD_NOT_FOUND",
     "legal hold 'hold_2' not found", {"resource": "legal_hold", "id": "hold_2"}),
    # Ingest: a producer's id recorded with other content (a retry of the same content is no fault).
    (faults.EvidenceAlreadyRecorded("run 'r-1': already recorded with other steps"), grpc.StatusCode.ALREADY_EXISTS,
     "EVIDENCE_CONFLICT", "run 'r-1': already recorded with other steps (evidence is never overwritten; nothing "
     "was written)", {}),
    (faults.ExportContentErased("exp_1", 3, ("era_1", "era_2"), ("RECORDED",)), grpc.StatusCode.FAILED_PRECONDITION,
     "CONTENT_ERASED", "export exp_1: content erased after export (3 payloads); its stored artifact was deleted "
     "with it. Its signed manifest stays (GetExport, VerifyExport); a copy downloaded before verifies offline",
     {"payloads_erased": "3", "erasure_ids": "era_1,era_2", "erasure_bases": "RECORDED"}),
    # An UNTRACKED tombstone (docs/ERASURE.md §3c): its count is an upper bound.
    (faults.ExportContentErased("exp_2", 4, ("era_3",), ("UNTRACKED",)), grpc.StatusCode.FAILED_PRECONDITION,
     "CONTENT_ERASED", "export exp_2: content erased after export (up to 4 payloads); its stored artifact was "
     "deleted with it. Its signed manifest stays (GetExport, VerifyExport); a copy downloaded before verifies offline",
     {"payloads_erased": "4", "erasure_ids": "era_3", "erasure_bases": "UNTRACKED"}),
    (faults.LegalHoldBlocksErasure("hold-1", 7), grpc.StatusCode.FAILED_PRECONDITION, "LEGAL_HOLD",
     "legal hold hold-1 covers this data subject: nothing was erased (the refused request is audit entry 7)",
     {"legal_hold_id": "hold-1", "request_seq": "7"}),
    # Admission's refusals (aos_runtime.admission): the tenant's share, or the process's limit.
    (faults.Overloaded(tenant_limit=True, tenant="t1", limit="heavy calls of one tenant", retry_after_s=1.5,
                       message="not started"), grpc.StatusCode.RESOURCE_EXHAUSTED, "TENANT_HEAVY_LIMIT",
     "not started", {"limit": "heavy calls of one tenant"}),
    (faults.Overloaded(tenant_limit=False, tenant="t1", limit="light calls at once", retry_after_s=0.2,
                       message="not started"), grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_OVERLOADED",
     "not started", {"limit": "light calls at once"}),
]


@pytest.mark.parametrize(("fault", "code", "reason", "message", "metadata"), CASES,
                         ids=[type(c[0]).__name__ for c in CASES])
def test_each_fault_gets_its_status(fault, code, reason, message, metadata):
    for deadline_passed in (False, True):
        answer = errors.from_exception(fault, deadline_passed=deadline_passed)
        assert (answer.code, answer.reason, answer.message, answer.metadata) == (code, reason, message, metadata)


def test_every_fault_is_mapped():
    """A Fault added without its line in the mapper would answer INTERNAL: caught here."""
    defined = {cls for _, cls in inspect.getmembers(faults, inspect.isclass)
               if issubclass(cls, faults.Fault) and cls is not faults.Fault}
    assert defined == {type(case[0]) for case in CASES}
    unmapped = type("Unmapped", (faults.Fault,), {})()
    assert errors.from_exception(unmapped, deadline_passed=False).code == grpc.StatusCode.INTERNAL


def test_refusals_say_when_to_retry_and_which_limit():
    """RetryInfo on every refusal under load (the pool's too), QuotaFailure naming the tenant and the limit."""
    from google.rpc import error_details_pb2, status_pb2

    def details(answer: errors.ApiError) -> dict[str, object]:
        status = status_pb2.Status.FromString(dict(answer.to_status().trailing_metadata)["grpc-status-details-bin"])
        found = {}
        for detail in status.details:
            for kind in (error_details_pb2.RetryInfo, error_details_pb2.QuotaFailure):
                message = kind()
                if detail.Unpack(message):
                    found[kind.__name__] = message
        return found

    refused = details(errors.from_exception(faults.Overloaded(
        tenant_limit=True, tenant="t1", limit="heavy calls of one tenant", retry_after_s=1.5, message="not started"),
        deadline_passed=False))
    assert refused["RetryInfo"].retry_delay.ToNanoseconds() == 1_500_000_000
    (violation,) = refused["QuotaFailure"].violations
    assert (violation.subject, violation.description) == ("t1", "heavy calls of one tenant")
    pool = details(errors.from_exception(faults.PoolExhausted(retry_after_s=0.25), deadline_passed=False))
    assert pool["RetryInfo"].retry_delay.ToNanoseconds() == 250_000_000 and "QuotaFailure" not in pool
    assert details(errors.from_exception(faults.PoolExhausted(), deadline_passed=False)) == {}


def test_faults_are_not_taken_for_timeouts():
    """A fault must not subclass what from_exception reads as a database failure (a
    TimeoutError would become QUERY_TIMEOUT, an OSError DATABASE_UNAVAILABLE)."""
    for fault, *_ in CASES:
        assert not isinstance(fault, (TimeoutError, OSError, ConnectionError))


def _details(fault: faults.Fault) -> dict[str, object]:
    status = errors.from_exception(fault, deadline_passed=False).to_status()
    packed = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    found: dict[str, object] = {}
    for cls in (error_details_pb2.ErrorInfo, error_details_pb2.QuotaFailure, error_details_pb2.RetryInfo):
        for detail in packed.details:
            if detail.Is(cls.DESCRIPTOR):
                message = cls()
                detail.Unpack(message)
                found[cls.__name__] = message
    return found


def test_a_quota_fault_carries_its_quota_failure_and_when_to_retry():
    rate = _details(faults.ExportRateLimited("m", subject="tenant:t-1", description="2 an hour",
                                         retry_after_s=12.3401))
    assert [(v.subject, v.description) for v in rate["QuotaFailure"].violations] == [("tenant:t-1", "2 an hour")]
    assert rate["RetryInfo"].retry_delay.ToMilliseconds() == 12341   # rounded up: never too early
    storage = _details(faults.ExportStorageQuota("m", subject="tenant:t-1", description="d"))
    assert "RetryInfo" not in storage and storage["ErrorInfo"].reason == "EXPORT_STORAGE_QUOTA"
