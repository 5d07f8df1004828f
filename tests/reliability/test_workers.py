"""AOS_WORKERS > 1: one service, several processes on one port (SO_REUSEPORT).

The service runs as a real subprocess (``python -m services.logs``) on port 0, so the
supervisor must settle one concrete port for all workers. Which process served a call
is read from the call log: every worker's log lines carry its pid, and each call sends
its own x-request-id. Each channel below is its own TCP connection (no shared
subchannel pool), so the kernel, not gRPC, decides which worker gets it.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_recording import bulk
from aos_runtime.config import ConfigError, Settings
from tests.e2e.support import auth
from tests.reliability.processes import Service

pytestmark = pytest.mark.db
LEDGER = 60_000          # entries GetIntegrityReport verifies (one walk: 0.5–0.8 s on this machine)
WALKS_PER_WORKER = 4     # integrity walks sent to each worker before SIGTERM, run one after another
CHANNELS = 24            # all on one worker by chance: 2 × 2^-24


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _outcome(future: grpc.Future) -> str:
    error = future.exception()
    return f"OK, {future.result().entries_checked} entries" if error is None else f"{error.code().name}: {error.details()}"


def _channel(address: str) -> grpc.Channel:
    # Its own subchannel, hence its own TCP connection, even to an address another channel uses.
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def test_workers_share_the_port_serve_calls_and_drain_on_sigterm(databases, tmp_path):
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=LEDGER, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    # The walks queued on a worker below must not be refused for waiting, however loaded the machine.
    service = Service(url, tmp_path / "aos", workers="2", AOS_HEAVY_QUEUE_BUDGET_S="120")
    channels: list[grpc.Channel] = []
    try:
        address, pids = service.start_workers(2)
        assert len(set(pids)) == 2 and all(_parent(pid) == service.process.pid for pid in pids)

        # Many connections, one call each: the kernel spreads them over both workers.
        served_by: dict[int, int] = {}  # channel → pid of the worker that answered
        for i in range(CHANNELS):
            channels.append(_channel(address))
            stub = pb_grpc.AuditLedgerServiceStub(channels[i])
            reply = stub.ListAuditEntries(pb.ListAuditEntriesRequest(page_size=5),
                                          metadata=auth(tenant) + (("x-request-id", f"conn-{i}"),), timeout=10)
            assert len(reply.entries) == 5
            (logged,) = service.wait_for("call", request_id=f"conn-{i}")
            assert logged["code"] == "OK"
            served_by[i] = logged["pid"]
        assert set(served_by.values()) == set(pids), f"both workers serve: {served_by}"

        # A single-process service (AOS_WORKERS=1, so_reuseport 0) cannot join the port.
        port = int(address.rsplit(":", 1)[1])
        intruder = Service(url, tmp_path / "aos", workers="1", port=port)
        try:
            assert intruder.wait(timeout=30) != 0
            assert any("Failed to bind to address" in str(line.get("msg")) for line in intruder.lines), \
                intruder.lines
        finally:
            intruder.stop()

        # SIGTERM with calls in flight on each worker: every call finishes OK, then all exit 0.
        # A worker runs one heavy call of a tenant at a time (AOS_HEAVY_PER_TENANT=1), so the
        # WALKS_PER_WORKER walks sent on one of its connections run one after another: the last
        # ends WALKS_PER_WORKER walks later, well after the signal even on a machine several times
        # faster than this one (a walk of LEDGER entries took 0.5–0.8 s here; a single walk in
        # flight once finished before a 0.3 s pause ended on a faster run).
        in_flight: dict[int, list[grpc.Future]] = {}
        for pid in pids:
            channel = channels[next(c for c, p in served_by.items() if p == pid)]
            stub = pb_grpc.AuditLedgerServiceStub(channel)
            in_flight[pid] = [stub.GetIntegrityReport.future(pb.GetIntegrityReportRequest(max_entries=LEDGER),
                                                             metadata=auth(tenant), timeout=120)
                              for _ in range(WALKS_PER_WORKER)]
        time.sleep(0.3)  # the calls reach their worker
        finished = {pid: [_outcome(f) for f in calls if f.done()] for pid, calls in in_flight.items()}
        assert all(len(done) < WALKS_PER_WORKER for done in finished.values()), \
            f"every call of a worker finished before the signal: {finished}"
        service.process.send_signal(signal.SIGTERM)
        assert [[f.result().entries_checked for f in calls] for calls in in_flight.values()] == \
            [[LEDGER] * WALKS_PER_WORKER] * len(pids)
        assert service.wait(timeout=60) == 0, service.lines
        assert {line["pid"] for line in service.wait_for("draining", count=2)} == set(pids)
        assert service.wait_for("workers stopped")[0]["clean"] is True
        assert all(_gone(pid) for pid in pids)
    finally:
        for channel in channels:
            channel.close()
        service.stop()


async def test_the_gateway_spreads_its_calls_over_the_workers(databases, tmp_path):
    """The gateway's backend pool: a channel (a connection) per worker, used in turn, so REST
    calls reach every worker and not only the one its single connection landed on."""
    from gateway.app import Backends

    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=100, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    service = Service(url, tmp_path / "aos", workers="2")
    method = pb.DESCRIPTOR.services_by_name["AuditLedgerService"].methods_by_name["ListAuditEntries"]
    backends = None
    try:
        address, pids = service.start_workers(2)
        served_by = set()
        # Connections land on workers by the kernel's hash: retry with fresh pools until
        # one pool holds both (each pool of 4 misses one worker with probability 2 × 2^-4).
        for attempt in range(6):
            backends = Backends({method.containing_service.full_name: address}, 8 * 1024 * 1024, per_address=4)
            for i in range(8):
                rid = f"gw-{attempt}-{i}"
                await backends.unary(method)(pb.ListAuditEntriesRequest(page_size=1),
                                             metadata=auth(tenant) + (("x-request-id", rid),), timeout=10)
                served_by.add(service.wait_for("call", request_id=rid)[0]["pid"])
            await backends.close()
            if served_by == set(pids):
                break
            served_by = set()
        assert served_by == set(pids), "one pool's calls reached both workers"
        # The supervisor killed outright (no SIGTERM to forward): its workers still go.
        service.stop()
        assert all(_gone(pid) for pid in pids), "no worker outlives its supervisor"
    finally:
        service.stop()


def test_a_killed_worker_stops_the_service_with_an_error(databases, tmp_path):
    service = Service(databases.create(), tmp_path / "aos", workers="2")
    try:
        _, (victim, survivor) = service.start_workers(2)
        os.kill(victim, signal.SIGKILL)
        assert service.wait(timeout=30) == 1, service.lines
        (noticed,) = service.wait_for("worker exited unexpectedly")
        assert (noticed["pid"], noticed["exit_code"]) == (victim, -signal.SIGKILL)
        # Not left behind: the surviving worker was stopped too.
        assert _gone(survivor)
    finally:
        service.stop()


@pytest.mark.parametrize("raw, expected", [(None, 1), ("", 1), ("3", 3),
                                           ("auto", len(os.sched_getaffinity(0))),
                                           ("AUTO", len(os.sched_getaffinity(0)))])
def test_workers_setting(raw, expected):
    env = {} if raw is None else {"AOS_WORKERS": raw}
    assert Settings.from_env(env).workers == expected


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_workers_setting_refuses_nonsense(raw):
    with pytest.raises(ConfigError):
        Settings.from_env({"AOS_WORKERS": raw})
