"""``search``: full-text search over the tenant's evidence (audit entries, trace steps, system records)."""
from __future__ import annotations

import argparse
from typing import Any

from aos.logs.v1 import evidence_search_service_pb2 as pb
from aos_cli.client import EXIT_OK, UsageError
from aos_cli.context import Context
from aos_cli.output import when
from aos_cli.pages import read_pages
from aos_cli.values import enum_label, enum_value, timestamp

SOURCE = "aos.logs.v1.EvidenceSource"

COLUMNS = ("time", "source", "record", "what", "matched")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    search = sub.add_parser(
        "search", parents=[common], help="find evidence by its words, newest first",
        description='Words must all occur; "a phrase" in quotes; `or` between alternatives; -word excludes. '
                    "Whole words, case-insensitive, no stemming; an id is found whole or by its parts. "
                    "A query that starts with - follows `--` (aos-evidence search -- -word other).")
    search.add_argument("query", metavar="QUERY", help='e.g. refund, "budget exceeded", run-support-103')
    search.add_argument("--source", action="append", default=[], metavar="SOURCE",
                        help="AUDIT, TRACE_STEP or SYSTEM (repeat for several; default all)")
    search.add_argument("--run-id")
    search.add_argument("--actor-id")
    search.add_argument("--correlation-id")
    search.add_argument("--since", help="created at or after (ISO 8601, UTC when no zone)")
    search.add_argument("--until", help="created before (ISO 8601)")
    search.add_argument("--limit", type=int, default=50, help="hits to show, following pages (0: all; default 50)")
    search.set_defaults(handler=search_command)


def request_of(args: argparse.Namespace) -> pb.SearchEvidenceRequest:
    fields: dict[str, Any] = {"query": args.query}
    fields["sources"] = [enum_value(SOURCE, source, "--source") for source in args.source]
    for option in ("run_id", "actor_id", "correlation_id"):
        if getattr(args, option):
            fields[option] = getattr(args, option)
    if args.since:
        fields["created_after"] = timestamp(args.since, "--since")
    if args.until:
        fields["created_before"] = timestamp(args.until, "--until")
    return pb.SearchEvidenceRequest(**fields)


def cells(hit: pb.SearchHit) -> list[str]:
    kind = hit.WhichOneof("record")
    if kind == "audit_entry":
        entry = hit.audit_entry
        record = f"ledger #{entry.seq}"
        what = f"{enum_label('aos.evidence.v1.AuditEventType', entry.event_type)} {entry.entity_id}" + \
            (f": {entry.action_reason}" if entry.HasField("action_reason") else "")
    elif kind == "trace_step":
        step = hit.trace_step
        record = f"{step.trace_id} step {step.step.step_index}"
        what = enum_label("aos.evidence.v1.StepType", step.step.step_type)
    else:
        system = hit.system_record
        record = system.id + (" (system-wide)" if system.system_wide else "")
        what = f"{system.component}: {system.summary}"
    return [when(hit.created_at), enum_label(SOURCE, hit.source), record, what, ", ".join(hit.matched_fields)]


def search_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or positive")
    request = request_of(args)
    result = read_pages(ctx.client.search.SearchEvidence, request, pb.SearchEvidenceResponse(), "hits", args.limit)
    if ctx.out.json_mode:
        ctx.out.document(result)
        return EXIT_OK
    estimate = "~" if result.total_size_is_estimate else ""
    ctx.out.table(COLUMNS, (cells(h) for h in result.hits),
                  title=f"{len(result.hits)} of {estimate}{result.total_size} hits for {args.query!r} (newest first)")
    return EXIT_OK
