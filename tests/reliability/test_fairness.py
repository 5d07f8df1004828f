"""Fair under load (issue #19): one tenant's heavy calls cannot starve another's reads,
overload is refused at once with a retry delay, REST says 429 with Retry-After.

Real Logs servers on port 0 with small limits over a small bulk ledger; heavy work is
GetIntegrityReport (declared heavy in its proto), light work ListAuditEntries. The
contrast test runs twice: with the isolation (it must hold) and with
AOS_HEAVY_ISOLATION=off (the same assertion must fail, or the test could not tell)."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_recording import bulk
from aos_runtime.service_main import build_server
from gateway import create_app
from tests.e2e.support import BASE, auth, service_modules, settings, token
from tests.logins import load_demo_scenarios, login_url

pytestmark = pytest.mark.db

LEDGER = 40_000             # entries per tenant; one integrity walk of them takes a good fraction of a second
LIMITS = {"pool_size": 4, "max_inflight": 16, "queue_budget_s": 0.5, "heavy_concurrency": 2,
          "heavy_per_tenant": 1, "heavy_queue_per_tenant": 3, "heavy_queue_budget_s": 10.0}
FLOOD = 8                   # tenant A's concurrent heavy callers
# Tenant B's light reads under A's flood: no error, and p99 within this many times B's p99
# alone, and at least FLOOR_S.
# On this shared 2-core machine B's p99 under the flood measured 125-560 ms isolated, 3.1-3.8 s
# (two calls in three seconds) with the isolation off: the floor keeps the test from flaking
# on a busy machine while the contrast stays an order of magnitude. (Walks of 15,000 entries
# got ~2x faster with the fixed-shape hashing, and the off case fell under the floor, 0.7-0.9 s;
# at 40,000: 122 ms isolated, 2.6 s off, on a quiet machine.)
SLOWDOWN, FLOOR_S = 5, 1.0


LEARNING_WALKS = 6          # walks the gate learns a walk's service time from before the seven arrive
SHORT = 15_000             # entries of the walks in the tests of order and refusals (5,000 walked
                           # in ~60 ms once verification got faster: the queue drained mid-test)

@pytest.fixture(scope="module")
def ledger(databases) -> tuple[str, str, str]:
    """(database URL, tenant A with LEDGER entries, tenant B with the demo scenarios)."""
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=LEDGER, traces=0, steps=0, system=0))
    (a,) = bulk.tenant_ids(1)
    return url, a, load_demo_scenarios(url, "tenant-fair-b", base=BASE)


@contextlib.asynccontextmanager
async def logs_server(url: str, **limits):
    data = Path(tempfile.mkdtemp(prefix="aos-fair-"))
    conf = dataclasses.replace(settings(data), **{**LIMITS, **limits})
    server = build_server("logs", service_modules()["logs"].servicers, conf, login_url(url, "logs"), port=0)
    address = f"127.0.0.1:{await server.start()}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield server, pb_grpc.AuditLedgerServiceStub(channel)
    finally:
        await server.stop(grace=1)
        shutil.rmtree(data, ignore_errors=True)


def integrity(tenant: str, stub, entries: int = LEDGER, timeout: float = 60):
    return stub.GetIntegrityReport(pb.GetIntegrityReportRequest(max_entries=entries), metadata=auth(tenant),
                                   timeout=timeout)


async def until(predicate, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "the server never reached the state the test waits for"
        await asyncio.sleep(0.001)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.99 * (len(ordered) - 1))]


async def light_loop(stub, tenant: str, seconds: float, callers: int = 2) -> tuple[list[float], list[str]]:
    """``callers`` closed loops of ListAuditEntries for ``seconds``: (latencies, error codes)."""
    latencies: list[float] = []
    failures: list[str] = []
    end = time.monotonic() + seconds

    async def caller() -> None:
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                await stub.ListAuditEntries(pb.ListAuditEntriesRequest(page_size=20), metadata=auth(tenant), timeout=5)
                latencies.append(time.monotonic() - started)
            except grpc.aio.AioRpcError as err:
                failures.append(err.code().name)

    await asyncio.gather(*[caller() for _ in range(callers)])
    return latencies, failures


async def heavy_loop(stub, tenant: str, stop: asyncio.Event, done: list[str]) -> None:
    """A closed loop of integrity walks; a refused one is tried again after its RetryInfo's
    delay, as a gRPC client's retry policy does (at most 0.5 s, so the flood stays a flood)."""
    while not stop.is_set():
        try:
            await integrity(tenant, stub)
            done.append("OK")
        except grpc.aio.AioRpcError as err:
            done.append(err.code().name)
            retry = details(err).get(error_details_pb2.RetryInfo)
            await asyncio.sleep(min(retry.retry_delay.ToNanoseconds() / 1e9, 0.5) if retry else 0.05)


