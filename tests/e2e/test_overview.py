"""OverviewService end to end: each number checked against scenarios built to sit on its boundary."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import psycopg
import pytest

from aos.evidence.v1 import evidence_pb2, sources_pb2
from aos.overview.v1 import overview_service_pb2 as pb, overview_service_pb2_grpc as pb_grpc
from aos_recording import scenarios
from aos_recording.writers import Producer
from tests.e2e.support import auth, ts, violations
from tests.logins import login_url

pytestmark = pytest.mark.db
SCENARIOS = Path(__file__).parent / "scenarios"
TENANTS = {"ov-healthy": "overview-pulse-healthy", "ov-attention": "overview-pulse-attention",
           "ov-decisions": "overview-decisions", "ov-costs": "overview-costs"}
RESETS = ("DAILY", "WEEKLY", "MONTHLY", "NONE")


def _away_from_midnight() -> datetime:
    """Now, unless a UTC day is about to turn: the windows the scenarios sit on must
    be the ones the server computes a moment later."""
    now = datetime.now(timezone.utc)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    if midnight - now < timedelta(minutes=1):
        import time
        time.sleep((midnight - now).total_seconds() + 1)
        now = datetime.now(timezone.utc)
    return now.replace(microsecond=0)


def _reset_scenario(period: str) -> scenarios.Scenario:
    """One TENANT budget of 1,000 cents resetting ``period``, a run of 100 at the start
    of its current window (counted) and one of 200 a second before it (not counted;
    for NONE, both count: 300)."""
    anchor = {"DAILY": "day", "WEEKLY": "week", "MONTHLY": "month", "NONE": "day"}[period]
    actions = [
        {"limit": {"id": "lim", "name": f"{period} budget", "max_value": 1000, "reset_period": period, "at": "-400d"}},
        {"worker_run": {"id": "run-in", "cost_cents": 100, "at": f"{anchor}+0s"}},
        {"worker_run": {"id": "run-out", "cost_cents": 200, "at": f"{anchor}-1s" if period != "NONE" else "-399d"}},
    ]
    return scenarios.Scenario(f"SDSR-OVW-RESET-{period}", "", actions, SCENARIOS / "generated")


@pytest.fixture(scope="module")
def overview_data(database_url):
    base = _away_from_midnight()
    producer = Producer(login_url(database_url, "producer"))
    for tenant, name in TENANTS.items():
        scenarios.load(producer, scenarios.Scenario.from_file(SCENARIOS / f"{name}.yaml"), tenant, base=base)
    for period in RESETS:
        scenarios.load(producer, _reset_scenario(period), f"ov-reset-{period.lower()}", base=base)
    producer.close()
    return base


@pytest.fixture
async def stub(suite, overview_data):
    async with grpc.aio.insecure_channel(suite["overview"]) as channel:
        yield pb_grpc.OverviewServiceStub(channel)


def _counts(response) -> dict[str, tuple[int, int, int, bool]]:
    return {d.domain: (d.total, d.pending, d.critical, d.total_is_estimate) for d in response.domain_counts}


# --- highlights -----------------------------------------------------------------

async def test_healthy_pulse(stub, overview_data):
    r = await stub.GetHighlights(pb.GetHighlightsRequest(), metadata=auth("ov-healthy"))
    assert r.pulse == pb.Pulse(status=pb.PULSE_STATUS_HEALTHY, active_incidents=0, pending_decisions=0,
                               recent_breaches=0, critical_incidents=0, reason=(
                                   "Nothing needs attention: no ACTIVE incident, no draft policy proposal and no "
                                   "limit breach in the last 24 hours."))  # the breach 24 h 1 min ago is outside
    assert _counts(r) == {"Incidents": (2, 0, 0, False), "Policies": (2, 0, 0, False), "Activity": (2, 0, 0, False)}
    assert r.last_activity_at.ToDatetime(tzinfo=timezone.utc) == overview_data - timedelta(days=10)
    assert abs(r.computed_at.ToDatetime(tzinfo=timezone.utc) - datetime.now(timezone.utc)) < timedelta(seconds=30)


async def test_attention_pulse_from_a_draft_and_a_breach_just_inside_24_hours(stub):
    r = await stub.GetHighlights(pb.GetHighlightsRequest(), metadata=auth("ov-attention"))
    assert r.pulse == pb.Pulse(status=pb.PULSE_STATUS_ATTENTION_NEEDED, active_incidents=0, pending_decisions=1,
                               recent_breaches=1, critical_incidents=0, reason=(
                                   "1 decision pending (1 draft policy proposal); 1 limit breach in the last 24 hours"))
    assert _counts(r) == {"Incidents": (1, 0, 0, False), "Policies": (1, 1, 0, False), "Activity": (2, 2, 0, False)}
    assert not r.HasField("last_activity_at")  # this tenant's ledger is empty


async def test_critical_pulse_counts_critical_and_high_once(stub):
    r = await stub.GetHighlights(pb.GetHighlightsRequest(), metadata=auth("ov-decisions"))
    assert r.pulse == pb.Pulse(status=pb.PULSE_STATUS_CRITICAL, active_incidents=4, pending_decisions=6,
                               recent_breaches=0, critical_incidents=2, reason=(
                                   "2 ACTIVE incidents of severity critical or high; 6 decisions pending "
                                   "(4 ACTIVE incidents, 2 draft policy proposals)"))
    assert _counts(r) == {"Incidents": (6, 4, 2, False), "Policies": (4, 2, 0, False), "Activity": (3, 1, 0, False)}


async def test_attention_from_a_medium_incident_alone(suite, database_url):
    """ACTIVE medium and low incidents are decisions, not criticals."""
    producer = Producer(login_url(database_url, "producer"))
    story = scenarios.Scenario("SDSR-OVW-MEDIUM", "", [
        {"incident": {"id": "inc-m", "title": "m", "severity": "medium"}},
        {"incident": {"id": "inc-l", "title": "l", "severity": "low"}}], SCENARIOS / "generated")
    scenarios.load(producer, story, "ov-medium")
    producer.close()
    async with grpc.aio.insecure_channel(suite["overview"]) as channel:
        r = await pb_grpc.OverviewServiceStub(channel).GetHighlights(pb.GetHighlightsRequest(),
                                                                     metadata=auth("ov-medium"))
    assert r.pulse.status == pb.PULSE_STATUS_ATTENTION_NEEDED
    assert (r.pulse.active_incidents, r.pulse.pending_decisions) == (2, 2)
    assert r.pulse.reason == "2 decisions pending (2 ACTIVE incidents)"  # no word of criticals: there are none


async def test_totals_past_the_cap_are_flagged_estimates_each_its_own(suite, database_url):
    """Over 10,000 records a domain's total is the planner's estimate, flagged; under it,
    exact. Two domains past the cap, of different sizes: each gets its own estimate."""
    tenant = "ov-volume"
    with psycopg.connect(database_url) as conn:  # bulk rows: the producer writes one at a time
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'Volume')", (tenant,))
        conn.execute("INSERT INTO incidents (id, tenant_id, title, severity, lifecycle_state) "
                     "SELECT %s || '.inc-' || i, %s, 'i', 'low', 'RESOLVED' FROM generate_series(1, 12000) i",
                     (tenant, tenant))
        conn.execute("INSERT INTO worker_runs (id, tenant_id, status) "
                     "SELECT %s || '.run-' || i, %s, 'completed' FROM generate_series(1, 30000) i", (tenant, tenant))
        conn.execute("INSERT INTO policy_proposals (id, tenant_id, proposal_name, status) "
                     "SELECT %s || '.prop-' || i, %s, 'p', 'approved' FROM generate_series(1, 10000) i",
                     (tenant, tenant))
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE incidents, worker_runs, policy_proposals")
    async with grpc.aio.insecure_channel(suite["overview"]) as channel:
        r = await pb_grpc.OverviewServiceStub(channel).GetHighlights(pb.GetHighlightsRequest(), metadata=auth(tenant))
    totals = {d.domain: (d.total, d.total_is_estimate) for d in r.domain_counts}
    assert totals["Policies"] == (10000, False)  # the cap itself is still exact
    assert totals["Incidents"][1] and totals["Activity"][1]
    assert abs(totals["Incidents"][0] - 12000) < 600 and abs(totals["Activity"][0] - 30000) < 1500, totals


# --- costs ------------------------------------------------------------------------

def _month(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)


def _usd(cents: int) -> evidence_pb2.Money:
    return evidence_pb2.Money(currency_code="USD", amount_cents=cents)


async def test_costs_scopes_and_budget_boundaries(stub, overview_data):
    r = await stub.GetCosts(pb.GetCostsRequest(), metadata=auth("ov-costs"))
    start, end = _month(overview_data)
    assert r.currency == "USD"
    assert (r.period.start.ToDatetime(tzinfo=timezone.utc), r.period.end.ToDatetime(tzinfo=timezone.utc)) == (start, end)
    assert r.actuals.llm_run_cost == _usd(7999 + 8000 + 10000)  # the run a second before the month is out
    window = pb.Period(start=ts(start), end=ts(end))
    expected = [
        ("lim-tenant", sources_pb2.LIMIT_SCOPE_TENANT, "", 100000, 25999, 74001, 2599, pb.BUDGET_STATUS_OK),
        ("lim-project", sources_pb2.LIMIT_SCOPE_PROJECT, "proj-a", 10000, 7999, 2001, 7999, pb.BUDGET_STATUS_OK),
        ("lim-agent", sources_pb2.LIMIT_SCOPE_AGENT, "agent-b", 10000, 8000, 2000, 8000,
         pb.BUDGET_STATUS_NEAR_THRESHOLD),
        ("lim-provider", sources_pb2.LIMIT_SCOPE_PROVIDER, "prov-c", 10000, 10000, 0, 10000,
         pb.BUDGET_STATUS_BREACHED),
    ]
    assert [limit.limit_id for limit in r.limits] == [f"ov-costs.{e[0]}" for e in expected]
    for limit, (_, scope, scope_id, max_value, used, remaining, bp, status) in zip(r.limits, expected):
        assert limit.category == sources_pb2.LIMIT_CATEGORY_BUDGET
        assert (limit.scope, limit.scope_id, limit.reset_period) == (scope, scope_id, sources_pb2.RESET_PERIOD_MONTHLY)
        assert limit.window == window
        assert (limit.max_value, limit.used_value, limit.remaining_value) == (_usd(max_value), _usd(used),
                                                                              _usd(remaining))
        assert (limit.utilization_bp, limit.status) == (bp, status), limit.limit_id
    # Budget breaches in the month: 500 + 2345 over; the one before the month and the rate breach are out.
    assert r.violations == pb.CostViolations(breach_count=2, total_overage=_usd(500 + 2345))


async def test_costs_for_an_explicit_period(stub, overview_data):
    start, _ = _month(overview_data)
    r = await stub.GetCosts(pb.GetCostsRequest(period_start=ts(start - timedelta(days=1)), period_end=ts(start)),
                            metadata=auth("ov-costs"))
    assert r.actuals.llm_run_cost == _usd(5000)
    assert r.violations == pb.CostViolations(breach_count=1, total_overage=_usd(89999))
    # Budget usage follows each limit's own window, not the requested period.
    assert [limit.used_value.amount_cents for limit in r.limits] == [25999, 7999, 8000, 10000]


@pytest.mark.parametrize("period", RESETS)
async def test_budget_usage_follows_its_reset_period(stub, overview_data, period):
    r = await stub.GetCosts(pb.GetCostsRequest(), metadata=auth(f"ov-reset-{period.lower()}"))
    (limit,) = r.limits
    assert limit.reset_period == sources_pb2.ResetPeriod.Value(f"RESET_PERIOD_{period}")
    day = overview_data.replace(hour=0, minute=0, second=0)
    windows = {"DAILY": (day, day + timedelta(days=1)),
               "WEEKLY": (day - timedelta(days=day.weekday()), day - timedelta(days=day.weekday() - 7)),
               "MONTHLY": _month(overview_data)}
    if period == "NONE":
        assert not limit.window.HasField("start") and not limit.window.HasField("end")
        assert limit.used_value == _usd(300)
    else:
        start, end = windows[period]
        assert limit.window == pb.Period(start=ts(start), end=ts(end))
        assert limit.used_value == _usd(100)
    assert limit.status == pb.BUDGET_STATUS_OK


async def test_costs_period_must_not_be_inverted(stub):
    now = datetime.now(timezone.utc)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetCosts(pb.GetCostsRequest(period_start=ts(now), period_end=ts(now - timedelta(days=1))),
                            metadata=auth("ov-costs"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "period_end" in violations(err.value)


# --- budget history -----------------------------------------------------------------

HISTORY_BASE = datetime(2026, 3, 4, 12, 0, tzinfo=timezone.utc)  # a month turns inside the range
_H = {"project": "proj-h", "agent": "agent-h", "provider": "prov-h"}


@pytest.fixture(scope="module")
def history_data(database_url):
    """Three budgets on one project/agent/provider, resetting monthly, daily and never, and
    runs before and inside the seven days Feb 26 – Mar 4; another tenant's run on the same
    scope ids, and one of ours on other scope ids, must not count for the budgets."""
    producer = Producer(login_url(database_url, "producer"))
    story = scenarios.Scenario("SDSR-OVW-HISTORY", "", [
        {"limit": {"id": "lim-m", "name": "A monthly", "scope": "PROJECT", "scope_id": "proj-h", "max_value": 1000,
                   "reset_period": "MONTHLY", "at": "-60d"}},
        {"limit": {"id": "lim-d", "name": "B daily", "scope": "AGENT", "scope_id": "agent-h", "max_value": 100,
                   "reset_period": "DAILY", "at": "-60d"}},
        {"limit": {"id": "lim-n", "name": "C never", "scope": "PROVIDER", "scope_id": "prov-h", "max_value": 500,
                   "reset_period": "NONE", "at": "-60d"}},
        {"worker_run": {"id": "run-old", **_H, "cost_cents": 300, "at": "-40d"}},      # Jan 23
        {"worker_run": {"id": "run-carry", **_H, "cost_cents": 100, "at": "-10d"}},    # Feb 22
        {"worker_run": {"id": "run-feb", **_H, "cost_cents": 700, "at": "-5d"}},       # Feb 27
        {"worker_run": {"id": "run-mar", **_H, "cost_cents": 1000, "at": "-2d"}},      # Mar 2
        {"worker_run": {"id": "run-else", "project": "proj-x", "agent": "agent-x", "provider": "prov-x",
                        "cost_cents": 50, "at": "-1d"}},                                # Mar 3
    ], SCENARIOS / "generated")
    scenarios.load(producer, story, "ov-history", base=HISTORY_BASE)
    foreign = scenarios.Scenario("SDSR-OVW-HISTORY-FOREIGN", "", [
        {"worker_run": {"id": "run-big", **_H, "cost_cents": 99999, "at": "-2d"}}], SCENARIOS / "generated")
    scenarios.load(producer, foreign, "ov-history-other", base=HISTORY_BASE)
    producer.close()
    return HISTORY_BASE


async def test_budget_history_per_scope_against_each_window(stub, history_data):
    r = await stub.GetBudgetHistory(pb.GetBudgetHistoryRequest(days=7, until=ts(history_data)),
                                    metadata=auth("ov-history"))
    first = datetime(2026, 2, 26, tzinfo=timezone.utc)
    assert r.period == pb.Period(start=ts(first), end=ts(datetime(2026, 3, 5, tzinfo=timezone.utc)))
    assert [a.amount_cents for a in r.tenant_daily_spend] == [0, 700, 0, 0, 1000, 50, 0]
    ok, near, breached = pb.BUDGET_STATUS_OK, pb.BUDGET_STATUS_NEAR_THRESHOLD, pb.BUDGET_STATUS_BREACHED
    expected = {  # used in the window at each day's end, and the state
        "A monthly": ([100, 800, 800, 0, 1000, 1000, 1000], [ok, near, near, ok, breached, breached, breached]),
        "B daily": ([0, 700, 0, 0, 1000, 0, 0], [ok, breached, ok, ok, breached, ok, ok]),
        "C never": ([400, 1100, 1100, 1100, 2100, 2100, 2100], [near] + [breached] * 6),
    }
    assert [b.budget.name for b in r.budgets] == list(expected)
    for b in r.budgets:
        used, states = expected[b.budget.name]
        assert [d.day.ToDatetime(tzinfo=timezone.utc) for d in b.days] == [first + timedelta(days=i) for i in range(7)]
        assert [d.spent.amount_cents for d in b.days] == [0, 700, 0, 0, 1000, 0, 0], b.budget.name
        assert [d.window_used.amount_cents for d in b.days] == used, b.budget.name
        assert [d.status for d in b.days] == states, b.budget.name
        assert all(d.window_used.currency_code == "USD" for d in b.days)
    monthly = r.budgets[0]
    assert [d.window.start.ToDatetime(tzinfo=timezone.utc).month for d in monthly.days] == [2, 2, 2, 3, 3, 3, 3]
    assert monthly.days[1].utilization_bp == 8000
    assert not r.budgets[2].days[0].window.HasField("start")  # NONE: all time


async def test_budget_history_defaults_and_bad_input(stub, history_data):
    r = await stub.GetBudgetHistory(pb.GetBudgetHistoryRequest(), metadata=auth("ov-history"))
    assert len(r.tenant_daily_spend) == 14 and all(len(b.days) == 14 for b in r.budgets)
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    assert r.period.end.ToDatetime(tzinfo=timezone.utc) in (today + timedelta(days=1), today + timedelta(days=2))
    for days in (-1, 93):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetBudgetHistory(pb.GetBudgetHistoryRequest(days=days), metadata=auth("ov-history"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "days" in violations(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # its month's window would end past year 9999
        await stub.GetBudgetHistory(pb.GetBudgetHistoryRequest(until=ts(datetime(9999, 12, 25, tzinfo=timezone.utc))),
                                    metadata=auth("ov-history"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "until" in violations(err.value)
    other = await stub.GetBudgetHistory(pb.GetBudgetHistoryRequest(days=7, until=ts(history_data)),
                                        metadata=auth("ov-history-other"))
    assert not other.budgets and [a.amount_cents for a in other.tenant_daily_spend] == [0, 0, 0, 0, 99999, 0, 0]


# --- decisions --------------------------------------------------------------------

def _decisions(response) -> list[tuple]:
    return [(d.entity_id.split(".", 1)[1], pb.DecisionSource.Name(d.source_domain)[16:],
             pb.DecisionType.Name(d.decision_type)[14:], pb.DecisionPriority.Name(d.priority)[18:])
            for d in response.decisions]


QUEUE = [  # newest first; at -30m the incident and the proposal tie on time, the id orders them
    ("prop-draft-2", "POLICY", "APPROVE", "MEDIUM"),
    ("inc-low", "INCIDENT", "ACK", "LOW"),
    ("prop-draft-1", "POLICY", "APPROVE", "MEDIUM"),
    ("inc-medium", "INCIDENT", "ACK", "MEDIUM"),
    ("inc-high", "INCIDENT", "ACK", "HIGH"),
    ("inc-critical", "INCIDENT", "ACK", "CRITICAL"),
]


async def test_decision_queue(stub, overview_data):
    r = await stub.ListDecisions(pb.ListDecisionsRequest(), metadata=auth("ov-decisions"))
    assert _decisions(r) == QUEUE
    assert (r.total_size, r.total_size_is_estimate, r.has_more, r.next_page_token) == (6, False, False, "")
    first = r.decisions[0]
    assert first.entity_type == evidence_pb2.AUDIT_ENTITY_TYPE_POLICY_PROPOSAL
    assert first.summary == "Lower support budget"
    assert first.created_at.ToDatetime(tzinfo=timezone.utc) == overview_data - timedelta(minutes=1)
    incident = r.decisions[-1]
    assert (incident.entity_type, incident.summary) == (evidence_pb2.AUDIT_ENTITY_TYPE_INCIDENT,
                                                        "Agent exfiltrating customer data")


async def test_decision_pages_walk_the_queue_once(stub):
    seen, token, pages = [], "", 0
    while True:
        r = await stub.ListDecisions(pb.ListDecisionsRequest(page_size=2, page_token=token),
                                     metadata=auth("ov-decisions"))
        seen += _decisions(r)
        pages += 1
        assert r.total_size == 6 and r.has_more == bool(r.next_page_token)
        token = r.next_page_token
        if not token:
            break
    assert (seen, pages) == (QUEUE, 3)


@pytest.mark.parametrize("source, priority, expected", [
    (pb.DECISION_SOURCE_INCIDENT, 0, ["inc-low", "inc-medium", "inc-high", "inc-critical"]),
    (pb.DECISION_SOURCE_POLICY, 0, ["prop-draft-2", "prop-draft-1"]),
    (0, pb.DECISION_PRIORITY_MEDIUM, ["prop-draft-2", "prop-draft-1", "inc-medium"]),
    (0, pb.DECISION_PRIORITY_CRITICAL, ["inc-critical"]),
    (pb.DECISION_SOURCE_POLICY, pb.DECISION_PRIORITY_HIGH, []),
    (pb.DECISION_SOURCE_INCIDENT, pb.DECISION_PRIORITY_LOW, ["inc-low"]),
])
async def test_decision_filters(stub, source, priority, expected):
    r = await stub.ListDecisions(pb.ListDecisionsRequest(source_domain=source, priority=priority),
                                 metadata=auth("ov-decisions"))
    assert [d[0] for d in _decisions(r)] == expected
    assert r.total_size == len(expected)


async def test_decision_token_is_bound_to_filters_and_tenant(stub):
    r = await stub.ListDecisions(pb.ListDecisionsRequest(page_size=1), metadata=auth("ov-decisions"))
    for request, tenant in ((pb.ListDecisionsRequest(page_token=r.next_page_token,
                                                     source_domain=pb.DECISION_SOURCE_POLICY), "ov-decisions"),
                            (pb.ListDecisionsRequest(page_token=r.next_page_token), "ov-attention")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListDecisions(request, metadata=auth(tenant))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in violations(err.value)


@pytest.mark.parametrize("request_, field", [
    (pb.ListDecisionsRequest(page_size=-1), "page_size"),
    (pb.ListDecisionsRequest(source_domain=9), "source_domain"),
    (pb.ListDecisionsRequest(priority=42), "priority"),
    (pb.ListDecisionsRequest(page_token="not-a-token"), "page_token"),
])
async def test_decision_bad_input(stub, request_, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListDecisions(request_, metadata=auth("ov-decisions"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(err.value)


async def test_every_answer_is_the_callers_tenant_only(stub):
    """Another tenant's data never shows: a tenant with none sees an empty projection."""
    r = await stub.GetHighlights(pb.GetHighlightsRequest(), metadata=auth("ov-nobody"))
    assert r.pulse.status == pb.PULSE_STATUS_HEALTHY
    assert _counts(r) == {"Incidents": (0, 0, 0, False), "Policies": (0, 0, 0, False), "Activity": (0, 0, 0, False)}
    d = await stub.ListDecisions(pb.ListDecisionsRequest(), metadata=auth("ov-nobody"))
    assert (len(d.decisions), d.total_size) == (0, 0)
    c = await stub.GetCosts(pb.GetCostsRequest(), metadata=auth("ov-nobody"))
    assert (len(c.limits), c.actuals.llm_run_cost.amount_cents, c.violations.breach_count) == (0, 0, 0)
