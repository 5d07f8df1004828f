"""``overview highlights | costs | decisions``: the Overview service's three reads (SPEC §3)."""
from __future__ import annotations

import argparse

from aos.overview.v1 import overview_service_pb2 as pb
from aos_cli.client import EXIT_OK, UsageError
from aos_cli.commands.runs import cents
from aos_cli.context import Context
from aos_cli.output import when
from aos_cli.pages import read_pages
from aos_cli.values import enum_label, enum_value, timestamp

PULSE = "aos.overview.v1.PulseStatus"
BUDGET = "aos.overview.v1.BudgetStatus"
SOURCE = "aos.overview.v1.DecisionSource"
DECISION = "aos.overview.v1.DecisionType"
PRIORITY = "aos.overview.v1.DecisionPriority"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("overview", help="the tenant's overview: highlights, costs, pending decisions"
                           ).add_subparsers(dest="action", required=True)
    highlights = group.add_parser("highlights", parents=[common], help="pulse and counts per domain")
    highlights.set_defaults(handler=highlights_command)

    costs = group.add_parser("costs", parents=[common], help="spend, budget limits and breaches of a period",
                             description="Default period: the current calendar month (UTC).")
    costs.add_argument("--since", help="period start (ISO 8601, UTC when no zone)")
    costs.add_argument("--until", help="period end, exclusive (ISO 8601)")
    costs.set_defaults(handler=costs_command)

    decisions = group.add_parser("decisions", parents=[common], help="pending decisions, newest first")
    decisions.add_argument("--source", help="INCIDENT or POLICY")
    decisions.add_argument("--priority", help="CRITICAL, HIGH, MEDIUM or LOW")
    decisions.add_argument("--limit", type=int, default=50, help="decisions to show, following pages (0: all; "
                                                                 "default 50)")
    decisions.set_defaults(handler=decisions_command)


def money(value) -> str:
    return f"{cents(value.amount_cents)} {value.currency_code}".strip()


def highlights_command(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.overview.GetHighlights(pb.GetHighlightsRequest())
    if ctx.out.json_mode:
        ctx.out.document(answer)
        return EXIT_OK
    pulse = answer.pulse
    ctx.out.fields([("pulse", enum_label(PULSE, pulse.status)), ("why", pulse.reason),
                    ("active incidents", pulse.active_incidents),
                    ("pending decisions", pulse.pending_decisions), ("recent breaches", pulse.recent_breaches),
                    ("last activity", when(answer.last_activity_at)), ("computed", when(answer.computed_at))],
                   title="Highlights")
    ctx.out.table(("domain", "total", "pending", "critical"), (
        [d.domain, f"~{d.total}" if d.total_is_estimate else d.total, d.pending, d.critical]
        for d in answer.domain_counts))
    return EXIT_OK


def costs_command(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.GetCostsRequest()
    if args.since:
        request.period_start.CopyFrom(timestamp(args.since, "--since"))
    if args.until:
        request.period_end.CopyFrom(timestamp(args.until, "--until"))
    answer = ctx.client.overview.GetCosts(request)
    if ctx.out.json_mode:
        ctx.out.document(answer)
        return EXIT_OK
    ctx.out.fields([("period", f"{when(answer.period.start)} – {when(answer.period.end)}"),
                    ("currency", answer.currency), ("LLM run cost", money(answer.actuals.llm_run_cost)),
                    ("breaches", answer.violations.breach_count),
                    ("total overage", money(answer.violations.total_overage))], title="Costs")
    ctx.out.table(("limit", "name", "scope", "used", "max", "remaining", "utilization", "status"), (
        [limit.limit_id, limit.name,
         enum_label("aos.evidence.v1.LimitScope", limit.scope) + (f":{limit.scope_id}" if limit.scope_id else ""),
         money(limit.used_value), money(limit.max_value), money(limit.remaining_value),
         f"{limit.utilization_bp / 100:.2f}%", enum_label(BUDGET, limit.status)]
        for limit in answer.limits), title="Budget limits")
    return EXIT_OK


def decisions_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or positive")
    request = pb.ListDecisionsRequest()
    if args.source:
        request.source_domain = enum_value(SOURCE, args.source, "--source")  # type: ignore[assignment]  # an int is the enum at run time
    if args.priority:
        request.priority = enum_value(PRIORITY, args.priority, "--priority")  # type: ignore[assignment]
    result = read_pages(ctx.client.overview.ListDecisions, request, pb.ListDecisionsResponse(), "decisions",
                        args.limit)
    if ctx.out.json_mode:
        ctx.out.document(result)
        return EXIT_OK
    estimate = "~" if result.total_size_is_estimate else ""
    ctx.out.table(("created", "priority", "decision", "source", "entity", "summary"), (
        [when(d.created_at), enum_label(PRIORITY, d.priority), enum_label(DECISION, d.decision_type),
         enum_label(SOURCE, d.source_domain),
         f"{enum_label('aos.evidence.v1.AuditEntityType', d.entity_type)}:{d.entity_id}", d.summary]
        for d in result.decisions),
        title=f"{len(result.decisions)} of {estimate}{result.total_size} pending decisions (newest first)")
    return EXIT_OK