def details(err: grpc.aio.AioRpcError) -> dict[type, object]:
    found: dict[type, object] = {}
    for detail in rpc_status.from_call(err).details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo, error_details_pb2.QuotaFailure):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind] = message
    return found


@pytest.mark.parametrize("isolation", [True, False], ids=["isolated", "isolation-off-must-fail"])
async def test_a_heavy_flood_leaves_another_tenants_reads_fast(ledger, isolation):
    url, a, b = ledger
    # Off, the accepted-time target goes too: admission by predicted completion alone keeps B's
    # waits near AOS_ACCEPTED_TARGET_S (1 s: B's p99 ~0.9 s here, under the bound, ~70x alone),
    # and this test is about what the heavy calls' own gate and pool give B.
    off = {} if isolation else {"accepted_target_s": 0.0}
    async with logs_server(url, heavy_isolation=isolation, **off) as (server, stub):
        await integrity(a, stub)  # warm both paths
        alone, alone_failures = await light_loop(stub, b, seconds=1)
        assert not alone_failures
        stop, heavy = asyncio.Event(), []
        flood = [asyncio.ensure_future(heavy_loop(stub, a, stop, heavy)) for _ in range(FLOOD)]
        await asyncio.sleep(0.5)  # the flood is under way
        loaded, failures = await light_loop(stub, b, seconds=2.5)
        stop.set()
        # The walks A has been admitted for end (no new one starts): in worker processes at nice +10
        # (AOS_HEAVY_PROCESSES, the default) A yields the CPU to B's loop, and on a loaded machine
        # its walks may end only once B's loop has stopped (seen: 1 walk done in the 2.5 s, 24
        # refused while its queue was full). They ran all the same; counted once done.
        await asyncio.wait_for(asyncio.gather(*flood, return_exceptions=True), 120)
    bound = max(SLOWDOWN * p99(alone), FLOOR_S)
    figures = (f"B alone p50/p99 {statistics.median(alone) * 1000:.1f}/{p99(alone) * 1000:.1f} ms; under A's flood "
               f"{(statistics.median(loaded) * 1000) if loaded else 0:.1f}/{(p99(loaded) * 1000) if loaded else 0:.1f}"
               f" ms over {len(loaded)} calls, {len(failures)} errors {sorted(set(failures))}; bound {bound * 1000:.0f}"
               f" ms; A: {heavy.count('OK')} walks done, {len(heavy) - heavy.count('OK')} refused "
               f"{sorted(set(heavy) - {'OK'})}")
    print(figures)
    held = bool(loaded) and not failures and p99(loaded) <= bound
    assert heavy.count("OK") >= 2, f"A's heavy calls did not run: {figures}"
    if isolation:
        assert held, figures
        # The walks' service time as admission predicts it (AOS_ACCEPTED_TARGET_S), exported per method.
        assert (REGISTRY.get_sample_value("aos_admission_service_seconds", {
            "service": server.name, "gate": "heavy", "grpc_service": "aos.logs.v1.AuditLedgerService",
            "grpc_method": "GetIntegrityReport"}) or 0) > 0, "no predicted service time exported"
    else:
        assert not held, f"with the isolation off, A's flood should have slowed B: {figures}"


