"""The admission gate alone (aos_runtime.admission): shares, round-robin, budgets, early refusal.

The same gate behind real servers, and what it does for another tenant's latency, is in
tests/reliability/test_fairness.py."""
from __future__ import annotations

import asyncio
import dataclasses
import time

import grpc
import pytest
from google.rpc import error_details_pb2

from aos_runtime import admission, errors
from aos_runtime.admission import (
    MIN_SAMPLES,
    AdaptiveLimit,
    Admission,
    FairGate,
    InflightBytes,
    Limits,
    LoopLag,
)
from aos_runtime.faults import DeadlinePassed, Overloaded


def gate(concurrency=2, per_tenant=1, queue_per_tenant=8, budget_s=5.0) -> FairGate:
    return FairGate(Limits("heavy", concurrency, per_tenant, queue_per_tenant, budget_s, "AOS_HEAVY_CONCURRENCY"))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_tenant_gets_its_share_and_no_more():
    g = gate(concurrency=3, per_tenant=2)
    a1, a2 = await g.acquire("a", None), await g.acquire("a", None)
    third = asyncio.ensure_future(g.acquire("a", None))
    await settle()
    assert not third.done() and g.running_of("a") == 2 and g.waiting_of("a") == 1
    b = await asyncio.wait_for(g.acquire("b", None), 0.1)  # a free slot, another tenant: at once
    a1.release()
    a3 = await asyncio.wait_for(third, 0.1)
    assert g.running == 3
    for permit in (a2, a3, b):
        permit.release()
    assert g.running == 0


async def test_a_gate_is_quiet_only_once_no_call_has_run_for_the_interval():
    # The heap trim closes the light pool's connections only then (aos_runtime.server).
    g = gate()
    permit = await g.acquire("a", None)
    assert not g.quiet_for(0)            # a call runs
    permit.release()
    assert g.quiet_for(0) and not g.quiet_for(0.2)
    await asyncio.sleep(0.25)
    assert g.quiet_for(0.2)


async def test_waiting_tenants_are_served_round_robin():
    """A has six calls waiting when B's one arrives: B starts after at most one more of A's."""
    g = gate(concurrency=1, per_tenant=1)
    first = await g.acquire("a", None)
    order: list[str] = []

    async def call(tenant: str, n: int) -> None:
        permit = await g.acquire(tenant, None)
        order.append(f"{tenant}{n}")
        await asyncio.sleep(0)
        permit.release()

    tasks = [asyncio.ensure_future(call("a", n)) for n in range(6)]
    await settle()
    tasks += [asyncio.ensure_future(call("b", 0)), asyncio.ensure_future(call("c", 0))]
    await settle()
    first.release()
    await asyncio.gather(*tasks)
    assert order == ["a0", "b0", "c0", "a1", "a2", "a3", "a4", "a5"]


async def test_a_full_tenant_queue_is_refused_at_once_and_says_which_limit():
    g = gate(concurrency=4, per_tenant=1, queue_per_tenant=2)
    held = await g.acquire("a", None)
    waiting = [asyncio.ensure_future(g.acquire("a", None)) for _ in range(2)]
    await settle()
    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        await g.acquire("a", None)
    assert time.monotonic() - started < 0.01
    assert refused.value.tenant_limit and "AOS_HEAVY_QUEUE_PER_TENANT=2" in refused.value.limit
    assert refused.value.tenant == "a" and refused.value.retry_after_s > 0
    # Another tenant is not held back by a's queue.
    (await asyncio.wait_for(g.acquire("b", None), 0.1)).release()
    held.release()
    for waiter in waiting:  # one at a time: a's share is one
        (await waiter).release()


async def test_a_call_that_cannot_start_within_its_budget_is_refused_when_it_passes():
    g = gate(concurrency=1, per_tenant=None, budget_s=0.2)
    held = await g.acquire("a", None)
    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        await g.acquire("b", None)
    assert 0.19 < time.monotonic() - started < 0.5
    assert not refused.value.tenant_limit and "AOS_HEAVY_CONCURRENCY=1" in refused.value.limit
    assert g.waiting_of("b") == 0, "a refused call leaves the queue"
    # Its own deadline, when sooner, is its budget.
    started = time.monotonic()
    with pytest.raises(Overloaded):
        await g.acquire("b", time.monotonic() + 0.05)
    assert time.monotonic() - started < 0.15
    held.release()


