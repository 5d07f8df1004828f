"""Admission: which calls start now, which wait, which are refused at once.

Two gates per server process, both applied by the call wrapper (aos_runtime/server.py
``CallPolicy``), so handlers know nothing of them:

- **light**: every contract RPC not declared heavy. At most ``AOS_MAX_INFLIGHT`` run at
  once; the others wait, served round-robin between tenants, for at most their budget
  (``min(time to the call's deadline, AOS_QUEUE_BUDGET_S)``).
- **heavy**: the RPCs whose proto declares ``(aos.evidence.v1.heavy) = true`` (exports,
  verifications, downloads, integrity walks). At most ``AOS_HEAVY_CONCURRENCY`` at once,
  ``AOS_HEAVY_PER_TENANT`` of one tenant; at most ``AOS_HEAVY_QUEUE_PER_TENANT`` of one
  tenant wait, round-robin between tenants, for at most ``min(deadline,
  AOS_HEAVY_QUEUE_BUDGET_S)``. Their database work runs on the database's heavy pool
  (``aos_runtime.db.heavy_call``), never on the connections light reads use.

A call that cannot start within its budget is refused — at once when that is already
clear (its tenant's queue is full, or the wait estimated from recent service times is
longer than what is left of its budget once the event loop's lag — the time calls now
wait in gRPC's own queue before the wrapper sees them — is taken off), else when the
budget passes — with ``faults.Overloaded``.

Admission by predicted completion (``AOS_ACCEPTED_TARGET_S``, issue #19): a call that cannot
start at once is admitted to wait only if it would still *end* in time — its estimated wait
plus the service time of its kind (the RPC method: the 90th percentile of the last ``WINDOW``
calls of that method this gate ran) within ``min(its deadline, the target)`` from its arrival;
else it is refused at once, and a waiting call gives up once starting later could no longer
end in time. A call that can start at once always starts, however long its kind takes (the
target bounds what queueing adds, not the work itself). Refusing early beats accepting a call
that will be late: the caller retries elsewhere or later, and the calls that are accepted end
within the target. The refusal is the same:
RESOURCE_EXHAUSTED, google.rpc.RetryInfo (the estimated wait) and google.rpc.QuotaFailure
(the tenant, which limit). A refused call did nothing: any call, a write too, may be retried.

Why our own and not a library: what is needed is a counting semaphore with per-key caps,
round-robin between keys, a bounded queue and an estimate of the wait, on one asyncio loop
(gRPC's own ``maximum_concurrent_rpcs`` has no per-tenant share and no retry delay, and in
grpc.aio it does not even refuse: it stops taking calls from the core; Envoy's overload
manager and adaptive concurrency sit in front of a process, not inside it). It is ~150 lines
with no I/O, tested directly (tests/unit/test_admission.py). The model is Envoy's and gRPC's:
refuse early rather than queue past the deadline, and say when to come back.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

from aos_runtime.faults import DeadlinePassed, Overloaded

# Service times kept for the estimate, and how many make one (fewer: no early refusal).
WINDOW = 50
MIN_SAMPLES = 5
# The smallest retry delay a refusal gives (a retry sooner than this would meet the same queue).
MIN_RETRY_S = 0.05
# The service time a call's kind is predicted to take: this quantile of its last WINDOW calls. A
# high one because the target is the accepted calls' p99, not their mean (the mean of a kind whose
# calls take 0.3 s or 1.2 s would admit calls that end late). Our own ~10 lines over a deque of 50,
# sorted once per completed call: a sketch library (t-digest, DDSketch) earns its keep over long
# streams and merges, neither of which a 50-call window needs. Robust to a rare outlier as it is:
# up to 11 calls it is the second largest of them, then the third, up to the sixth largest of 50.
SERVICE_QUANTILE = 0.9
# Why admission refused, the ``cause`` label of aos_admission_refused_total.
CAUSES = ("queue_full", "wait_too_long", "budget_passed", "predicted_late",
          "shed_saturated", "shed_queue", "shed_predicted_late")


def trimmed_mean(samples: Collection[float]) -> float:
    """The mean of ``samples`` without their largest and their smallest (once there are three):
    a rare outlier — a call that ran while the machine stalled, a worker's first job, a
    collection's pause — does not move it, while a lasting change (every call slower) does, at
    once. Why not a median: the light gate's window mixes kinds of 5 ms and 300 ms, and the
    waits it estimates are their sum, which the mean of the mix predicts and a median does not;
    dropping one sample at each end costs that mean little (a fiftieth of the window)."""
    n = len(samples)
    if n < 3:
        return sum(samples) / n
    return (sum(samples) - max(samples) - min(samples)) / (n - 2)


class LoopLag:
    """How late this process's event loop runs a 10 ms timer: the least lateness of the last
    ``TICKS`` timers, so that one long pause (a collection, a slow callback) is not taken for
    saturation, while a saturated loop (every timer late) is. A call that arrives while the
    loop lags waits about that long in
    gRPC's own queue before the call wrapper sees it: time the gate cannot count by itself,
    so ``FairGate`` takes it off the call's budget. A saturated process then refuses new
    calls at once (refusing is cheap) until its backlog drains, instead of letting that
    hidden queue grow past every caller's deadline."""

    INTERVAL_S = 0.01
    TICKS = 4

    def __init__(self) -> None:
        self.lag_s = 0.0
        self._recent: deque[float] = deque(maxlen=self.TICKS)
        self._task: asyncio.Task[None] | None = None
        # Told each tick's lateness (the metrics' aos_event_loop_lag_seconds): where a call's time
        # goes under load is then measured in the process, not guessed from the caller's side.
        self.observe: Callable[[float], None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            due = time.monotonic() + self.INTERVAL_S
            await asyncio.sleep(self.INTERVAL_S)
            late = max(0.0, time.monotonic() - due)
            self._recent.append(late)
            if self.observe is not None:
                self.observe(late)
            self.lag_s = min(self._recent) if len(self._recent) == self.TICKS else 0.0

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


@dataclass(frozen=True)
class Limits:
    """``concurrency`` calls at once, ``per_tenant`` of one tenant (None: no share), at most
    ``queue_per_tenant`` of one tenant waiting (None: bounded by the budget only), each
    waiting at most ``budget_s``."""
    name: str                       # the gate, as refusals name it: "heavy" or "light"
    concurrency: int
    per_tenant: int | None
    queue_per_tenant: int | None
    budget_s: float
    setting: str                    # the variable that sets ``concurrency``, named in refusals
    tenant_setting: str = "AOS_HEAVY_PER_TENANT"        # … ``per_tenant``
    queue_setting: str = "AOS_HEAVY_QUEUE_PER_TENANT"   # … ``queue_per_tenant``
    # AOS_ACCEPTED_TARGET_S: a call that must wait is admitted only if its predicted end (wait +
    # its kind's service time) is within min(deadline, target_s) of its arrival. 0: off.
    target_s: float = 0.0


class AdaptiveLimit:
    """An in-flight limit that follows measured latency: Netflix concurrency-limits' Gradient2,
    with each call's service time taken against its own method's baseline (the light gate mixes
    methods of 5 ms and 300 ms, whose raw times say nothing about queueing).

    Per method a baseline: the lower envelope of its service times (drops to a faster call at once,
    creeps up by ``DRIFT`` of the gap on each slower one, so it follows a lasting change in ~5,000
    calls). Every ``WINDOW`` calls, the mean ratio of service time to baseline is the latency
    gradient: ``gradient = clamp(TOLERANCE / ratio, 0.5, 1)``, and
    ``limit = (1 − SMOOTHING)·limit + SMOOTHING·(limit·gradient + √limit)`` — shrinking while calls
    take more than TOLERANCE× their baseline (queueing inside the process: its loop, its pool),
    growing by ~√limit per window while they do not and the limit is used (at least half of it
    in flight). Between ``minimum`` and ``maximum`` (AOS_ADAPTIVE_INFLIGHT_MIN, AOS_MAX_INFLIGHT).

    Own code rather than a library: the algorithm is ~25 lines, the concurrency-limits libraries
    are Java/Go, and it has to sit inside FairGate's tenant round-robin on the asyncio loop."""

    WINDOW = 25
    TOLERANCE = 2.0
    SMOOTHING = 0.2
    DRIFT = 0.0002

    def __init__(self, minimum: int, maximum: int) -> None:
        self.minimum = max(1, min(minimum, maximum))
        self.maximum = maximum
        self.limit = float(maximum)
        self._baseline: dict[str, float] = {}
        self._ratios = 0.0
        self._samples = 0
        self._peak = 0

    @property
    def current(self) -> int:
        return int(self.limit)

    def sample(self, kind: str, took: float, inflight: int) -> None:
        """One call of ``kind`` ended after ``took`` s, ``inflight`` calls running then (itself too)."""
        took = max(took, 1e-4)
        base = self._baseline.get(kind)
        if base is None or took < base:
            self._baseline[kind] = took
            base = took
        else:
            self._baseline[kind] = base + (took - base) * self.DRIFT
        self._ratios += took / base
        self._samples += 1
        self._peak = max(self._peak, inflight)
        if self._samples < self.WINDOW:
            return
        ratio = self._ratios / self._samples
        peak = self._peak
        self._ratios, self._samples, self._peak = 0.0, 0, 0
        gradient = max(0.5, min(1.0, self.TOLERANCE / ratio))
        if gradient >= 1.0 and peak < self.limit / 2:
            return  # not using the limit it has: no evidence that more would be fine
        target = self.limit * gradient + math.sqrt(self.limit)
        self.limit = min(self.maximum, max(self.minimum, self.limit * (1 - self.SMOOTHING) + target * self.SMOOTHING))


class Permit:
    """A started call's slot; ``release()`` once, when the call ends (idempotent)."""

    __slots__ = ("_gate", "_kind", "_released", "_started", "_tenant")

    def __init__(self, gate: FairGate | None, tenant: str, started: float, kind: str = "") -> None:
        self._gate, self._tenant, self._started, self._released = gate, tenant, started, False
        self._kind = kind

    def release(self) -> None:
        if not self._released and self._gate is not None:
            self._released = True
            self._gate._release(self._tenant, self._started, self._kind)


OPEN = Permit(None, "", 0.0)  # for a call no gate applies to


class FairGate:
    """A counting semaphore with a per-tenant share and round-robin between waiting tenants.

    Waiting calls are kept per tenant, and the tenants with waiting calls in a ring: each
    slot that frees goes to the first tenant in the ring that is under its share, which then
    moves to the ring's end. A tenant with twelve calls waiting delays another's first call
    by at most one of its own. Runs on one asyncio loop: no locks."""

    def __init__(self, limits: Limits, lag: LoopLag | None = None, adaptive: AdaptiveLimit | None = None) -> None:
        self.limits = limits
        self._lag = lag
        # AOS_ADAPTIVE_INFLIGHT_MIN: the calls at once follow measured latency (None: limits.concurrency).
        self.adaptive = adaptive
        self._running: Counter[str] = Counter()
        self._total = 0
        self._waiting: OrderedDict[str, deque[asyncio.Future[float]]] = OrderedDict()
        self._service_s: deque[float] = deque(maxlen=WINDOW)
        # When the last call ended (monotonic): how long the gate has been quiet (quiet_for).
        self._last_end = time.monotonic()
        # Called (on the loop) when a call ends and none runs or waits any more: the heap trim
        # after heavy work (aos_runtime.heap; ServiceServer sets it).
        self.on_idle: Callable[[], None] | None = None
        # Per kind of call (the RPC method): its last WINDOW service times and their
        # SERVICE_QUANTILE, recomputed when one ends (admission by predicted completion).
        self._kind_s: dict[str, deque[float]] = {}
        self._kind_estimate: dict[str, float] = {}
        # Told (kind, estimate) when a kind's estimate changes (aos_admission_service_seconds).
        self.on_estimate: Callable[[str, float], None] | None = None

    # --- what the gate holds (for tests and logs) --------------------------------------
    @property
    def running(self) -> int:
        return self._total

    @property
    def concurrency(self) -> int:
        """Calls this gate runs at once now: ``limits.concurrency``, or the adaptive limit."""
        return self.adaptive.current if self.adaptive is not None else self.limits.concurrency

    def describe_limit(self) -> str:
        """The limit as a refusal names it, e.g. ``AOS_MAX_INFLIGHT=32`` or, adaptive,
        ``adaptive 9 of AOS_MAX_INFLIGHT=32``."""
        fixed = f"{self.limits.setting}={self.limits.concurrency}"
        return fixed if self.adaptive is None else f"adaptive {self.concurrency} of {fixed}"

    def running_of(self, tenant: str) -> int:
        return self._running[tenant]

    def waiting_of(self, tenant: str) -> int:
        return len(self._waiting.get(tenant, ()))

    def waiting_total(self) -> int:
        """Calls of every tenant waiting now (the aos_heavy_queue_depth metric reads it)."""
        return sum(len(queue) for queue in self._waiting.values())

    def mean_service_s(self, min_samples: int = MIN_SAMPLES) -> float | None:
        """The mean of the recent service times (from start to end of a call), once there are
        ``min_samples`` (an early refusal needs MIN_SAMPLES; a retry delay takes what there is) —
        a robust one (``trimmed_mean``): one call far off the others does not make every wait
        look longer."""
        if not self._service_s or len(self._service_s) < min_samples:
            return None
        return trimmed_mean(self._service_s)

    def service_estimate_s(self, kind: str) -> float | None:
        """The service time predicted for a call of ``kind``: the SERVICE_QUANTILE of the last
        WINDOW calls of that kind this gate ran, once there are MIN_SAMPLES; else None (no
        prediction: the call is admitted by the wait alone, as without a target)."""
        return self._kind_estimate.get(kind)

    def estimated_wait_s(self, tenant: str) -> float:
        """How long a call of ``tenant`` arriving now would wait: the calls that must end
        before it starts (its own tenant's beyond its share; everyone's ahead of it in the
        round-robin beyond the concurrency), ending at the rate their mean service time
        allows. 0 without enough samples."""
        mean = self.mean_service_s()
        if mean is None:
            return 0.0
        limits = self.limits
        queued = self.waiting_of(tenant)
        wait = 0.0
        if limits.per_tenant is not None:
            own = self._running[tenant] + queued + 1 - limits.per_tenant
            wait = max(wait, mean * own / limits.per_tenant)
        # Round-robin: each other tenant gets as many turns as this one before its turn comes.
        ahead = queued + sum(min(len(q), queued + 1) for t, q in self._waiting.items() if t != tenant)
        concurrency = self.concurrency
        overall = self._total + ahead + 1 - concurrency
        return max(wait, mean * overall / concurrency, 0.0)

    def least_wait_s(self) -> float | None:
        """The least any call arriving now would wait, whichever its tenant: the calls running
        beyond the concurrency plus one turn of each tenant already waiting (round-robin serves
        a new tenant after one call of each), ending at the mean recent service time. None
        without enough samples. Needs no tenant, so ``Admission.shed`` can use it before the
        call's token is read."""
        mean = self.mean_service_s()
        if mean is None:
            return None
        concurrency = self.concurrency
        overall = self._total + len(self._waiting) + 1 - concurrency
        return max(mean * overall / concurrency, 0.0)

    # --- admission -----------------------------------------------------------------------
    async def acquire(self, tenant: str, deadline: float | None, kind: str = "") -> Permit:
        """A permit once the call may start; raises Overloaded if it cannot start within
        ``min(deadline - now, budget_s)`` (at once when that is already clear), or — with a
        target (``Limits.target_s``) and a service time known for its ``kind`` — if it must wait
        and would not end within ``min(deadline, target)`` of its arrival."""
        now = time.monotonic()
        left = math.inf if deadline is None else deadline - now
        if left <= 0:
            # Expired before it reached us (e.g. grpc-timeout 1n): its deadline, not our load, ends it.
            raise DeadlinePassed("it could start")
        decision = self._decide(tenant, left, kind)
        if decision is None:
            return self._grant(tenant, now, kind)
        if isinstance(decision, Overloaded):
            raise decision
        budget = decision
        ticket: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, deque()).append(ticket)
        try:
            done, _ = await asyncio.wait({ticket}, timeout=budget)
        except asyncio.CancelledError:
            self._leave(tenant, ticket)
            raise
        if not done:
            self._leave(tenant, ticket)
            raise self._refusal(tenant, f"it did not start within its budget of {budget:.2f} s",
                                tenant_limit=self._tenant_bound(tenant), cause="budget_passed")
        return Permit(self, tenant, ticket.result(), kind)

    def may_refuse(self) -> bool:
        """Whether ``refusal_now`` could refuse any tenant's call now: a full gate, a gate with a
        per-tenant share that runs a call, or a loop late by the whole budget. False: every call
        would start at once (the call wrapper then need not look at the call's tenant early)."""
        if self._total >= self.concurrency or (self.limits.per_tenant is not None and self._total > 0):
            return True
        return self._lag is not None and self.limits.budget_s - self._lag.lag_s <= 0

    def refusal_now(self, tenant: str, kind: str = "") -> Overloaded | None:
        """The refusal ``acquire`` would raise at once for a call of ``tenant`` arriving now whatever
        its deadline (its tenant's queue full, its wait longer than the budget, its predicted end
        past the target), or None. Changes nothing: the call wrapper asks it before the call's
        request is read (``CallPolicy``), so that such a call is answered without that work."""
        decision = self._decide(tenant, math.inf, kind)
        return decision if isinstance(decision, Overloaded) else None

    def _decide(self, tenant: str, left: float, kind: str) -> Overloaded | float | None:
        """What admission does with a call of ``tenant`` (of ``kind``) arriving now with ``left``
        seconds to its deadline: None, it starts now; a budget (s), it waits at most that long;
        an Overloaded, it is refused at once."""
        limits = self.limits
        # What the call already waited before we saw it (gRPC's queue while the loop lags).
        waited = self._lag.lag_s if self._lag is not None else 0.0
        # The queue budget counts the loop's lag (time already spent in gRPC's queue); the time to
        # the deadline is measured now, so that wait is in it already.
        queue_budget = limits.budget_s - waited
        budget = min(queue_budget, left)
        if self._eligible(tenant) and queue_budget > 0:
            return None
        if limits.queue_per_tenant == 0:  # none may wait: refused by the limit that holds it back
            return self._refusal(tenant, "no slot is free and none may wait", tenant_limit=self._tenant_bound(tenant),
                                 cause="queue_full")
        if limits.queue_per_tenant is not None and self.waiting_of(tenant) >= limits.queue_per_tenant:
            return self._refusal(tenant, "its queue is full", tenant_limit=True, cause="queue_full",
                                 limit=f"{limits.name} calls of one tenant waiting per process "
                                       f"({limits.queue_setting}={limits.queue_per_tenant})")
        estimate = self.estimated_wait_s(tenant)
        own = self.service_estimate_s(kind) if limits.target_s > 0 else None
        if own is not None:
            # Predicted completion: it waits ~estimate, then runs ~own; it must end within
            # min(deadline, target) of its arrival (``waited`` ago).
            end_left = min(left, limits.target_s - waited)
            if estimate + own > end_left:
                bound = (f"its deadline in {left:.2f} s" if left < limits.target_s - waited else
                         f"AOS_ACCEPTED_TARGET_S={limits.target_s:g}")
                return self._refusal(tenant, f"it would end ~{waited + estimate + own:.2f} s after it arrived "
                                             f"(~{estimate:.2f} s to wait, ~{own:.2f} s to run), past {bound}",
                                     tenant_limit=self._tenant_bound(tenant), cause="predicted_late")
            budget = min(budget, end_left - own)  # a later start could no longer end in time
        if budget <= 0 or estimate > budget:
            return self._refusal(tenant, f"it would wait ~{estimate + waited:.2f} s to start, longer than its budget "
                                         f"of {max(budget + waited, 0):.2f} s", tenant_limit=self._tenant_bound(tenant),
                                 cause="wait_too_long")
        return budget

    def _eligible(self, tenant: str) -> bool:
        per_tenant = self.limits.per_tenant
        return self._total < self.concurrency and (per_tenant is None or self._running[tenant] < per_tenant)

    def _tenant_bound(self, tenant: str) -> bool:
        """Whether the tenant's own share (not the process's limit) is what holds its call back."""
        per_tenant = self.limits.per_tenant
        return per_tenant is not None and self._running[tenant] >= per_tenant

    def _grant(self, tenant: str, now: float, kind: str = "") -> Permit:
        self._running[tenant] += 1
        self._total += 1
        return Permit(self, tenant, now, kind)

    def _leave(self, tenant: str, ticket: asyncio.Future[float]) -> None:
        """A waiting call gives up (budget passed, or cancelled): out of the queue, or, if it
        was granted meanwhile, its slot back."""
        if ticket.done() and not ticket.cancelled():
            self._release(tenant, ticket.result(), record=False)
            return
        ticket.cancel()
        queue = self._waiting.get(tenant)
        if queue is not None:
            try:
                queue.remove(ticket)
            except ValueError:
                pass
            if not queue:
                del self._waiting[tenant]

    def _release(self, tenant: str, started: float, kind: str = "", *, record: bool = True) -> None:
        self._last_end = ended = time.monotonic()
        if record:
            took = ended - started
            self._service_s.append(took)
            self._observe_kind(kind, took)
            if self.adaptive is not None:
                self.adaptive.sample(kind, took, self._total)
        self._running[tenant] -= 1
        if not self._running[tenant]:
            del self._running[tenant]
        self._total -= 1
        self._dispatch()
        if self.on_idle is not None and self.idle:
            self.on_idle()

    @property
    def idle(self) -> bool:
        """No call runs or waits."""
        return not self._total and not self._waiting

    def quiet_for(self, seconds: float) -> bool:
        """No call runs or waits, and none ended in the last ``seconds``."""
        return self.idle and time.monotonic() - self._last_end >= seconds

    def _observe_kind(self, kind: str, took: float) -> None:
        times = self._kind_s.get(kind)
        if times is None:
            times = self._kind_s[kind] = deque(maxlen=WINDOW)
        times.append(took)
        if len(times) < MIN_SAMPLES:
            return
        ordered = sorted(times)
        estimate = ordered[int(SERVICE_QUANTILE * (len(ordered) - 1))]
        self._kind_estimate[kind] = estimate
        if self.on_estimate is not None:
            self.on_estimate(kind, estimate)

    def _dispatch(self) -> None:
        """Hand free slots to waiting calls, round-robin over the tenants under their share."""
        while self._total < self.concurrency:
            tenant = next((t for t in self._waiting if self._eligible(t)), None)
            if tenant is None:
                return
            queue = self._waiting[tenant]
            ticket = queue.popleft()
            if queue:
                self._waiting.move_to_end(tenant)
            else:
                del self._waiting[tenant]
            self._running[tenant] += 1
            self._total += 1
            ticket.set_result(time.monotonic())

    def _refusal(self, tenant: str, why: str, *, tenant_limit: bool, cause: str,
                 limit: str | None = None) -> Overloaded:
        limits = self.limits
        if limit is not None:
            pass
        elif tenant_limit:
            limit = (f"{limits.name} calls of one tenant at once per process "
                     f"({limits.tenant_setting}={limits.per_tenant})")
        else:
            limit = f"{limits.name} calls at once per process ({self.describe_limit()})"
        lag = self._lag.lag_s if self._lag is not None else 0.0
        retry = max(self.estimated_wait_s(tenant) + lag, self.mean_service_s(1) or 0.0, MIN_RETRY_S)
        return Overloaded(tenant_limit=tenant_limit, tenant=tenant, limit=limit, retry_after_s=round(retry, 3),
                          gate=limits.name, cause=cause,
                          message=f"not started: {why}; limit: {limit}; retry after {math.ceil(retry * 10) / 10} s")


