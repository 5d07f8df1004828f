"""``audit list`` and ``audit follow``: the tenant's audit ledger."""
from __future__ import annotations

import argparse
import time
from typing import Any

from aos.logs.v1 import audit_ledger_service_pb2 as pb, records_pb2
from aos_cli.client import EXIT_OK, EXIT_SERVICE, CliError, UsageError
from aos_cli.context import Context
from aos_cli.output import to_dict, when
from aos_cli.pages import MAX_PAGE, read_pages
from aos_cli.values import enum_label, enum_labels, enum_value, timestamp

EVENT_TYPE = "aos.evidence.v1.AuditEventType"
ENTITY_TYPE = "aos.evidence.v1.AuditEntityType"
ACTOR_TYPE = "aos.evidence.v1.ActorType"
SORT_ORDER = "aos.evidence.v1.SortOrder"
SORT_FIELD = "aos.logs.v1.AuditSortField"

COLUMNS = ("seq", "time", "event", "entity", "actor")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("audit", help="the audit ledger").add_subparsers(dest="action", required=True)
    listing = group.add_parser("list", parents=[common], help="list audit entries, newest first")
    add_filters(listing)
    add_entry_filters(listing)
    listing.add_argument("--search", help='full-text search, as `aos-evidence search` reads it (words, "a phrase", '
                                          "-excluded, or)")
    listing.add_argument("--order", choices=("desc", "asc"), default="desc",
                         help="desc: newest first (default); asc: oldest first")
    listing.add_argument("--sort", choices=tuple(enum_labels(SORT_FIELD).values()), default="created_at",
                         help="sort by this field, then time, in --order's direction (default created_at)")
    listing.add_argument("--limit", type=int, default=50, help="entries to show, following pages (0: all; default 50)")
    listing.set_defaults(handler=list_command)
    follow = group.add_parser("follow", parents=[common], help="print new entries as they appear (Ctrl-C stops)",
                              description="Polls the ledger and prints new entries oldest first; with --json, "
                                          "one JSON object per line.")
    add_filters(follow)
    add_entry_filters(follow)
    follow.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
    follow.add_argument("--limit", type=int, default=10, help="recent entries shown first (default 10)")
    follow.set_defaults(handler=follow_command)


def add_filters(parser: argparse.ArgumentParser) -> None:
    """The ledger's filters (SPEC §3), shared with ``export create --audit-slice``."""
    parser.add_argument("--event-type", help="e.g. PolicyRuleCreated, LimitBreached")
    parser.add_argument("--entity-type", help="e.g. POLICY_RULE, LIMIT, INCIDENT")
    parser.add_argument("--actor-type", help="HUMAN, AGENT or SYSTEM")
    parser.add_argument("--actor-id")
    parser.add_argument("--correlation-id")
    parser.add_argument("--since", help="created at or after (ISO 8601, UTC when no zone)")
    parser.add_argument("--until", help="created before (ISO 8601)")


def add_entry_filters(parser: argparse.ArgumentParser) -> None:
    """Filters ListAuditEntries has and an export's AuditSlice has not (so not in ``add_filters``)."""
    parser.add_argument("--entity-id", help="entries about this entity only (exact id)")
    parser.add_argument("--success", choices=("true", "false"),
                        help="only successful entries (true) or only failed ones (false: AccessDenied)")


def filters(args: argparse.Namespace, event_enum: str = EVENT_TYPE) -> dict[str, Any]:
    """The filter options that were given, as request fields."""
    found: dict[str, Any] = {}
    for field, enum in (("event_type", event_enum), ("entity_type", ENTITY_TYPE), ("actor_type", ACTOR_TYPE)):
        if getattr(args, field):
            found[field] = enum_value(enum, getattr(args, field), "--" + field.replace("_", "-"))
    for option in ("actor_id", "correlation_id", "entity_id"):
        if getattr(args, option, None):
            found[option] = getattr(args, option)
    if getattr(args, "success", None) is not None:
        found["success"] = args.success == "true"
    if args.since:
        found["created_after"] = timestamp(args.since, "--since")
    if args.until:
        found["created_before"] = timestamp(args.until, "--until")
    return found