async def test_an_expired_call_is_past_its_deadline_not_overloaded():
    """A call whose deadline passed before it reached the gate (grpc-timeout 1n) is
    DEADLINE_EXCEEDED, on an idle gate too — never refused as an overload."""
    g = gate(concurrency=1, per_tenant=None)
    with pytest.raises(DeadlinePassed, match="before it could start"):
        await g.acquire("a", time.monotonic() - 0.001)
    assert errors.from_exception(DeadlinePassed("it could start"), deadline_passed=True).code == \
        grpc.StatusCode.DEADLINE_EXCEEDED
    (await g.acquire("a", time.monotonic() + 5)).release()


async def test_recent_service_times_refuse_at_once_what_would_wait_too_long():
    """With calls taking ~0.1 s and one slot, the third caller in line would wait ~0.2 s:
    with a budget of 0.15 s it is refused at once, its RetryInfo the estimated wait."""
    g = gate(concurrency=1, per_tenant=None, budget_s=0.15)
    for _ in range(MIN_SAMPLES):
        permit = await g.acquire("a", None)
        await asyncio.sleep(0.1)
        permit.release()
    held = await g.acquire("a", None)
    second = asyncio.ensure_future(g.acquire("b", None))  # ~0.1 s: within its budget, waits
    await settle()
    assert not second.done()
    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        await g.acquire("c", None)
    assert time.monotonic() - started < 0.01
    assert 0.15 < refused.value.retry_after_s < 0.4
    held.release()
    (await second).release()


@pytest.mark.parametrize("robust", [True, False], ids=["trimmed-mean", "plain-mean-must-fail"])
async def test_one_outlying_service_time_does_not_refuse_the_calls_after_it(robust, monkeypatch):
    """Calls take ~0.05 s, but one of the five the gate learned from took 0.5 s (a worker's first
    job, a stalled machine). With one slot busy and a budget of 0.1 s, the next caller would wait
    ~0.05 s: admitted to wait, and its retry delay is not the outlier's. With the plain mean
    (0.14 s) the same caller is refused at once — the same assertion fails."""
    if not robust:
        monkeypatch.setattr(admission, "trimmed_mean", lambda samples: sum(samples) / len(samples))
    g = gate(concurrency=1, per_tenant=None, budget_s=0.1)
    for took in (0.5, 0.05, 0.05, 0.05, 0.05):
        permit = await g.acquire("a", None, SLOW)
        await asyncio.sleep(took)
        permit.release()
    assert g.service_estimate_s(SLOW) == pytest.approx(0.05, abs=0.04), "the kind's p90: robust already"
    held = await g.acquire("a", None, SLOW)
    waiter = asyncio.ensure_future(g.acquire("b", None, SLOW))
    await settle()
    figures = f"mean service time {g.mean_service_s():.3f} s, wait estimate {g.estimated_wait_s('c'):.3f} s"
    if robust:
        assert not waiter.done(), f"refused at once: {figures}"
        assert g.mean_service_s() == pytest.approx(0.05, abs=0.04), figures
    else:
        assert waiter.done() and isinstance(waiter.exception(), Overloaded), figures
    held.release()
    if robust:
        (await waiter).release()
    assert g.running == 0


async def test_a_cancelled_waiter_gives_its_place_and_a_granted_one_its_slot():
    g = gate(concurrency=1, per_tenant=None)
    held = await g.acquire("a", None)
    waiter = asyncio.ensure_future(g.acquire("b", None))
    await settle()
    waiter.cancel()
    await settle()
    assert g.waiting_of("b") == 0
    held.release()
    assert g.running == 0
    permit = await g.acquire("c", None)
    permit.release()
    permit.release()  # idempotent
    assert g.running == 0


async def test_a_saturated_loop_counts_against_the_budget():
    """Calls that waited in gRPC's queue while the event loop lagged have that much less budget:
    past it they are refused at once, even with a slot free, until the lag drains."""
    lag = LoopLag()
    g = FairGate(Limits("light", 4, None, None, 0.25, "AOS_MAX_INFLIGHT"), lag)
    lag.lag_s = 0.3
    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        await g.acquire("a", None)
    assert time.monotonic() - started < 0.01 and refused.value.retry_after_s >= 0.3
    lag.lag_s = 0.01
    (await g.acquire("a", None)).release()