class ByteHold:
    """The bytes a started call holds; ``release()`` once, when the call ends (idempotent)."""

    __slots__ = ("_gate", "_size", "_started", "_tenant")

    def __init__(self, gate: InflightBytes | None, tenant: str, size: int, started: float) -> None:
        self._gate, self._tenant, self._size, self._started = gate, tenant, size, started

    def release(self) -> None:
        if self._gate is not None:
            gate, self._gate = self._gate, None
            gate._release(self._tenant, self._size, self._started)


NO_BYTES = ByteHold(None, "", 0, 0.0)


class InflightBytes:
    """A bound on the bytes of requests being processed at once in one process (the ingest
    writes, whose requests are up to 4 MiB each): at most ``limit`` bytes in all and
    ``per_tenant`` of one tenant. A request that would pass a bound is refused at once —
    RESOURCE_EXHAUSTED ``INGEST_BYTES_LIMIT`` with RetryInfo (when the bytes in flight are
    likely done: the recent mean time a request held its bytes) and QuotaFailure — and did
    nothing, so the producer retries it (the OTLP exporters do so by themselves). It does not
    wait: a producer has its batch in memory already, and retrying after the delay costs it
    nothing, while queued bytes would be the memory the bound is there to cap.

    A request alone is always admitted, however large (the gRPC message limit bounds it), so
    that a bound below the largest request never refuses it forever. 0 turns a bound off."""

    def __init__(self, limit: int, per_tenant: int) -> None:
        self.limit = limit
        self.per_tenant = per_tenant
        self._held: Counter[str] = Counter()
        self._total = 0
        self._service_s: deque[float] = deque(maxlen=WINDOW)
        self.refused = 0  # requests refused since the start (tests, logs)

    @property
    def held(self) -> int:
        return self._total

    def held_of(self, tenant: str) -> int:
        return self._held[tenant]

    def acquire(self, tenant: str, size: int) -> ByteHold:
        """The hold of ``size`` bytes for ``tenant``'s call, or Overloaded when a bound is full."""
        if self.per_tenant and self._held[tenant] and self._held[tenant] + size > self.per_tenant:
            raise self._refusal(tenant, size, tenant_limit=True)
        if self.limit and self._total and self._total + size > self.limit:
            raise self._refusal(tenant, size, tenant_limit=False)
        self._held[tenant] += size
        self._total += size
        return ByteHold(self, tenant, size, time.monotonic())

    def _release(self, tenant: str, size: int, started: float) -> None:
        self._service_s.append(time.monotonic() - started)
        self._held[tenant] -= size
        if not self._held[tenant]:
            del self._held[tenant]
        self._total -= size

    def retry_after_s(self) -> float:
        """When the bytes in flight are likely released: the recent mean hold time."""
        mean = sum(self._service_s) / len(self._service_s) if self._service_s else 0.0
        return max(mean, MIN_RETRY_S)

    def _refusal(self, tenant: str, size: int, *, tenant_limit: bool) -> Overloaded:
        self.refused += 1
        if tenant_limit:
            limit = (f"bytes of one tenant's ingest requests in process at once per process "
                     f"(AOS_INGEST_INFLIGHT_BYTES_PER_TENANT={self.per_tenant})")
            held = self._held[tenant]
        else:
            limit = f"bytes of ingest requests in process at once per process (AOS_INGEST_INFLIGHT_BYTES={self.limit})"
            held = self._total
        retry = self.retry_after_s()
        return Overloaded(tenant_limit=tenant_limit, tenant=tenant, limit=limit, retry_after_s=round(retry, 3),
                          ingest_bytes=True,
                          message=f"not started: {held} bytes are in process and this request's {size} would pass "
                                  f"the limit; limit: {limit}; retry after {math.ceil(retry * 10) / 10} s")