async def test_per_tenant_share_round_robin_and_the_refusal_details(ledger):
    """A's share is one heavy call; its next three wait and a fifth is refused at once with
    TENANT_HEAVY_LIMIT, RetryInfo and QuotaFailure; B's first heavy call starts at once."""
    url, a, b = ledger
    calls, logger = CallLog(), logging.getLogger("aos.server")
    level = logger.level
    logger.addHandler(calls)
    logger.setLevel(logging.INFO)
    async with logs_server(url, heavy_queue_budget_s=30.0) as (server, stub):
        gate = server.admission.heavy
        for _ in range(2):  # service times for the estimate
            await integrity(a, stub, SHORT)
        a_calls = [asyncio.ensure_future(integrity(a, stub, SHORT)) for _ in range(4)]
        await until(lambda: gate.waiting_of(a) == 3)
        assert (gate.running_of(a), gate.waiting_of(a)) == (1, 3)
        # What a scrape reads: the heavy queue's depth now, and each refusal counted by reason.
        assert REGISTRY.get_sample_value("aos_heavy_queue_depth", {"service": server.name}) == 3
        refused_before = REGISTRY.get_sample_value(
            "aos_heavy_refused_total", {"service": server.name, "reason": "TENANT_HEAVY_LIMIT"}) or 0
        by_cause = {"service": server.name, "gate": "heavy", "cause": "queue_full"}
        cause_before = REGISTRY.get_sample_value("aos_admission_refused_total", by_cause) or 0
        refusals = []
        for _ in range(10):
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await integrity(a, stub, SHORT)
            refusals.append(time.monotonic() - started)
        err = refused.value
        assert REGISTRY.get_sample_value("aos_heavy_refused_total", {
            "service": server.name, "reason": "TENANT_HEAVY_LIMIT"}) == refused_before + 10
        assert REGISTRY.get_sample_value("aos_admission_refused_total", by_cause) == cause_before + 10
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        found = details(err)
        assert found[error_details_pb2.ErrorInfo].reason == "TENANT_HEAVY_LIMIT"
        delay = found[error_details_pb2.RetryInfo].retry_delay.ToNanoseconds() / 1e9
        assert delay > 0.05, "the retry delay comes from the recent walks, not a token constant"
        (violation,) = found[error_details_pb2.QuotaFailure].violations
        assert violation.subject == a and "AOS_HEAVY_QUEUE_PER_TENANT=3" in violation.description
        # Timed by the server (arrival to refusal, its call log): the caller shares this process's
        # loop with the server and A's four walks, so its round trip measures the test's load too;
        # it must still be far from the 30 s the refused call would otherwise have waited.
        server_ms = [r.ms for r in calls.calls  # type: ignore[attr-defined]
                     if getattr(r, "reason", None) == "TENANT_HEAVY_LIMIT"]
        print(f"refusal round trips (ms): {sorted(round(r * 1000, 1) for r in refusals)}; by the server "
              f"{sorted(round(ms, 2) for ms in server_ms)}; retry_delay {delay:.3f} s")
        assert len(server_ms) == 10 and statistics.median(server_ms) < 10, server_ms
        assert max(refusals) < 1.0, refusals
        # B is not behind A's queue: a slot is free (A's share is one), its call starts now
        # and ends before A's waiting calls do.
        b_call = asyncio.ensure_future(integrity(b, stub))
        await until(lambda: b_call.done() or gate.running_of(b) == 1)
        assert gate.waiting_of(b) == 0, "B's first call started at once"
        finished = []
        for name, task in [("b", b_call)] + [(f"a{i}", t) for i, t in enumerate(a_calls)]:
            task.add_done_callback(lambda _, name=name: finished.append(name))
        await asyncio.gather(b_call, *a_calls)
    logger.removeHandler(calls)
    logger.setLevel(level)
    assert finished.index("b") < 2, f"B's call finished behind A's queue: {finished}"


