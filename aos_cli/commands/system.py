"""``system list``: the tenant's system records (ListSystemRecords), as ``audit list`` lists the ledger."""
from __future__ import annotations

import argparse

from aos.logs.v1 import records_pb2, system_logs_service_pb2 as pb
from aos_cli.client import EXIT_OK, UsageError
from aos_cli.commands.audit import sorted_by
from aos_cli.context import Context
from aos_cli.output import when
from aos_cli.pages import read_pages
from aos_cli.values import enum_label, enum_labels, enum_value, timestamp

SEVERITY = "aos.evidence.v1.SystemSeverity"
EVENT_TYPE = "aos.evidence.v1.SystemEventType"
SORT_ORDER = "aos.evidence.v1.SortOrder"
SORT_FIELD = "aos.logs.v1.SystemRecordSortField"

COLUMNS = ("time", "level", "component", "event", "summary", "id")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("system", help="system records").add_subparsers(dest="action", required=True)
    listing = group.add_parser("list", parents=[common], help="list system records, newest first")
    listing.add_argument("--level", help=f"only this severity: {', '.join(enum_labels(SEVERITY).values())}")
    listing.add_argument("--component", help="only this component (exact)")
    listing.add_argument("--event-type", help=f"only this event: {', '.join(enum_labels(EVENT_TYPE).values())}")
    listing.add_argument("--request-id", help="only records produced by this request id")
    listing.add_argument("--since", help="created at or after (ISO 8601, UTC when no zone)")
    listing.add_argument("--until", help="created before (ISO 8601)")
    listing.add_argument("--search", help='full-text search, as `aos-evidence search` reads it (words, "a phrase", '
                                          "-excluded, or)")
    listing.add_argument("--order", choices=("desc", "asc"), default="desc",
                         help="desc: newest first (default); asc: oldest first")
    listing.add_argument("--sort", choices=tuple(enum_labels(SORT_FIELD).values()), default="created_at",
                         help="sort by this field, then time, in --order's direction (default created_at; "
                              "severity ranks DEBUG < INFO < WARNING < ERROR < CRITICAL)")
    listing.add_argument("--limit", type=int, default=50, help="records to show, following pages (0: all; default 50)")
    listing.set_defaults(handler=list_command)


def _request(args: argparse.Namespace) -> pb.ListSystemRecordsRequest:
    request = pb.ListSystemRecordsRequest(component=args.component or "", request_id=args.request_id or "",
                                          search=args.search or "")
    # an int is the enum at run time (protoc's .pyi types these fields as the enum class)
    if args.level:
        request.severity = enum_value(SEVERITY, args.level, "--level")  # type: ignore[assignment]
    if args.event_type:
        request.event_type = enum_value(EVENT_TYPE, args.event_type, "--event-type")  # type: ignore[assignment]
    if args.since:
        request.created_after.CopyFrom(timestamp(args.since, "--since"))
    if args.until:
        request.created_before.CopyFrom(timestamp(args.until, "--until"))
    request.order = enum_value(SORT_ORDER, args.order, "--order")  # type: ignore[assignment]
    request.sort = enum_value(SORT_FIELD, args.sort, "--sort")  # type: ignore[assignment]
    return request


def cells(record: records_pb2.SystemRecord) -> list[str]:
    summary = record.summary if len(record.summary) <= 60 else record.summary[:59] + "…"
    return [when(record.created_at), enum_label(SEVERITY, record.severity), record.component,
            enum_label(EVENT_TYPE, record.event_type), summary, record.id]


def list_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or positive")
    result = read_pages(ctx.client.system.ListSystemRecords, _request(args), pb.ListSystemRecordsResponse(),
                        "records", args.limit)
    if ctx.out.json_mode:
        ctx.out.document(result)
        return EXIT_OK
    estimate = "~" if result.total_size_is_estimate else ""
    ctx.out.table(COLUMNS, (cells(r) for r in result.records),
                  title=f"{len(result.records)} of {estimate}{result.total_size} system records "
                        f"({sorted_by(args.sort, args.order)})")
    return EXIT_OK