def block(seconds: float) -> None:
    """Keeps the event loop from running anything for ``seconds`` (a saturated process does)."""
    time.sleep(seconds)


async def test_the_loop_lag_is_measured():
    """A loop late on every timer is saturated; one long pause is not."""
    lag = LoopLag()
    lag.start()
    await asyncio.sleep(0.06)
    block(0.2)  # one pause
    await asyncio.sleep(0.001)
    assert lag.lag_s < 0.05
    for _ in range(LoopLag.TICKS + 1):  # every timer late: saturated
        await asyncio.sleep(0.001)
        block(0.08)
    assert lag.lag_s > 0.05
    await asyncio.sleep(0.05)  # and on time again
    assert lag.lag_s < 0.02
    lag.stop()


async def test_a_saturated_process_sheds_a_call_that_could_not_start_at_once():
    """Admission.shed: refused before anything else only when the loop is late *and* the
    call's gate is full — a late loop with a free slot (a busy machine) admits as usual."""
    lag = LoopLag()
    admission = Admission.of(max_inflight=2, queue_budget_s=0.25, heavy_isolation=True, heavy_concurrency=1,
                             heavy_per_tenant=1, heavy_queue_per_tenant=8, heavy_queue_budget_s=10,
                             shed_lag_s=0.01)
    admission = dataclasses.replace(admission, lag=lag)
    assert admission.shed(heavy=False) is None
    permits = [await admission.light.acquire("a", None), await admission.light.acquire("b", None)]
    assert admission.shed(heavy=False) is None, "the loop is on time: a full gate queues, it does not shed"
    lag.lag_s = 0.05
    refusal = admission.shed(heavy=False)
    assert isinstance(refusal, Overloaded) and not refusal.tenant_limit
    assert "AOS_MAX_INFLIGHT=2" in refusal.limit and "AOS_SHED_LAG_S=0.01" in refusal.limit
    assert refusal.retry_after_s >= 0.05  # at least the backlog the loop has to work off
    error = errors.from_exception(refusal, deadline_passed=False)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_OVERLOADED")
    assert admission.shed(heavy=True) is None, "the heavy gate has a free slot"
    permits[0].release()
    assert admission.shed(heavy=False) is None, "a free light slot: the call starts at once, late loop or not"
    lag.lag_s = 0.009
    permits.append(await admission.light.acquire("a", None))
    assert admission.shed(heavy=False) is None, "below AOS_SHED_LAG_S"
    assert dataclasses.replace(admission, shed_lag_s=0.0, lag=LoopLag()).shed(heavy=False) is None, "0: off"
    for permit in permits:
        permit.release()


async def test_a_full_gate_whose_queue_outlasts_the_budget_sheds_with_the_loop_on_time():
    """Admission.shed without a late loop: once the least any tenant would wait (the calls
    beyond the concurrency and one turn of each waiting tenant, at the recent service time) is
    longer than the gate's budget, a new call is refused before its token or request is read
    (SERVER_OVERLOADED, RetryInfo that wait); while the queue is within the budget it is not."""
    lag = LoopLag()
    admission = dataclasses.replace(
        Admission.of(max_inflight=2, queue_budget_s=0.25, heavy_isolation=True, heavy_concurrency=1,
                     heavy_per_tenant=1, heavy_queue_per_tenant=8, heavy_queue_budget_s=10, shed_lag_s=0.01),
        lag=lag)
    light = admission.light
    for _ in range(MIN_SAMPLES):  # recent light calls took ~0.2 s
        permit = await light.acquire("a", None)
        await asyncio.sleep(0.2)
        permit.release()
    permits = [await light.acquire("a", None), await light.acquire("b", None)]
    assert light.least_wait_s() == pytest.approx(0.1, rel=0.3)
    assert admission.shed(heavy=False) is None, "~0.1 s to wait is within the 0.25 s budget"
    waiting = [asyncio.ensure_future(light.acquire(t, None)) for t in ("c", "d")]
    await settle()
    assert not any(w.done() for w in waiting), "each within its budget: they wait"
    refusal = admission.shed(heavy=False)
    assert isinstance(refusal, Overloaded) and not refusal.tenant_limit
    assert refusal.retry_after_s > 0.25 and "AOS_MAX_INFLIGHT=2" in refusal.limit
    error = errors.from_exception(refusal, deadline_passed=False)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_OVERLOADED")
    assert dataclasses.replace(admission, shed_lag_s=0.0).shed(heavy=False) is None, "AOS_SHED_LAG_S=0: off"
    for permit in permits:
        permit.release()
    for w in waiting:
        (await w).release()
    assert admission.shed(heavy=False) is None, "the gate drained: nothing is shed"


