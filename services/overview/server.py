"""OverviewService: a read-only projection over other domains' tables (owns none).

Handlers validate, call the store and the domain rules, and build protos; the SQL
is in store.py, the rules in projection.py.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import grpc

from aos.evidence.v1 import evidence_pb2, sources_pb2
from aos.overview.v1 import overview_service_pb2 as pb, overview_service_pb2_grpc as pb_grpc
from aos_runtime import auth
from aos_runtime.evidence import timestamp
from aos_runtime.pagination import Listing
from aos_runtime.periods import month_of, reset_window
from aos_runtime.server import ServiceContext, Servicer
from aos_runtime.validation import Request, canonical_values
from services.overview import projection, store

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["OverviewService"]
CURRENCY = "USD"  # worker_runs.cost_cents are USD cents; only USD budgets compare with them
_LIMIT_SCOPES = canonical_values(sources_pb2.LimitScope)
_RESET_PERIODS = canonical_values(sources_pb2.ResetPeriod)
HISTORY_DAYS = 14       # GetBudgetHistory's default range
MAX_HISTORY_DAYS = 92   # about a quarter: a chart's worth of days
HISTORY_LATEST = datetime(9999, 12, 1, tzinfo=timezone.utc)
_SOURCES = {pb.DECISION_SOURCE_INCIDENT: "INCIDENT", pb.DECISION_SOURCE_POLICY: "POLICY"}
_PRIORITIES = {pb.DECISION_PRIORITY_CRITICAL: "CRITICAL", pb.DECISION_PRIORITY_HIGH: "HIGH",
               pb.DECISION_PRIORITY_MEDIUM: "MEDIUM", pb.DECISION_PRIORITY_LOW: "LOW"}


def _money(amount_cents: int) -> evidence_pb2.Money:
    return evidence_pb2.Money(currency_code=CURRENCY, amount_cents=amount_cents)


def _period(start: datetime | None, end: datetime | None) -> pb.Period:
    period = pb.Period()
    if start is not None:
        period.start.CopyFrom(timestamp(start))
    if end is not None:
        period.end.CopyFrom(timestamp(end))
    return period


class OverviewService(pb_grpc.OverviewServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def GetHighlights(self, request: pb.GetHighlightsRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetHighlightsResponse:
        tenant = auth.principal().tenant_id
        now = datetime.now(timezone.utc)
        counts, totals = await self.ctx.db.run(tenant, store.highlights, tenant, now - projection.RECENT_BREACHES)
        pending_decisions = counts.active_incidents + counts.draft_proposals
        status = projection.pulse_status(critical_incidents=counts.critical_incidents,
                                         pending_decisions=pending_decisions, recent_breaches=counts.recent_breaches)
        reason = projection.pulse_reason(status=status, critical_incidents=counts.critical_incidents,
                                         active_incidents=counts.active_incidents,
                                         draft_proposals=counts.draft_proposals, recent_breaches=counts.recent_breaches)
        pending = {"Incidents": (counts.active_incidents, counts.critical_incidents),
                   "Policies": (counts.draft_proposals, 0), "Activity": (counts.pending_runs, 0)}
        response = pb.GetHighlightsResponse(
            pulse=pb.Pulse(status=f"PULSE_STATUS_{status}",
                           active_incidents=counts.active_incidents, pending_decisions=pending_decisions,
                           recent_breaches=counts.recent_breaches, reason=reason,
                           critical_incidents=counts.critical_incidents),
            domain_counts=[pb.DomainCount(domain=domain, total=total, total_is_estimate=estimate,
                                          pending=pending[domain][0], critical=pending[domain][1])
                           for domain, (total, estimate) in totals.items()],
            computed_at=timestamp(now))
        if counts.last_activity_at is not None:
            response.last_activity_at.CopyFrom(timestamp(counts.last_activity_at))
        return response

    async def GetCosts(self, request: pb.GetCostsRequest, context: grpc.aio.ServicerContext) -> pb.GetCostsResponse:
        r = Request()
        now = datetime.now(timezone.utc)
        default_start, default_end = month_of(now)
        start = r.timestamp(request, "period_start") or default_start
        end = r.timestamp(request, "period_end") or default_end
        if start >= end:
            r.violations.add("period_end", "must be later than period_start")
        r.done()
        tenant = auth.principal().tenant_id
        windows = {period: reset_window(period, now) for period in _RESET_PERIODS}
        costs = await self.ctx.db.run(tenant, store.costs, tenant, CURRENCY, start, end, windows)
        return pb.GetCostsResponse(
            currency=CURRENCY, period=_period(start, end),
            actuals=pb.CostActuals(llm_run_cost=_money(costs.spent_cents)),
            limits=[_budget_limit(row, windows[row["reset_period"]], used) for row, used in costs.budgets],
            violations=pb.CostViolations(breach_count=costs.breach_count,
                                         total_overage=_money(projection.cents(costs.overage))))

    async def GetBudgetHistory(self, request: pb.GetBudgetHistoryRequest,
                               context: grpc.aio.ServicerContext) -> pb.GetBudgetHistoryResponse:
        r = Request()
        days = request.days or HISTORY_DAYS
        r.violations.check(1 <= days <= MAX_HISTORY_DAYS, "days", f"must be between 1 and {MAX_HISTORY_DAYS}")
        now = datetime.now(timezone.utc)
        until = r.timestamp(request, "until") or now
        # Its month's reset window must end inside the calendar Python and Postgres share.
        r.violations.check(until < HISTORY_LATEST, "until", f"must be before {HISTORY_LATEST.date()}")
        r.done()
        tenant = auth.principal().tenant_id
        last = until.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        first = last - timedelta(days=days - 1)
        end = last + timedelta(days=1)
        day_starts = [first + timedelta(days=i) for i in range(days)]
        windows = {period: reset_window(period, now) for period in _RESET_PERIODS}
        first_windows = {period: reset_window(period, first) for period in _RESET_PERIODS}
        history = await self.ctx.db.run(tenant, store.budget_history, tenant, CURRENCY, first, end, windows,
                                        first_windows)
        # Computed once per request, not per budget: each day's timestamp and each reset
        # period's window of each day.
        day_stamps = {day: timestamp(day) for day in day_starts}
        day_windows = {period: {day: reset_window(period, day) for day in day_starts} for period in _RESET_PERIODS}
        window_protos = {period: {day: _period(*w) for day, w in days_of.items()}
                         for period, days_of in day_windows.items()}
        budgets = []
        for (row, used), carried in zip(history.costs.budgets, history.carried, strict=True):
            period = row["reset_period"]
            spent = history.daily.get((row["scope"], row["scope_id"]), {})
            budgets.append(pb.BudgetHistory(
                budget=_budget_limit(row, windows[period], used),
                days=[pb.BudgetDay(day=day_stamps[d.day], spent=_money(d.spent), window=window_protos[period][d.day],
                                   window_used=_money(d.window_used), utilization_bp=d.usage.utilization_bp,
                                   status=f"BUDGET_STATUS_{d.usage.status}")
                      for d in projection.budget_days(row["max_value"], day_starts, spent, carried,
                                                      day_windows[period].__getitem__)]))
        tenant_daily = history.daily[("TENANT", "")]
        return pb.GetBudgetHistoryResponse(
            currency=CURRENCY, period=_period(first, end), budgets=budgets,
            tenant_daily_spend=[_money(tenant_daily.get(d.date(), 0)) for d in day_starts])

    async def ListDecisions(self, request: pb.ListDecisionsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListDecisionsResponse:
        r = Request()
        limit = r.page_size(request.page_size)
        source = priority = None
        if request.source_domain:
            source = _SOURCES.get(request.source_domain)
            r.violations.check(source is not None, "source_domain",
                               f"{request.source_domain} is not a value of DecisionSource")
        if request.priority:
            priority = _PRIORITIES.get(request.priority)
            r.violations.check(priority is not None, "priority",
                               f"{request.priority} is not a value of DecisionPriority")
        r.done()
        listing = Listing.of(self.ctx.page_tokens, auth.principal().tenant_id, "overview.decisions",
                             {"source_domain": source, "priority": priority})
        sources, severities = _decision_scope(source, priority)
        page = await listing.fetch(self.ctx.db, request.page_token, store.list_decisions, sources, severities,
                                   limit=limit)
        # The source breaks ties between an incident and a proposal with one time and id.
        return listing.answer(pb.ListDecisionsResponse, page, page.rows[-1]["source"] if page.rows else None,
                              decisions=[_decision(row) for row in page.rows])


def _decision_scope(source: str | None, priority: str | None) -> tuple[list[str], list[str] | None]:
    """Which branches of the queue to read, and which incident severities, for the filters."""
    sources = [source] if source else ["INCIDENT", "POLICY"]
    if priority is None:
        return sources, None
    severities = [s for s, p in projection.PRIORITY_BY_SEVERITY.items() if p == priority]
    if priority != projection.PROPOSAL_PRIORITY:
        sources = [s for s in sources if s != "POLICY"]
    return sources, severities


def _budget_limit(row, window: tuple[datetime | None, datetime | None], used_cents: int) -> pb.BudgetLimit:
    usage = projection.budget_usage(row["max_value"], used_cents)
    return pb.BudgetLimit(
        limit_id=row["id"], name=row["name"], category=sources_pb2.LIMIT_CATEGORY_BUDGET,
        scope=_LIMIT_SCOPES[row["scope"]], scope_id=row["scope_id"], reset_period=_RESET_PERIODS[row["reset_period"]],
        window=_period(*window), max_value=_money(projection.cents(row["max_value"])), used_value=_money(usage.used),
        remaining_value=_money(projection.cents(usage.remaining)), utilization_bp=usage.utilization_bp,
        status=f"BUDGET_STATUS_{usage.status}")


def _decision(row) -> pb.Decision:
    incident = row["source"] == "INCIDENT"
    priority = projection.PRIORITY_BY_SEVERITY[row["severity"]] if incident else projection.PROPOSAL_PRIORITY
    return pb.Decision(
        source_domain=pb.DECISION_SOURCE_INCIDENT if incident else pb.DECISION_SOURCE_POLICY,
        entity_type=(evidence_pb2.AUDIT_ENTITY_TYPE_INCIDENT if incident
                     else evidence_pb2.AUDIT_ENTITY_TYPE_POLICY_PROPOSAL),
        entity_id=row["id"], decision_type=pb.DECISION_TYPE_ACK if incident else pb.DECISION_TYPE_APPROVE,
        priority=f"DECISION_PRIORITY_{priority}", summary=row["summary"],
        created_at=timestamp(row["created_at"]))


def servicers(ctx: ServiceContext) -> list[Servicer]:
    return [Servicer(DESCRIPTOR, pb_grpc.add_OverviewServiceServicer_to_server, OverviewService(ctx))]