@pytest.mark.parametrize("predicted", [True, False], ids=["predicted-completion", "off-must-fail"])
async def test_a_heavy_queue_refuses_at_once_the_calls_that_would_end_past_the_target(ledger, predicted):
    """AOS_ACCEPTED_TARGET_S on a real server: A's integrity walks (one at a time, A's share) have
    taken ~w each; the target is set to 2.5 w. Seven arrive together: those whose wait + w would
    end past it are refused at once with RetryInfo (when the walks ahead are done) and QuotaFailure,
    and every accepted walk ends in time (1.5x slack for the loaded machine). With the target off
    (0) all seven wait and the last ones end late — the same assertion fails."""
    url, a, b = ledger

    async def one_round():
        async with logs_server(url, heavy_queue_per_tenant=6) as (server, stub):
            gate = server.admission.heavy
            kind = "/aos.logs.v1.AuditLedgerService/GetIntegrityReport"
            # No warming here: the worker processes (AOS_HEAVY_PROCESSES, the default) are warm when
            # the server starts (aos_runtime.offload), so the first walks are walks like the others.
            # (Before, each worker's first job took ~1.0-1.25 s against ~0.2 s — its start-up, its
            # connection — and CI saw those two outweigh 6 learning walks in the gate's mean: 1 of 7
            # walks accepted.)
            for _ in range(LEARNING_WALKS):  # service times of the walk (MIN_SAMPLES and more)
                await integrity(a, stub, SHORT)
            walk = gate.service_estimate_s(kind)
            assert walk is not None and walk > 0
            target = 2.5 * walk
            gate.limits = dataclasses.replace(gate.limits, target_s=target if predicted else 0.0)
            results: list[tuple[str, float, object]] = []

            async def call() -> None:
                started = time.monotonic()
                try:
                    await integrity(a, stub, SHORT)
                    results.append(("OK", time.monotonic() - started, None))
                except grpc.aio.AioRpcError as err:
                    results.append((err.code().name, time.monotonic() - started, err))

            await asyncio.gather(*[call() for _ in range(7)])
        accepted = sorted(r[1] for r in results if r[0] == "OK")
        refused = [r for r in results if r[0] == "RESOURCE_EXHAUSTED"]
        figures = (f"walk ~{walk * 1000:.0f} ms, target {target * 1000:.0f} ms: accepted ended after "
                   f"{[round(x * 1000) for x in accepted]} ms; {len(refused)} refused after "
                   f"{sorted(round(r[1] * 1000, 1) for r in refused)} ms")
        print(figures)
        assert {r[0] for r in results} <= {"OK", "RESOURCE_EXHAUSTED"}, figures
        return walk, target, accepted, refused, figures

    # Up to three rounds: on a machine loaded by the rest of the suite a walk can take several
    # times its estimate, and the call admitted to wait behind it then rightly gives up (seen in
    # `make test`: the first walk 484 ms against ~150). One round where the walks keep near their
    # estimate shows the property; with the target off no round can (no refusal at all).
    for _ in range(3 if predicted else 1):
        walk, target, accepted, refused, figures = await one_round()
        in_time = all(x <= 1.5 * target for x in accepted)
        if not predicted or (in_time and len(accepted) >= 2 and refused and max(r[1] for r in refused) < walk):
            break
    if not predicted:
        assert not in_time and not refused, f"with the target off the queue should end walks late: {figures}"
        return
    assert in_time and len(accepted) >= 2 and refused, figures
    found = details(refused[0][2])
    assert found[error_details_pb2.ErrorInfo].reason == "TENANT_HEAVY_LIMIT"
    assert found[error_details_pb2.RetryInfo].retry_delay.ToNanoseconds() / 1e9 >= walk, "after the walks ahead"
    assert found[error_details_pb2.QuotaFailure].violations[0].subject == a
    # Refused at once: long before the walk ahead of them ended (the caller shares this loop).
    assert max(r[1] for r in refused) < walk, figures