# --- admission by predicted completion (AOS_ACCEPTED_TARGET_S) ---------------------------------
SLOW = "/aos.logs.v1.AuditLedgerService/GetIntegrityReport"


async def learn(g: FairGate, kind: str, seconds: float, n: int = MIN_SAMPLES) -> None:
    """``n`` calls of ``kind`` taking ``seconds`` each: the gate's service times for it."""
    for _ in range(n):
        permit = await g.acquire("warm", None, kind)
        await asyncio.sleep(seconds)
        permit.release()


@pytest.mark.parametrize("target_s", [0.4, 0.0], ids=["target", "off-must-fail"])
async def test_a_heavy_queue_admits_only_calls_that_end_within_the_target(target_s):
    """One tenant's heavy calls, one at a time, each ~0.1 s; eight more arrive while one runs.
    With AOS_ACCEPTED_TARGET_S=0.4 those whose wait + 0.1 s would end past 0.4 s are refused at
    once (RetryInfo: when the queue ahead is done) and every accepted one ends within the target;
    with it off (0) all eight wait, up to a budget of 10 s, and the last ones end late."""
    g = FairGate(Limits("heavy", 2, 1, 8, 10.0, "AOS_HEAVY_CONCURRENCY", target_s=target_s))
    await learn(g, SLOW, 0.1)
    assert g.service_estimate_s(SLOW) == pytest.approx(0.1, abs=0.05)
    ended: list[float] = []
    refused: list[tuple[float, Overloaded]] = []

    async def call() -> None:
        arrived = time.monotonic()
        try:
            permit = await g.acquire("a", None, SLOW)
        except Overloaded as refusal:
            refused.append((time.monotonic() - arrived, refusal))
            return
        await asyncio.sleep(0.1)
        permit.release()
        ended.append(time.monotonic() - arrived)

    calls = [asyncio.ensure_future(call())]
    await settle()
    assert g.running_of("a") == 1
    calls += [asyncio.ensure_future(call()) for _ in range(8)]
    await asyncio.gather(*calls)
    figures = (f"accepted ended after {sorted(round(e, 3) for e in ended)} s; refused after "
               f"{sorted(round(r, 4) for r, _ in refused)} s")
    print(figures)
    late = [e for e in ended if e > 0.4 * 1.5]  # slack for a loaded machine's timers
    if not target_s:
        assert late and not refused, f"with the target off the queue should end calls late: {figures}"
        return
    assert not late, figures
    assert 2 <= len(ended) <= 5 and len(refused) >= 4, figures  # ~3 end in time: 0.1 running + 0.1 each
    assert max(r for r, _ in refused) < 0.01, f"refused at once: {figures}"
    refusal = refused[0][1]
    assert refusal.cause == "predicted_late" and refusal.tenant_limit and "AOS_ACCEPTED_TARGET_S=0.4" in refusal.message
    error = errors.from_exception(refusal, deadline_passed=False)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TENANT_HEAVY_LIMIT")
    (retry,) = [d for d in error.details if isinstance(d, error_details_pb2.RetryInfo)]
    assert retry.retry_delay.ToMilliseconds() >= 200, "after the calls ahead of it, not a constant"
    assert [d for d in error.details if isinstance(d, error_details_pb2.QuotaFailure)]
    assert g.running == 0 and g.waiting_total() == 0


async def test_a_call_that_can_start_at_once_starts_however_long_its_kind_takes():
    """The target bounds what queueing adds, not the work: a kind slower than the target still
    runs when a slot is free; only its waiting is refused. Without samples no prediction."""
    g = FairGate(Limits("heavy", 2, 1, 8, 10.0, "AOS_HEAVY_CONCURRENCY", target_s=0.05))
    await learn(g, SLOW, 0.06)
    first = await asyncio.wait_for(g.acquire("a", None, SLOW), 0.1)  # free: starts
    with pytest.raises(Overloaded) as late:
        await g.acquire("a", None, SLOW)                             # must wait: would end late
    assert late.value.cause == "predicted_late"
    unknown = asyncio.ensure_future(g.acquire("a", None, "/never/Seen"))  # no estimate: waits as before
    await settle()
    assert g.waiting_of("a") == 1
    first.release()
    (await unknown).release()


