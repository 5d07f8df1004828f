"""``runs list``: the tenant's LLM runs, searched and sorted; ``runs trace``: an LLM run's
steps, with the inflection point marked; ``runs governance``: its O3, searched and sorted;
``runs replay``: the O4 window around it, and with ``--at-step`` the state at one step with its
hashes."""
from __future__ import annotations

import argparse

from google.protobuf import json_format
from rich.text import Text

from aos.logs.v1 import llm_runs_service_pb2 as pb, records_pb2
from aos_cli.client import EXIT_OK, UsageError
from aos_cli.context import Context
from aos_cli.output import when
from aos_cli.pages import MAX_PAGE, read_pages
from aos_cli.values import enum_label, enum_labels, enum_value, payload_shown

INFLECTION = Text("▶ violation", style="bold red")
SORT_FIELD = "aos.logs.v1.LlmRunSortField"
SORT_ORDER = "aos.evidence.v1.SortOrder"
AUDIT_SORT_FIELD = "aos.logs.v1.AuditSortField"
RUN_COLUMNS = ("run", "started", "status", "model", "tokens", "cost")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("runs", help="LLM runs").add_subparsers(dest="action", required=True)
    listing = group.add_parser("list", parents=[common], help="list runs, newest first")
    listing.add_argument("--agent-id")
    listing.add_argument("--model")
    listing.add_argument("--search", help='full-text search in the runs\' steps, as `aos-evidence search` reads it')
    listing.add_argument("--order", choices=("desc", "asc"), default="desc",
                         help="desc: newest first, highest first (default); asc: the reverse")
    listing.add_argument("--sort", choices=tuple(enum_labels(SORT_FIELD).values()), default="created_at",
                         help="sort by this field, then time, in --order's direction (default created_at)")
    listing.add_argument("--limit", type=int, default=50, help="runs to show, following pages (0: all; default 50)")
    listing.set_defaults(handler=list_command)
    trace = group.add_parser("trace", parents=[common], help="a run's trace: steps, inflection point, trace hash")
    trace.add_argument("run_id", metavar="RUN_ID", help="the run; - (any run) with --trace")
    trace.add_argument("--trace", dest="trace_id", help="this trace of the run (with RUN_ID -: whichever run's)")
    trace.add_argument("--limit", type=int, default=0, help="steps to show, following pages (default 0: all)")
    trace.set_defaults(handler=trace_command)
    governance = group.add_parser("governance", parents=[common],
                                  help="a run's governance (O3): correlated audit entries, overrides, policy steps, "
                                       "limit breaches")
    governance.add_argument("run_id", metavar="RUN_ID", help="the run")
    governance.add_argument("--search", help="only the entries and policy steps whose words match, as "
                                             "`aos-evidence search` reads a query")
    governance.add_argument("--order", choices=("asc", "desc"), default="asc",
                            help="asc: oldest (first step) first (default, the view's order); desc: the reverse")
    governance.add_argument("--sort", choices=tuple(enum_labels(AUDIT_SORT_FIELD).values()), default="created_at",
                            help="sort the audit entries by this field, then time, in --order's direction")
    governance.set_defaults(handler=governance_command)
    replay = group.add_parser("replay", parents=[common],
                              help="a run's replay window (O4); with --at-step, the state at that step")
    replay.add_argument("run_id", metavar="RUN_ID", help="the run")
    replay.add_argument("--at-step", type=int, dest="at_step",
                        help="stand at this step: its input and output, policy decisions, tokens and cost so far, "
                             "with their hashes (the window centres on it)")
    replay.add_argument("--window", type=int, default=0, dest="window_seconds",
                        help="half-width of the window in seconds, 1-600 (default 0: 30)")
    replay.set_defaults(handler=replay_command)


def cents(amount: int) -> str:
    """Integer cents as a decimal amount, without a float in between."""
    sign = "-" if amount < 0 else ""
    return f"{sign}{abs(amount) // 100}.{abs(amount) % 100:02d}"