class CallLog(logging.Handler):
    """The server's call log lines (aos.server "call": method, code, ms, reason)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "call":
            self.calls.append(record)


async def test_light_calls_over_the_limit_are_refused_at_once(ledger):
    """Two light calls at a time, 40 callers: the rest are refused SERVER_OVERLOADED, nearly
    all at once (the estimate from recent service times), not after waiting out the budget.
    Timed by the server (its call log: arrival to refusal): the callers share this process's
    event loop, so their own round trips measure the test's load too (bench/soak.py times
    refusals from another process)."""
    url, a, b = ledger
    calls, logger = CallLog(), logging.getLogger("aos.server")
    level = logger.level
    logger.addHandler(calls)
    logger.setLevel(logging.INFO)
    # The core's bound off (max_pending_calls=0): the 40 callers share this loop with the server, so
    # most of a burst waits in gRPC's core, which would refuse them CANCELLED before the gate is
    # reached (that layer is tried on its own: test_grpc_core_refuses_calls_beyond_the_pending_bound…).
    async with logs_server(url, max_inflight=2, queue_budget_s=0.1, max_pending_calls=0) as (server, stub):
        results: list[tuple[str, float, object]] = []

        async def caller() -> None:
            for _ in range(15):
                started = time.monotonic()
                try:
                    await stub.ListAuditEntries(pb.ListAuditEntriesRequest(page_size=20), metadata=auth(b),
                                                timeout=5)
                    results.append(("OK", time.monotonic() - started, None))
                except grpc.aio.AioRpcError as err:
                    results.append((err.code().name, time.monotonic() - started, err))

        await asyncio.gather(*[caller() for _ in range(40)])
    logger.removeHandler(calls)
    logger.setLevel(level)
    refused = [r for r in results if r[0] == "RESOURCE_EXHAUSTED"]
    accepted = [r[1] for r in results if r[0] == "OK"]
    assert {r[0] for r in results} <= {"OK", "RESOURCE_EXHAUSTED"}, {r[0] for r in results}
    assert refused and accepted
    info = details(refused[-1][2])
    assert info[error_details_pb2.ErrorInfo].reason == "SERVER_OVERLOADED"
    assert info[error_details_pb2.RetryInfo].retry_delay.ToNanoseconds() > 0
    assert "AOS_MAX_INFLIGHT=2" in info[error_details_pb2.QuotaFailure].violations[0].description
    server_ms = [r.ms for r in calls.calls if getattr(r, "reason", None) == "SERVER_OVERLOADED"]  # type: ignore[attr-defined]
    assert len(server_ms) == len(refused)
    at_once = [ms for ms in server_ms if ms < 10]
    print(f"{len(accepted)} accepted, p99 {p99(accepted) * 1000:.0f} ms; {len(refused)} refused, {len(at_once)} in "
          f"< 10 ms by the server (median {statistics.median(server_ms):.2f} ms; round trip median "
          f"{statistics.median(r[1] for r in refused) * 1000:.1f} ms)")
    # Without the estimate every refusal waits out the 0.1 s budget (none is at once); with it 79–91 %
    # are, by how busy the machine is (the 40 callers share the server's loop). "Most" is the claim.
    assert len(at_once) > 0.5 * len(refused), "most refusals come at once, from the estimate, not the budget"


async def test_rest_answers_a_refusal_429_with_retry_after(ledger):
    url, a, b = ledger
    async with logs_server(url, heavy_queue_per_tenant=0) as (server, stub):
        for _ in range(2):
            await integrity(a, stub, SHORT)
        held = asyncio.ensure_future(integrity(a, stub, SHORT))
        await until(lambda: server.admission.heavy.running_of(a) == 1)
        app = create_app({"aos.logs.v1.AuditLedgerService": f"127.0.0.1:{server.port}"})
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                headers={"Authorization": f"Bearer {token(a)}"}) as http:
            reply = await http.get("/api/v1/logs/audit/integrity", params={"max_entries": SHORT})
        await held
    assert reply.status_code == 429, reply.text
    assert reply.headers["Retry-After"].isdigit() and int(reply.headers["Retry-After"]) >= 1
    body = reply.json()
    kinds = {d["@type"].rsplit("/", 1)[-1]: d for d in body["details"]}
    assert kinds["google.rpc.ErrorInfo"]["reason"] == "TENANT_HEAVY_LIMIT"
    assert "google.rpc.RetryInfo" in kinds and kinds["google.rpc.QuotaFailure"]["violations"][0]["subject"] == a


async def test_a_call_its_gate_refuses_at_once_is_refused_before_its_request_is_read(ledger):
    """Issue #19 (refusals in < 10 ms as the caller sees them): a call its gate refuses at once —
    here A's heavy share taken and no heavy call of A may wait — is answered TENANT_HEAVY_LIMIT
    (RetryInfo, QuotaFailure) without its request being read: a client that sends the call's
    headers and never its message gets the refusal at once. Before, gRPC's asyncio server waited
    for the message (one more trip through its completion queue and the loop) and the call
    wrapper parsed it before the gate said no: this client would wait out its deadline
    (DEADLINE_EXCEEDED). The token and scope are still checked first (a bad token is
    UNAUTHENTICATED, a missing scope PERMISSION_DENIED), B's call is served, and the refusal is
    counted under the method's own kind (grpc_type unary)."""
    url, a, b = ledger
    method = "/aos.logs.v1.AuditLedgerService/GetIntegrityReport"
    labels = {"grpc_type": "unary", "grpc_service": "aos.logs.v1.AuditLedgerService",
              "grpc_method": "GetIntegrityReport", "grpc_code": "ResourceExhausted"}
    async with logs_server(url, heavy_queue_per_tenant=0) as (server, stub):
        for _ in range(2):  # service times for the retry delay
            await integrity(a, stub, SHORT)
        held = asyncio.ensure_future(integrity(a, stub))
        await until(lambda: server.admission.heavy.running_of(a) == 1)
        counted = REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0
        never = asyncio.Event()

        async def unsent():
            await never.wait()
            yield b""  # pragma: no cover - never sent

        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as raw:
            opened = raw.stream_unary(method)  # no (de)serializers: the request is never sent at all
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await opened(unsent(), metadata=auth(a), timeout=3)
            took = time.monotonic() - started
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
            found = details(refused.value)
            assert found[error_details_pb2.ErrorInfo].reason == "TENANT_HEAVY_LIMIT"
            assert found[error_details_pb2.RetryInfo].retry_delay.ToNanoseconds() > 0
            assert found[error_details_pb2.QuotaFailure].violations[0].subject == a
            assert took < 1.0, f"refused after {took:.3f} s: the server waited for the request"
            # The access checks come first: a bad token, a token without the scope.
            for metadata, code in (((("authorization", "Bearer not-a-token"),), grpc.StatusCode.UNAUTHENTICATED),
                                   ((("authorization", f"Bearer {token(a, scopes=('overview.read',))}"),),
                                    grpc.StatusCode.PERMISSION_DENIED)):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.GetIntegrityReport(pb.GetIntegrityReportRequest(max_entries=SHORT),
                                                  metadata=metadata, timeout=5)
                assert refused.value.code() == code, refused.value
        assert REGISTRY.get_sample_value("grpc_server_handled_total", labels) == counted + 1
        assert (await integrity(b, stub, SHORT)).head.seq > 0  # B's share is free
        await held