def cells(entry: records_pb2.AuditEntry) -> list[str]:
    actor = enum_label(ACTOR_TYPE, entry.actor_type) + (f":{entry.actor_id}" if entry.HasField("actor_id") else "")
    return [str(entry.seq), when(entry.created_at), enum_label(EVENT_TYPE, entry.event_type),
            f"{enum_label(ENTITY_TYPE, entry.entity_type)}:{entry.entity_id}", actor]


def list_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or positive")
    request = pb.ListAuditEntriesRequest(**filters(args), search=args.search or "")
    request.order = enum_value(SORT_ORDER, args.order, "--order")  # type: ignore[assignment]  # an int is the enum at run time
    request.sort = enum_value(SORT_FIELD, args.sort, "--sort")  # type: ignore[assignment]  # as order
    result = read_pages(ctx.client.audit.ListAuditEntries, request, pb.ListAuditEntriesResponse(), "entries",
                        args.limit)
    if ctx.out.json_mode:
        ctx.out.document(result)
        return EXIT_OK
    estimate = "~" if result.total_size_is_estimate else ""
    ctx.out.table(COLUMNS, (cells(e) for e in result.entries),
                  title=f"{len(result.entries)} of {estimate}{result.total_size} audit entries "
                        f"({sorted_by(args.sort, args.order)})")
    return EXIT_OK


def sorted_by(sort: str, order: str) -> str:
    """How a sorted list's title says its order."""
    when_first = "oldest first" if order == "asc" else "newest first"
    return when_first if sort == "created_at" else f"by {sort} {order}, then {when_first}"


def _new_entries(ctx: Context, request: pb.ListAuditEntriesRequest, after_seq: int) -> list[records_pb2.AuditEntry]:
    """Entries with seq > after_seq, oldest first. The list is newest first, so paging stops at a
    page with nothing new."""
    found: list[records_pb2.AuditEntry] = []
    page_request = pb.ListAuditEntriesRequest()
    page_request.CopyFrom(request)
    page_request.page_size = MAX_PAGE
    while True:
        page = ctx.client.audit.ListAuditEntries(page_request)
        fresh = [e for e in page.entries if e.seq > after_seq]
        found += fresh
        if not fresh or not page.next_page_token:
            return sorted(found, key=lambda e: e.seq)
        page_request.page_token = page.next_page_token


def _show(ctx: Context, entries: list[records_pb2.AuditEntry]) -> None:
    for entry in entries:
        if ctx.out.json_mode:
            ctx.out.document(to_dict(entry), compact=True)
        else:
            seq, at, event, entity, actor = cells(entry)
            ctx.out.line(f"{seq:>7}  {at}  {event:<28}  {entity:<40}  {actor}")


def follow_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.interval <= 0 or args.limit < 0:
        raise UsageError("--interval must be positive and --limit 0 or more")
    fields = filters(args)
    request = pb.ListAuditEntriesRequest(**fields)
    first = pb.ListAuditEntriesRequest(page_size=max(args.limit, 1), **fields)
    try:
        recent = sorted(ctx.client.audit.ListAuditEntries(first).entries, key=lambda e: e.seq)
        last_seq = recent[-1].seq if recent else 0
        _show(ctx, recent if args.limit else [])
        ctx.out.note(f"following the audit ledger every {args.interval:g}s; Ctrl-C stops")
        while True:
            time.sleep(args.interval)
            try:
                fresh = _new_entries(ctx, request, last_seq)
            except CliError as error:
                if error.exit_code != EXIT_SERVICE:
                    raise
                # A restarting service should not end a follow: say so and poll again.
                ctx.out.note(f"{error}; retrying")
                continue
            _show(ctx, fresh)
            if fresh:
                last_seq = fresh[-1].seq
    except KeyboardInterrupt:
        return EXIT_OK