def list_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or positive")
    request = pb.ListLlmRunsRequest(agent_id=args.agent_id or "", model=args.model or "", search=args.search or "")
    request.order = enum_value(SORT_ORDER, args.order, "--order")  # type: ignore[assignment]  # an int is the enum at run time
    request.sort = enum_value(SORT_FIELD, args.sort, "--sort")  # type: ignore[assignment]  # as order
    result = read_pages(ctx.client.runs.ListLlmRuns, request, pb.ListLlmRunsResponse(), "runs", args.limit)
    if ctx.out.json_mode:
        ctx.out.document(result)
        return EXIT_OK
    estimate = "~" if result.total_size_is_estimate else ""
    first = "oldest first" if args.order == "asc" else "newest first"
    how = first if args.sort == "created_at" else f"by {args.sort} {args.order}, then {first}"
    ctx.out.table(RUN_COLUMNS, ([r.run_id, when(r.started_at), enum_label("aos.evidence.v1.LlmRunStatus", r.status),
                                 r.model, str(r.input_tokens + r.output_tokens), cents(r.cost.amount_cents)]
                                for r in result.runs),
                  title=f"{len(result.runs)} of {estimate}{result.total_size} runs ({how})")
    return EXIT_OK


def read_trace(ctx: Context, request: pb.GetLlmRunTraceRequest, limit: int) -> pb.GetLlmRunTraceResponse:
    """The trace with up to ``limit`` steps (0: every step), read a page at a time."""
    answer = pb.GetLlmRunTraceResponse()
    while True:
        request.page_size = MAX_PAGE if limit == 0 else min(MAX_PAGE, limit - len(answer.steps))
        page = ctx.client.runs.GetLlmRunTrace(request)
        steps = list(answer.steps) + list(page.steps)
        answer.CopyFrom(page)
        del answer.steps[:]
        answer.steps.extend(steps)
        if not page.has_more or (limit and len(answer.steps) >= limit):
            return answer
        request.page_token = page.next_page_token


def trace_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or positive")
    answer = read_trace(ctx, pb.GetLlmRunTraceRequest(run_id=args.run_id, trace_id=args.trace_id or ""), args.limit)
    if ctx.out.json_mode:
        ctx.out.document(answer)
        return EXIT_OK
    trace = answer.trace
    summary: list[tuple[str, str | Text]] = [("run", trace.run_id), ("trace", trace.trace_id),
               ("status", enum_label("aos.evidence.v1.TraceStatus", trace.status)),
               ("started / completed", f"{when(trace.started_at)} / {when(trace.completed_at)}"),
               ("steps / tokens / ms", f"{answer.total_steps} / {answer.total_tokens} / {answer.total_duration_ms}"),
               ("cost", f"{cents(trace.total_cost.amount_cents)} {trace.total_cost.currency_code}"),
               ("trace hash", trace.content_hash if trace.HasField("content_hash") else "- (not sealed)")]
    if trace.HasField("violation_step_index"):
        summary += [("inflection point", Text(f"step {trace.violation_step_index} at "
                                              f"{when(trace.violation_timestamp)}", style="bold red")),
                    ("violated policy", trace.violation_policy_id or "-"),
                    ("reason", trace.violation_reason or "-")]
    if trace.HasField("incident_id"):
        summary.append(("incident", trace.incident_id))
    ctx.out.fields(summary, title=f"Trace of {trace.run_id}")
    ctx.out.table(("", "#", "type", "level", "source", "time", "tokens", "cost", "ms", "content hash"), (
        [INFLECTION if step.is_inflection_point else "", step.step_index,
         enum_label("aos.evidence.v1.StepType", step.step_type), enum_label("aos.evidence.v1.StepLevel", step.level),
         step.source, when(step.timestamp), step.tokens, cents(step.cost_cents), step.duration_ms,
         step.content_hash[:16] + "…"]
        for step in answer.steps))
    return EXIT_OK