async def test_a_saturated_process_refuses_before_any_other_work(ledger):
    """AOS_SHED_LAG_S: with the event loop late and every light slot taken, a call is refused at
    once, before its token is checked (a bad token gets the same refusal), with RetryInfo; with a
    free slot, or a loop on time, the same calls are answered as usual. The lag is set by the
    test (what LoopLag measures of a saturated loop), so the mechanism is tried deterministically;
    the figure under a real 2x surge is bench/soak.py's."""
    url, a, b = ledger
    calls, logger = CallLog(), logging.getLogger("aos.server")
    level = logger.level
    logger.addHandler(calls)
    logger.setLevel(logging.INFO)
    bad_token = (("authorization", "Bearer not-a-token"),)

    async def audit(metadata):
        return await stub.ListAuditEntries(pb.ListAuditEntriesRequest(page_size=5), metadata=metadata, timeout=5)

    try:
        async with logs_server(url, max_inflight=2, shed_lag_s=0.01) as (server, stub):
            admission = server.admission
            admission.lag.stop()
            held = [await admission.light.acquire("someone", None) for _ in range(2)]
            admission.lag.lag_s = 0.2
            refusals_before = REGISTRY.get_sample_value("aos_refusal_seconds_count", {"service": "logs"}) or 0
            for metadata in (auth(b), bad_token):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await audit(metadata)
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
                found = details(refused.value)
                assert found[error_details_pb2.ErrorInfo].reason == "SERVER_OVERLOADED"
                assert found[error_details_pb2.RetryInfo].retry_delay.ToNanoseconds() / 1e9 >= 0.2
                assert "AOS_SHED_LAG_S=0.01" in found[error_details_pb2.QuotaFailure].violations[0].description
            # Nor is the request read: bytes no message parses from are refused the same (unshed, the
            # same bytes fail in the request's parsing, below).
            raw = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
            garbage = raw.unary_unary("/aos.logs.v1.AuditLedgerService/ListAuditEntries")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await garbage(b"\xff\xff\xff", metadata=auth(b), timeout=5)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
            # Each refusal timed by the server's clock (aos_refusal_seconds, what bench/soak.py reads).
            assert REGISTRY.get_sample_value("aos_refusal_seconds_count", {"service": "logs"}) == refusals_before + 3
            admission.lag.lag_s = 0.0  # on time, gate still full: the call is looked at (and its token refused)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await audit(bad_token)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await garbage(b"\xff\xff\xff", metadata=auth(b), timeout=5)
            assert refused.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED, "read, it is not a refusal"
            await raw.close()
            for permit in held:
                permit.release()
            admission.lag.lag_s = 0.2  # late, but a slot is free: it starts at once
            assert (await audit(auth(b))).entries
    finally:
        logger.removeHandler(calls)
        logger.setLevel(level)
    shed_ms = [r.ms for r in calls.calls if getattr(r, "reason", None) == "SERVER_OVERLOADED"]  # type: ignore[attr-defined]
    assert len(shed_ms) == 3 and max(shed_ms) < 10, shed_ms


