"""``runs trace``: an LLM run's steps, with the inflection point marked."""
from __future__ import annotations

import argparse

from rich.text import Text

from aos.logs.v1 import llm_runs_service_pb2 as pb
from aos_cli.client import EXIT_OK, UsageError
from aos_cli.context import Context
from aos_cli.output import when
from aos_cli.pages import MAX_PAGE
from aos_cli.values import enum_label

INFLECTION = Text("▶ violation", style="bold red")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("runs", help="LLM runs").add_subparsers(dest="action", required=True)
    trace = group.add_parser("trace", parents=[common], help="a run's trace: steps, inflection point, trace hash")
    trace.add_argument("run_id", metavar="RUN_ID", help="the run; - (any run) with --trace")
    trace.add_argument("--trace", dest="trace_id", help="this trace of the run (with RUN_ID -: whichever run's)")
    trace.add_argument("--limit", type=int, default=0, help="steps to show, following pages (default 0: all)")
    trace.set_defaults(handler=trace_command)


def cents(amount: int) -> str:
    """Integer cents as a decimal amount, without a float in between."""
    sign = "-" if amount < 0 else ""
    return f"{sign}{abs(amount) // 100}.{abs(amount) % 100:02d}"


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