def governance_command(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.GetLlmRunGovernanceRequest(run_id=args.run_id, search=args.search or "")
    request.order = enum_value(SORT_ORDER, args.order, "--order")  # type: ignore[assignment]  # an int is the enum at run time
    request.sort = enum_value(AUDIT_SORT_FIELD, args.sort, "--sort")  # type: ignore[assignment]  # as order
    answer = ctx.client.runs.GetLlmRunGovernance(request)
    if ctx.out.json_mode:
        ctx.out.document(answer)
        return EXIT_OK
    first = "oldest first" if args.order == "asc" else "newest first"
    how = first if args.sort == "created_at" else f"by {args.sort} {args.order}, then {first}"
    matching = f" matching “{args.search}”" if args.search else ""
    overrides = {e.id for e in answer.overrides}
    ctx.out.table(("seq", "time", "event", "actor", "entity", "reason"), (
        [str(e.seq), when(e.created_at),
         enum_label("aos.evidence.v1.AuditEventType", e.event_type) + (" (override)" if e.id in overrides else ""),
         e.actor_id or "-", e.entity_id, payload_shown(e, "action_reason", e.action_reason or "-")]
        for e in answer.audit_entries),
        title=f"Governance of {args.run_id}: {len(answer.audit_entries)} audit entries{matching} ({how})")
    ctx.out.table(("", "#", "type", "time", "content hash"), (
        [INFLECTION if s.is_inflection_point else "", s.step_index, enum_label("aos.evidence.v1.StepType", s.step_type),
         when(s.timestamp), s.content_hash[:16] + "…"] for s in answer.policy_steps),
        title=f"{len(answer.policy_steps)} policy steps{matching}")
    ctx.out.table(("breach", "limit", "value / limit", "time"), (
        [b.id, b.limit_id, f"{b.value_at_breach} / {b.limit_value}", when(b.breached_at)]
        for b in answer.limit_breaches), title=f"{len(answer.limit_breaches)} limit breaches")
    return EXIT_OK


def replay_command(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.GetLlmRunReplayRequest(run_id=args.run_id, window_seconds=args.window_seconds)
    if args.at_step is not None:
        request.at_step = args.at_step  # a negative step goes to the server, which names the field
    answer = ctx.client.runs.GetLlmRunReplay(request)
    if ctx.out.json_mode:
        ctx.out.document(answer)
        return EXIT_OK
    window = answer.replay
    ctx.out.fields([("run", window.run_id),
                    ("centre", f"{enum_label('aos.logs.v1.ReplayCenter', window.center)} at "
                               f"{when(window.center_timestamp)}"),
                    ("window", f"{when(window.window_start)} .. {when(window.window_end)} "
                               f"(±{window.window_seconds} s)")], title=f"Replay of {window.run_id}")
    ctx.out.table(("time", "kind", "what", "hash"), (
        [when(event.occurred_at), enum_label("aos.logs.v1.ReplayEventKind", event.kind), *_event(event)]
        for event in window.events))
    if answer.HasField("state"):
        state = answer.state
        step = state.step
        ctx.out.fields([
            ("step", Text(f"{state.step_index} of 0..{state.last_step_index} ▶ violation", style="bold red")
             if step.is_inflection_point else f"{state.step_index} of 0..{state.last_step_index}"),
            ("type / source", f"{enum_label('aos.evidence.v1.StepType', step.step_type)} / {step.source}"),
            ("input", payload_shown(step, "input_data", json_format.MessageToJson(step.input_data, indent=None)
                                    if step.HasField("input_data") else "-")),
            ("output", payload_shown(step, "output_data", json_format.MessageToJson(step.output_data, indent=None)
                                     if step.HasField("output_data") else "-")),
            ("step hash", step.content_hash),
            ("steps / tokens / ms so far", f"{state.steps_so_far} / {state.tokens} / {state.duration_ms}"),
            ("cost so far", f"{cents(state.cost.amount_cents)} {state.cost.currency_code}"),
            ("steps hash (0..step)", state.steps_hash)], title=f"State at step {state.step_index}")
        ctx.out.table(("policy decision", "hash"), (
            [*([f"step {s.step_index} {enum_label('aos.evidence.v1.StepType', s.step_type)}", s.content_hash]
               for s in state.policy_steps),
             *([f"audit #{e.seq} {enum_label('aos.evidence.v1.AuditEventType', e.event_type)} {e.entity_id}",
                e.chain_hash] for e in state.audit_entries),
             *([f"breach {b.id} of {b.limit_id}: {b.value_at_breach} / {b.limit_value}", "- (no hash)"]
               for b in state.limit_breaches)]))
    return EXIT_OK


def _event(event: records_pb2.ReplayEvent) -> tuple[str, str]:
    """What a replay event is, and its hash (a breach has none)."""
    kind = event.WhichOneof("payload")
    if kind == "step":
        return (f"step {event.step.step_index} {enum_label('aos.evidence.v1.StepType', event.step.step_type)}",
                event.step.content_hash)
    if kind == "system_record":
        record = event.system_record
        return f"{record.component}: {payload_shown(record, 'summary', record.summary)}", record.content_hash
    if kind == "audit_entry":
        entry = event.audit_entry
        return (f"{enum_label('aos.evidence.v1.AuditEventType', entry.event_type)} {entry.entity_id}",
                entry.content_hash)
    breach = event.limit_breach
    return f"breach of {breach.limit_id}: {breach.value_at_breach} / {breach.limit_value}", "-"