BURST = 24                  # calls sent at once while the server's event loop is held
HOLD_S = 1.5                # how long the test holds the loop (a saturated process)


@pytest.mark.parametrize("bound", [True, False], ids=["bounded", "unbounded-must-fail"])
async def test_grpc_core_refuses_calls_beyond_the_pending_bound_without_the_process(ledger, bound):
    """AOS_MAX_PENDING_CALLS (aos_runtime/server.py PendingCalls): while the process's event loop
    is busy, calls wait in gRPC's core, where no Python sees them. Bounded, the core refuses the
    ones beyond the bound at once — while the loop is still held, so without the process — as
    CANCELLED; the calls within it are answered once the loop is free. Unbounded (0, gRPC's
    default of thousands), every call waits out the whole hold: the same assertion fails.
    The burst comes from threads with blocking stubs: the test's own loop is the server's, held."""
    url, a, b = ledger
    limits = {"max_pending_calls": 2, "pending_calls_early_drop": 0} if bound else {"max_pending_calls": 0}
    async with logs_server(url, **limits) as (server, stub):
        await stub.ListAuditEntries(pb.ListAuditEntriesRequest(page_size=5), metadata=auth(b), timeout=5)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        grpc.channel_ready_future(channel).result(timeout=5)
        blocking = pb_grpc.AuditLedgerServiceStub(channel)

        def call() -> tuple[str, float, float]:
            started = time.monotonic()
            try:
                blocking.ListAuditEntries(pb.ListAuditEntriesRequest(page_size=5), metadata=auth(b), timeout=10)
                return "OK", started, time.monotonic()
            except grpc.RpcError as err:
                return err.code().name, started, time.monotonic()

        with ThreadPoolExecutor(BURST) as pool:
            futures = [pool.submit(call) for _ in range(BURST)]
            time.sleep(HOLD_S)  # noqa: ASYNC251 - holds the server's loop on purpose
            released = time.monotonic()
            outcomes = [await asyncio.wrap_future(f) for f in futures]
        channel.close()
    # Answered before the loop was released: by gRPC's core alone.
    refused_early = [ended - started for code, started, ended in outcomes if code == "CANCELLED" and ended < released]
    figures = (f"{len(refused_early)} of {BURST} refused while the loop was held (slowest "
               f"{max(refused_early, default=0) * 1000:.0f} ms); {[(c, round(e - s, 3)) for c, s, e in outcomes]}")
    print(figures)
    assert "OK" in {code for code, _, _ in outcomes}, figures  # the calls within the bound are served
    assert {code for code, _, _ in outcomes} <= {"OK", "CANCELLED"}, figures
    held = len(refused_early) >= BURST - 4
    if bound:
        assert held, figures
    else:
        assert not held, f"unbounded, every call should have waited for the loop: {figures}"


def _cpu_s(process) -> float:
    times = process.cpu_times()
    return times.user + times.system