async def test_a_deadline_sooner_than_the_target_is_the_bound_and_a_waiter_gives_up_in_time():
    """With a deadline 0.15 s away and ~0.1 s to wait + ~0.1 s to run, the call is refused at
    once (not after 0.15 s); with a deadline 0.25 s away it waits, but only as long as it could
    still end by it (0.25 − 0.1 s), not its whole budget."""
    g = FairGate(Limits("heavy", 2, 1, 8, 10.0, "AOS_HEAVY_CONCURRENCY", target_s=5.0))
    await learn(g, SLOW, 0.1)
    held = await g.acquire("a", None, SLOW)
    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        await g.acquire("a", time.monotonic() + 0.15, SLOW)
    assert time.monotonic() - started < 0.01 and "its deadline" in refused.value.message
    started = time.monotonic()
    with pytest.raises(Overloaded) as gave_up:  # the held call never ends: it gives up at ~0.15 s
        await g.acquire("a", time.monotonic() + 0.25, SLOW)
    assert 0.1 < time.monotonic() - started < 0.22 and gave_up.value.cause == "budget_passed"
    held.release()


async def test_a_full_gate_sheds_a_call_predicted_to_end_past_the_target_before_its_token_is_read():
    """Admission.shed with the loop on time: a full light gate, recent calls of the method ~0.3 s,
    target 0.25 s: refused before any other work (SERVER_OVERLOADED, RetryInfo); another method
    with no samples, or the target off, is not shed."""
    admission = dataclasses.replace(
        Admission.of(max_inflight=2, queue_budget_s=0.25, heavy_isolation=True, heavy_concurrency=1,
                     heavy_per_tenant=1, heavy_queue_per_tenant=8, heavy_queue_budget_s=10, shed_lag_s=0.01,
                     accepted_target_s=0.25),
        lag=LoopLag())
    kind = "/aos.logs.v1.AuditLedgerService/ListAuditEntries"
    await learn(admission.light, kind, 0.3)
    permits = [await admission.light.acquire("a", None, kind), await admission.light.acquire("b", None, kind)]
    refusal = admission.shed(heavy=False, kind=kind)
    assert isinstance(refusal, Overloaded) and refusal.cause == "shed_predicted_late", refusal
    error = errors.from_exception(refusal, deadline_passed=False)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_OVERLOADED")
    assert [d for d in error.details if isinstance(d, error_details_pb2.RetryInfo)]
    assert admission.shed(heavy=False, kind="/other/Method") is None
    admission.light.limits = dataclasses.replace(admission.light.limits, target_s=0.0)
    assert admission.shed(heavy=False, kind=kind) is None, "AOS_ACCEPTED_TARGET_S=0: off"
    for permit in permits:
        permit.release()


async def test_refusal_now_is_what_acquire_would_refuse_at_once_and_changes_nothing():
    """FairGate.refusal_now (asked by the call wrapper before a call's request is read): None while
    the gate would start or queue the call, the very refusal acquire raises at once when its tenant's
    queue is full — and asking changes no count. may_refuse is False only while every call would
    start at once."""
    g = gate(concurrency=2, per_tenant=1, queue_per_tenant=1)
    assert not g.may_refuse() and g.refusal_now("a") is None
    running = await g.acquire("a", None)
    assert g.may_refuse(), "a tenant's share is taken: its next call could be refused"
    assert g.refusal_now("a") is None and g.refusal_now("b") is None  # a would wait, b starts
    waiting = asyncio.ensure_future(g.acquire("a", None))
    await settle()
    refusal = g.refusal_now("a")
    assert isinstance(refusal, Overloaded) and refusal.cause == "queue_full" and refusal.tenant_limit
    assert (g.running, g.waiting_of("a")) == (1, 1), "asking changed nothing"
    with pytest.raises(Overloaded) as raised:
        await g.acquire("a", None)
    assert (raised.value.cause, str(raised.value)) == (refusal.cause, str(refusal))
    assert g.refusal_now("b") is None
    running.release()
    (await waiting).release()
    assert not g.may_refuse()


