"""``retention``: the tenant's retention policies and legal holds (RetentionService).

Applying the policies (dropping expired monthly partitions) is the maintenance path's, run
as the database owner: ``python -m aos_recording.retention apply`` (docs/SCALE.md §3c).
"""
from __future__ import annotations

import argparse

from aos.evidence.v1 import records_pb2
from aos.export.v1 import retention_service_pb2 as pb
from aos_cli.client import EXIT_OK, UsageError
from aos_cli.context import Context
from aos_cli.output import when
from aos_cli.pages import read_pages
from aos_cli.values import enum_label, enum_member

RECORD_TYPE = "aos.export.v1.RetentionRecordType"
SCOPE = "aos.export.v1.LegalHoldScope"
LEVEL = "aos.evidence.v1.SystemSeverity"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("retention", help="retention policies and legal holds").add_subparsers(
        dest="action", required=True)
    group.add_parser("policies", parents=[common], help="the policy in force for each record type") \
        .set_defaults(handler=policies_command)
    policy = group.add_parser("set", parents=[common], help="set the policy of one record type (and level)")
    policy.add_argument("record_type", metavar="RECORD_TYPE", help="AUDIT_LEDGER, LLM_RUNS or SYSTEM_RECORDS")
    policy.add_argument("--level", help="for SYSTEM_RECORDS: DEBUG, INFO, WARNING, ERROR or CRITICAL")
    kept = policy.add_mutually_exclusive_group(required=True)
    kept.add_argument("--days", type=int, help="days to keep")
    kept.add_argument("--permanent", action="store_true", help="keep forever")
    policy.add_argument("--class", dest="retention_class", default="",
                        help="compliance class: STANDARD (default), SOC2, HIPAA, GDPR")
    policy.add_argument("--tag", dest="tags", action="append", default=[], help="a compliance tag (repeatable)")
    policy.set_defaults(handler=set_command)
    holds = group.add_parser("holds", parents=[common], help="the tenant's legal holds, newest first")
    holds.add_argument("--all", action="store_true", help="released holds too")
    holds.add_argument("--limit", type=int, default=0, help="holds to show (default 0: all)")
    holds.set_defaults(handler=holds_command)
    hold = group.add_parser("hold", parents=[common],
                            help="place a legal hold on the tenant, a run, an incident or a data subject")
    target = hold.add_mutually_exclusive_group(required=True)
    target.add_argument("--tenant", dest="whole_tenant", action="store_true", help="all of the tenant's evidence")
    target.add_argument("--run", dest="run_id", help="one run")
    target.add_argument("--incident", dest="incident_id", help="one incident")
    target.add_argument("--subject", dest="subject_id", help="one data subject (docs/ERASURE.md): no erasure of it")
    hold.add_argument("--reason", required=True, help="why (the matter, the request)")
    hold.set_defaults(handler=hold_command)
    release = group.add_parser("release", parents=[common], help="release a legal hold")
    release.add_argument("hold_id", metavar="HOLD_ID")
    release.add_argument("--reason", required=True, help="why it is released")
    release.set_defaults(handler=release_command)


def _policy_row(p: pb.RetentionPolicy) -> list:
    return [enum_label(RECORD_TYPE, p.record_type), enum_label(LEVEL, p.level) if p.level else "",
            "permanent" if p.permanent else f"{p.retention_days} days", p.retention_class,
            ", ".join(p.compliance_tags), "default" if p.is_default else f"{when(p.updated_at)} {p.updated_by_id}"]


POLICY_COLUMNS = ("record type", "level", "kept", "class", "tags", "set")
HOLD_COLUMNS = ("hold", "scope", "target", "reason", "placed", "by", "released")


def _hold_row(h: pb.LegalHold) -> list:
    return [h.hold_id, enum_label(SCOPE, h.scope), h.target_id or "-", h.reason, when(h.placed_at), h.placed_by_id,
            "active" if h.active else f"{when(h.released_at)} ({h.release_reason})"]


def policies_command(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.retention.GetRetentionPolicies(pb.GetRetentionPoliciesRequest())
    if ctx.out.json_mode:
        ctx.out.document(answer)
    else:
        ctx.out.table(POLICY_COLUMNS, (_policy_row(p) for p in answer.policies), title="Retention policies")
    return EXIT_OK


def set_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.days is not None and args.days <= 0:
        raise UsageError("--days must be positive (or say --permanent)")
    request = pb.SetRetentionPolicyRequest(
        record_type=enum_member(pb.RetentionRecordType, args.record_type, "RECORD_TYPE"),
        level=enum_member(records_pb2.SystemSeverity, args.level, "--level") if args.level
        else records_pb2.SYSTEM_SEVERITY_UNSPECIFIED,
        retention_days=args.days or 0, permanent=args.permanent, retention_class=args.retention_class,
        compliance_tags=args.tags)
    answer = ctx.client.retention.SetRetentionPolicy(request)
    if ctx.out.json_mode:
        ctx.out.document(answer)
    else:
        ctx.out.table(POLICY_COLUMNS, [_policy_row(answer.policy)],
                      title="Policy set" if answer.changed else "Policy unchanged (already in force)")
    return EXIT_OK


def holds_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or positive")
    answer = read_pages(ctx.client.retention.ListLegalHolds, pb.ListLegalHoldsRequest(include_released=args.all),
                        pb.ListLegalHoldsResponse(), "holds", args.limit)
    if ctx.out.json_mode:
        ctx.out.document(answer)
    else:
        ctx.out.table(HOLD_COLUMNS, (_hold_row(h) for h in answer.holds),
                      title=f"Legal holds ({answer.total_size})")
    return EXIT_OK


def hold_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.whole_tenant:
        request = pb.PlaceLegalHoldRequest(scope=pb.LEGAL_HOLD_SCOPE_TENANT, reason=args.reason)
    elif args.run_id:
        request = pb.PlaceLegalHoldRequest(scope=pb.LEGAL_HOLD_SCOPE_RUN, target_id=args.run_id, reason=args.reason)
    elif args.incident_id:
        request = pb.PlaceLegalHoldRequest(scope=pb.LEGAL_HOLD_SCOPE_INCIDENT, target_id=args.incident_id,
                                           reason=args.reason)
    else:
        request = pb.PlaceLegalHoldRequest(scope=pb.LEGAL_HOLD_SCOPE_SUBJECT, target_id=args.subject_id,
                                           reason=args.reason)
    return _show_hold(ctx, ctx.client.retention.PlaceLegalHold(request).hold, "Legal hold placed")


def release_command(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.retention.ReleaseLegalHold(pb.ReleaseLegalHoldRequest(hold_id=args.hold_id,
                                                                              reason=args.reason))
    return _show_hold(ctx, answer.hold, "Legal hold released")


def _show_hold(ctx: Context, hold: pb.LegalHold, title: str) -> int:
    if ctx.out.json_mode:
        ctx.out.document(hold)
    else:
        ctx.out.table(HOLD_COLUMNS, [_hold_row(hold)], title=title)
    return EXIT_OK
