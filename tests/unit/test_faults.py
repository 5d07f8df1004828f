"""Domain faults (aos_runtime.faults) are raised below the edge and answered once, by
errors.from_exception, with the code, reason, message and ErrorInfo metadata callers
have always seen for them."""
from __future__ import annotations

import inspect

import grpc
import pytest

from aos_evidence.kinds import ExportFormat
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
    (faults.ExportTooLarge("a ZIP package holds at most 3 records", format="ZIP"),
     grpc.StatusCode.FAILED_PRECONDITION, "EXPORT_TOO_LARGE", "a ZIP package holds at most 3 records",
     {"format": "ZIP"}),
    # As the builder raises it: the plan's format is an ExportFormat, its value the spelling callers see.
    (faults.ExportTooLarge("too many records", format=ExportFormat.ZIP), grpc.StatusCode.FAILED_PRECONDITION,
     "EXPORT_TOO_LARGE", "too many records", {"format": "ZIP"}),
    # Raised by the export builder for a run or incident the tenant does not have: answered as the
    # handlers' own errors.not_found would (another tenant's record reads as missing).
    (faults.RecordNotFound(faults.Resource.INCIDENT, "inc-9"), grpc.StatusCode.NOT_FOUND, "INCIDENT_NOT_FOUND",
     "incident 'inc-9' not found", {"resource": "incident", "id": "inc-9"}),
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
