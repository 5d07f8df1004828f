"""Past one machine: several instances of a stateless service behind client-side balancing.

Two or three Logs services run as real processes on their own ports, standing for
instances on separate machines, over one database. The gateway's channel layer
(gateway.app.Backends, with aos_runtime.channels' options) is given one target naming
them all. Which instance served a call is read from its own call log (each call sends
its own x-request-id).
"""
from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from aos.logs.v1 import audit_ledger_service_pb2 as pb
from aos_recording import bulk
from aos_runtime.config import Settings
from tests.e2e.support import auth
from tests.reliability.processes import Service

pytestmark = pytest.mark.db
METHOD = pb.DESCRIPTOR.services_by_name["AuditLedgerService"].methods_by_name["ListAuditEntries"]
CALLS = 24
INTEGRITY_LEDGER = 100_000  # entries a GetIntegrityReport verifies: seconds of work, in flight at the kill
# (20,000 was seconds until verification got faster — RFC 8785 fast path, read-ahead — and then
# all four answered before the kill: the test needs the work to outlast half a second by a margin)


@contextlib.asynccontextmanager
async def balanced(instances: dict[str, Service], *order: str):
    """The gateway's backend pool over the instances (in ``order``, default all) as one
    ``ipv4:`` target, once they listen; the pool closed and every instance stopped after."""
    from gateway.app import Backends

    backends = None
    try:
        target = "ipv4:" + ",".join(instances[name].address() for name in order or instances)
        backends = Backends({METHOD.containing_service.full_name: target}, 8 * 1024 * 1024)
        yield target, backends
    finally:
        if backends is not None:
            await backends.close()
        for instance in instances.values():
            instance.stop()


def served_by(instances: dict[str, Service], rid: str, timeout: float = 10) -> str:
    """The one instance whose call log holds ``rid`` (its log line may lag the answer a little)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [name for name, instance in instances.items()
                 if any(line.get("msg") == "call" and line.get("request_id") == rid for line in list(instance.lines))]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, f"{rid} served by {found}"
            return found[0]
        time.sleep(0.05)


async def calls(backends, tenant: str, instances: dict[str, Service], label: str) -> list[str]:
    """CALLS list calls, one after another, each answered; which instance answered each."""
    answered = []
    for i in range(CALLS):
        rid = f"{label}-{i}"
        reply = await backends.unary(METHOD)(pb.ListAuditEntriesRequest(page_size=5),
                                             metadata=auth(tenant) + (("x-request-id", rid),), timeout=10)
        assert len(reply.entries) == 5
        answered.append(rid)
    return [served_by(instances, rid) for rid in answered]


async def test_calls_spread_over_instances_and_survive_one_dying(databases, tmp_path):
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=50, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    instances = {name: Service(url, tmp_path / name) for name in ("a", "b")}
    async with balanced(instances) as (target, backends):
        assert Settings.from_env({"AOS_LOGS_ADDRESS": target}).addresses["logs"] == target
        spread = await calls(backends, tenant, instances, "both")
        # round robin: every instance takes its turn, none takes them all
        assert set(spread) == {"a", "b"} and min(spread.count("a"), spread.count("b")) >= CALLS // 4, spread

        instances["a"].stop()  # SIGKILL: no drain, its connection just breaks
        after = await calls(backends, tenant, instances, "one-left")
        assert after == ["b"] * CALLS, "every call answered, by the instance still running"


async def test_an_instance_whose_health_is_not_serving_gets_no_calls(databases, tmp_path):
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=50, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    # An instance whose database does not answer (nothing listens there): it starts,
    # reports NOT_SERVING, and would fail every call it were given.
    instances = {"up": Service(url, tmp_path / "up"),
                 "dark": Service("postgresql://postgres@127.0.0.1:9/aos", tmp_path / "dark")}
    async with balanced(instances, "dark", "up") as (_, backends):
        instances["dark"].wait_for("health", status="NOT_SERVING")
        assert await calls(backends, tenant, instances, "health") == ["up"] * CALLS


async def test_reads_in_flight_on_a_dying_instance_are_answered_by_another(databases, tmp_path):
    """A read that an instance took but never answered (it died) is sent again to another
    instance: the caller sees its answer, not UNAVAILABLE. Reads only — see channels."""
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=INTEGRITY_LEDGER, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    # Integrity reports are heavy calls (one per tenant at a time by default): let all four run
    # at once, so that the kill meets them in flight rather than queued or refused.
    heavy = {"AOS_HEAVY_PER_TENANT": "4", "AOS_HEAVY_CONCURRENCY": "4"}
    instances = {name: Service(url, tmp_path / name, **heavy) for name in ("a", "b")}
    async with balanced(instances) as (_, backends):
        verify = backends.unary(METHOD.containing_service.methods_by_name["GetIntegrityReport"])
        request = pb.GetIntegrityReportRequest(max_entries=INTEGRITY_LEDGER)
        in_flight = [asyncio.ensure_future(verify(request, metadata=auth(tenant), timeout=60)) for _ in range(4)]
        # Each verification takes seconds: half a second in, two are running on each.
        await asyncio.sleep(0.5)
        assert not any(task.done() for task in in_flight)
        instances["a"].stop()
        replies = await asyncio.gather(*in_flight)
        assert [r.entries_checked for r in replies] == [INTEGRITY_LEDGER] * 4