@pytest.mark.parametrize("processes", [True, False], ids=["heavy-processes", "threads-must-fail"])
async def test_a_heavy_calls_cpu_runs_apart_from_the_light_calls_process(ledger, processes):
    """AOS_HEAVY_PROCESSES (aos_runtime.offload): the integrity walks' hashing — CPU-bound Python —
    runs in worker processes of the service at nice +10, not in the interpreter that serves the
    light calls. Measured as CPU time: over a few walks, the workers (children of this process,
    which hosts the server) spend more of it than this process; the walks answer as before. With
    the processes off (the heavy pool's threads) the same measure fails: the walks' CPU is this
    process's own."""
    psutil = pytest.importorskip("psutil")
    url, a, b = ledger
    me = psutil.Process()
    # Workers are not recycled here (AOS_HEAVY_WORKER_RECYCLE_MIB=0): a walk of LEDGER entries grows a
    # worker past the default bound, and the CPU of a worker replaced meanwhile could not be read.
    async with logs_server(url, heavy_processes=processes, heavy_worker_recycle_mib=0) as (server, stub):
        first = await integrity(a, stub)  # starts the workers, if any
        assert first.entries_checked == LEDGER
        workers = server.db.offload.pids() if server.db.offload is not None else []

        def children_s() -> float:
            return sum(_cpu_s(psutil.Process(pid)) for pid in workers)

        own, others = _cpu_s(me), children_s()
        for _ in range(3):
            assert (await integrity(a, stub)).entries_checked == LEDGER
        own, others = _cpu_s(me) - own, children_s() - others
        niceness = [psutil.Process(pid).nice() for pid in workers]
    figures = (f"3 walks of {LEDGER} entries: the server's process {own:.2f} s of CPU, its heavy worker processes "
               f"{others:.2f} s (pids {workers}, nice {niceness})")
    print(figures)
    apart = bool(workers) and others > own and all(n >= 10 for n in niceness)
    if processes:
        assert apart, figures
    else:
        assert not apart, f"in threads the walks' CPU should have been the server's process's: {figures}"


async def test_a_heavy_workers_first_job_takes_as_long_as_its_later_ones(ledger):
    """The heavy worker processes warm once the server has started, in the background — their code
    imported (the fork server's preload), their connection opened and checked — and a heavy call
    that comes meanwhile waits for them before its turn in the heavy gate; so a worker's first job
    is timed like its later ones, in the service (``HeavyProcesses.durations``) and in the heavy
    gate (the service times its wait estimates and refusals are made of): no start-up in either.
    Before the warm-up, the first job of each worker took ~1.0-1.25 s against ~0.2 s after on a
    quiet machine, 8-12 s against 0.9-1.4 s at load 10 (bench/heavy_warmup.py), and its start-up
    went into the gate's estimates. The first call here comes at once after the start, while the
    workers may still warm (``warm_at_start`` says whether they were)."""
    url, a, b = ledger
    # Workers are not recycled here (AOS_HEAVY_WORKER_RECYCLE_MIB=0): a replacement's warm-up report is
    # None until it is warm, and a replaced worker's next job is another worker's first.
    async with logs_server(url, heavy_worker_recycle_mib=0) as (server, stub):
        offload = server.db.offload
        assert offload is not None
        warm_at_start = offload.warm()
        for _ in range(8):  # the workers take jobs in turn: the first two are each one's first
            await integrity(a, stub, SHORT)
        reports = offload.warm_reports()
        assert len(reports) == 2 and all(r is not None and r["connected"] for r in reports), reports
        jobs = list(offload.durations)
        gate = list(server.admission.heavy._service_s)
    later = statistics.median(jobs[2:])
    gate_later = statistics.median(gate[2:])
    figures = (f"first jobs {[round(j * 1000) for j in jobs[:2]]} ms, later ones' median {later * 1000:.0f} ms; "
               f"in the gate {[round(j * 1000) for j in gate[:2]]} ms, later {gate_later * 1000:.0f} ms; "
               f"warm at start: {warm_at_start}; warm-up {reports}")
    print(figures)
    assert max(jobs[:2]) < 2.5 * later, figures
    assert max(gate[:2]) < 2.5 * gate_later, figures


async def test_a_cancelled_heavy_call_interrupts_its_worker_which_serves_the_next(ledger):
    """A walk whose caller's deadline passes is interrupted in its worker process (the query
    cancelled, the transaction rolled back): DEADLINE_EXCEEDED, and the same workers (none
    replaced) answer the next walks in full."""
    url, a, b = ledger
    # Workers are not recycled here (AOS_HEAVY_WORKER_RECYCLE_MIB=0): a walk of LEDGER entries after a
    # first SHORT one may grow a worker past the bound, and its replacement would be no sign of the cancel.
    async with logs_server(url, heavy_processes=True, heavy_worker_recycle_mib=0) as (server, stub):
        await integrity(a, stub, SHORT)
        workers = server.db.offload.pids()
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await integrity(a, stub, LEDGER, timeout=0.05)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        for _ in range(3):
            assert (await integrity(a, stub)).entries_checked == LEDGER
        assert sorted(server.db.offload.pids()) == sorted(workers)