@dataclass(frozen=True)
class Admission:
    """The server's gates. ``heavy`` is None with AOS_HEAVY_ISOLATION=off (a diagnostic: heavy
    calls are then admitted as light ones and share the light calls' database pool).
    ``shed_lag_s``: the loop lag from which a call that cannot start at once is refused
    before any other work (``shed``); 0 turns that off."""
    light: FairGate
    heavy: FairGate | None
    lag: LoopLag
    shed_lag_s: float = 0.0
    # Streams that continue after their heavy start (DownloadExport): AOS_DOWNLOADS_PER_TENANT of a
    # tenant at once, none waiting (a download is retried, not queued behind a slow one).
    streams: FairGate | None = None
    # Bytes of requests in process of the RPCs whose service bounds them (the ingest writes).
    inflight_bytes: InflightBytes | None = None
    # AOS_HEAP_TRIM: give the heap back to the system when heavy work ends (aos_runtime.heap).
    trim_heap: bool = True

    @classmethod
    def of(cls, *, max_inflight: int, queue_budget_s: float, heavy_isolation: bool, heavy_concurrency: int,
           heavy_per_tenant: int, heavy_queue_per_tenant: int, heavy_queue_budget_s: float,
           shed_lag_s: float = 0.0, streams_per_tenant: int = 4, inflight_bytes: int = 0,
           inflight_bytes_per_tenant: int = 0, trim_heap: bool = True, accepted_target_s: float = 0.0,
           adaptive_inflight_min: int = 0) -> Admission:
        lag = LoopLag()
        light = FairGate(Limits("light", max_inflight, None, None, queue_budget_s, "AOS_MAX_INFLIGHT",
                                target_s=accepted_target_s), lag,
                         AdaptiveLimit(adaptive_inflight_min, max_inflight) if adaptive_inflight_min > 0 else None)
        heavy = FairGate(Limits("heavy", heavy_concurrency, heavy_per_tenant, heavy_queue_per_tenant,
                                heavy_queue_budget_s, "AOS_HEAVY_CONCURRENCY", target_s=accepted_target_s),
                         lag) if heavy_isolation else None
        # As many streams per process as light calls (a stream holds no database connection between
        # its chunks, only its place); a tenant's share keeps one tenant from taking them all.
        streams = FairGate(Limits("download", max_inflight, streams_per_tenant, 0, queue_budget_s, "AOS_MAX_INFLIGHT",
                                  "AOS_DOWNLOADS_PER_TENANT", "AOS_DOWNLOADS_PER_TENANT"), lag)
        return cls(light, heavy, lag, shed_lag_s, streams,
                   InflightBytes(inflight_bytes, inflight_bytes_per_tenant), trim_heap)

    def gate(self, heavy: bool) -> FairGate:
        return self.heavy if heavy and self.heavy is not None else self.light

    def shed(self, heavy: bool, kind: str = "") -> Overloaded | None:
        """The refusal of a call that arrives now, decided before anything else is done for it
        (no token check, no log line of its own, no queueing), or None to admit it as usual.

        Refused when the call's gate is full and the process is saturated — its event loop runs
        ``shed_lag_s`` or more late — or the gate's queue alone (``FairGate.least_wait_s``, the least
        any tenant would wait) is longer than the gate's budget: the gate would refuse it anyway,
        only later and dearer. Why both: a late loop alone
        is also what a busy machine looks like (another process's CPU, a heavy call's thread
        holding the GIL) while a free slot would still start the call soon; a full gate alone is
        what the round-robin queue is for. Together they mean every call now waits in gRPC's own
        queue behind the loop's backlog — and gRPC's asyncio server takes the next call from its
        core only once per turn of that loop, so that hidden queue grows while the loop is late.
        Refusing is the cheapest thing the loop can do with a call: it shortens the loop's turns
        until the backlog is gone, which is what bounds the refusals' own latency (the soak's
        < 10 ms target). gRPC's ``maximum_concurrent_rpcs`` cannot do this: in grpc.aio
        (1.85, ``_ConcurrentRpcLimiter``) it stops taking calls from the core rather than
        refusing them, which grows the same hidden queue. That hidden queue itself is bounded by
        gRPC's core (aos_runtime.server.PendingCalls, AOS_MAX_PENDING_CALLS): the calls beyond it
        are refused there, never reaching this method.

        With a target (AOS_ACCEPTED_TARGET_S) and a service time known for the call's ``kind``, a
        full gate whose least wait plus that service time would end the call past the target
        refuses it here too (the gate would refuse it by its predicted completion, only later)."""
        if self.shed_lag_s <= 0:
            return None
        gate = self.gate(heavy)
        limits = gate.limits
        if gate.running < gate.concurrency:
            return None
        lag = self.lag.lag_s
        if lag < self.shed_lag_s:
            # On time, but a full gate whose queue alone is longer than the budget (the least any
            # tenant would wait, plus what the loop is late): the call would be refused by the
            # gate anyway, after its token and request were read — refused here, before both.
            least = gate.least_wait_s()
            if least is None:
                return None
            limit = f"{limits.name} calls at once per process ({gate.describe_limit()})"
            retry = max(least + lag, MIN_RETRY_S)
            own = gate.service_estimate_s(kind) if limits.target_s > 0 else None
            if least + lag > limits.budget_s:
                why, cause = (f"it would wait at least ~{least + lag:.2f} s to start, longer than its budget of "
                              f"{limits.budget_s:g} s"), "shed_queue"
            elif own is not None and least + lag + own > limits.target_s:
                why, cause = (f"it would end at least ~{least + lag + own:.2f} s after it arrived (~{least + lag:.2f}"
                              f" s to wait, ~{own:.2f} s to run), past AOS_ACCEPTED_TARGET_S={limits.target_s:g}"
                              ), "shed_predicted_late"
            else:
                return None
            return Overloaded(tenant_limit=False, tenant="", limit=limit, retry_after_s=round(retry, 3),
                              gate=limits.name, cause=cause,
                              message=f"not started: {why}; limit: {limit}; retry after {math.ceil(retry * 10) / 10} s")
        limit = (f"{limits.name} calls at once per process ({gate.describe_limit()}) while its event "
                 f"loop runs late (AOS_SHED_LAG_S={self.shed_lag_s:g})")
        retry = max(lag + (gate.mean_service_s(1) or 0.0), MIN_RETRY_S)
        return Overloaded(tenant_limit=False, tenant="", limit=limit, retry_after_s=round(retry, 3),
                          gate=limits.name, cause="shed_saturated",
                          message=f"not started: the process is saturated (its event loop runs {lag * 1000:.0f} ms "
                                  f"late and {gate.running} {limits.name} calls run); limit: {limit}; "
                                  f"retry after {math.ceil(retry * 10) / 10} s")