# --- the adaptive in-flight limit (AOS_ADAPTIVE_INFLIGHT_MIN) -----------------------------------
def test_the_adaptive_limit_shrinks_while_calls_queue_and_grows_back_when_they_do_not():
    """Two methods of very different cost, each at its baseline: the limit stays at the maximum.
    Both at 4x their baseline (queueing in the process): it falls, ~10 % per window. Back at the
    baseline and using the limit: it grows back; not using it (few in flight): it stays."""
    limit = AdaptiveLimit(minimum=4, maximum=32)

    def window(factor: float, inflight: int, n: int = AdaptiveLimit.WINDOW) -> None:
        for i in range(n):
            fast, slow = (0.005, "/s/Fast"), (0.3, "/s/Slow")
            took, kind = fast if i % 2 else slow
            limit.sample(kind, took * factor, inflight)

    window(1.0, 32, n=4 * AdaptiveLimit.WINDOW)
    assert limit.current == 32
    shrunk = []
    for _ in range(40):  # 1,000 calls
        window(4.0, limit.current)
        shrunk.append(limit.current)
    assert shrunk[-1] <= 10 and shrunk == sorted(shrunk, reverse=True), shrunk
    low = limit.current
    for _ in range(30):
        window(1.0, 1)  # fast again, but one call in flight: no evidence more would be fine
    assert limit.current == low
    grown = []
    for _ in range(30):
        window(1.0, limit.current)
        grown.append(limit.current)
    assert grown[-1] == 32 and grown == sorted(grown), grown


async def test_a_gate_with_an_adaptive_limit_runs_no_more_than_it_and_names_it():
    g = FairGate(Limits("light", 8, None, None, 0.05, "AOS_MAX_INFLIGHT"), adaptive=AdaptiveLimit(2, 8))
    g.adaptive.limit = 2.0  # as if latency had pushed it down
    permits = [await g.acquire("a", None), await g.acquire("b", None)]
    with pytest.raises(Overloaded) as refused:
        await g.acquire("c", None)
    assert "adaptive 2 of AOS_MAX_INFLIGHT=8" in refused.value.limit
    g.adaptive.limit = 3.0
    (await asyncio.wait_for(g.acquire("c", None), 0.1)).release()
    for permit in permits:
        permit.release()


# --- in-flight bytes of ingest requests (AOS_INGEST_INFLIGHT_BYTES*) ------------------------
def test_inflight_bytes_refuse_a_request_that_would_pass_a_bound_and_say_when_to_retry():
    g = InflightBytes(limit=1000, per_tenant=600)
    a = g.acquire("a", 500)
    with pytest.raises(Overloaded) as own:          # a's own share: 500 + 200 > 600
        g.acquire("a", 200)
    assert own.value.tenant_limit and "AOS_INGEST_INFLIGHT_BYTES_PER_TENANT=600" in own.value.limit
    b = g.acquire("b", 450)                          # another tenant still gets in: 950 ≤ 1000
    with pytest.raises(Overloaded) as full:          # the process's bound: 950 + 100 > 1000
        g.acquire("c", 100)
    assert not full.value.tenant_limit and "AOS_INGEST_INFLIGHT_BYTES=1000" in full.value.limit
    assert g.refused == 2 and g.held == 950
    error = errors.from_exception(full.value, deadline_passed=False)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "INGEST_BYTES_LIMIT")
    retry = [d for d in error.details if isinstance(d, error_details_pb2.RetryInfo)]
    assert retry and retry[0].retry_delay.ToMilliseconds() >= 50
    # The OTLP/gRPC exporters read RetryInfo from this trailing key only (not the Status details).
    assert dict(error.to_status().trailing_metadata)[errors.RETRY_INFO_KEY] == retry[0].SerializeToString()
    a.release()
    a.release()                                      # idempotent: released once
    assert (g.held, g.held_of("a")) == (450, 0)
    g.acquire("c", 100).release()
    b.release()
    assert g.held == 0


def test_inflight_bytes_admit_a_request_alone_however_large_and_zero_is_no_bound():
    g = InflightBytes(limit=100, per_tenant=50)
    big = g.acquire("a", 10_000)                     # alone: admitted (the message limit bounds it)
    with pytest.raises(Overloaded):
        g.acquire("b", 1)
    big.release()
    off = InflightBytes(limit=0, per_tenant=0)
    holds = [off.acquire("a", 10 ** 9) for _ in range(3)]
    assert off.held == 3 * 10 ** 9 and off.refused == 0
    for h in holds:
        h.release()
