"""RetentionService: a tenant's retention policies and legal holds (served by the Export server).

Handlers validate, call the store (services/export/retention_store.py) in the caller's
tenant transaction, and answer. Tenant and actor come from the credentials only. The
policies are applied by the maintenance path (``python -m aos_recording.retention apply``
and the launcher's schedule, aos_recording.retention), never by this service: dropping a
partition is the owner's, which no service role is.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import grpc

from aos.evidence.v1 import records_pb2
from aos.export.v1 import retention_service_pb2 as pb, retention_service_pb2_grpc as pb_grpc
from aos_recording import retention_policy as rp
from aos_runtime import auth
from aos_runtime.evidence import timestamp
from aos_runtime.pagination import Listing
from aos_runtime.server import ServiceContext, Servicer
from aos_runtime.validation import Request, canonical_values
from services.export import retention_store as store

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["RetentionService"]
_SET = pb.SetRetentionPolicyRequest.DESCRIPTOR.fields_by_name
_PLACE = pb.PlaceLegalHoldRequest.DESCRIPTOR.fields_by_name
RECORD_TYPES = canonical_values(pb.RetentionRecordType)
LEVELS = canonical_values(records_pb2.SystemSeverity)
HOLD_SCOPES = canonical_values(pb.LegalHoldScope)
MAX_REASON = 1000
MAX_SUBJECT = 256


def _clock() -> datetime:
    return datetime.now(timezone.utc)


class RetentionService(pb_grpc.RetentionServiceServicer):
    def __init__(self, ctx: ServiceContext, clock=_clock) -> None:
        self.ctx = ctx
        self.clock = clock

    async def GetRetentionPolicies(self, request: pb.GetRetentionPoliciesRequest,
                                   context: grpc.aio.ServicerContext) -> pb.GetRetentionPoliciesResponse:
        tenant = auth.principal().tenant_id
        found = await self.ctx.db.run(tenant, store.policies, tenant)
        return pb.GetRetentionPoliciesResponse(policies=[policy_message(p, row) for p, row in found])

    async def SetRetentionPolicy(self, request: pb.SetRetentionPolicyRequest,
                                 context: grpc.aio.ServicerContext) -> pb.SetRetentionPolicyResponse:
        r = Request()
        record_type = r.enum(request.record_type, _SET["record_type"].enum_type, "record_type") or ""
        level = r.enum(request.level, _SET["level"].enum_type, "level") or ""
        if not request.record_type:
            r.violations.add("record_type", f"is required: one of {', '.join(rp.RECORD_TYPES)}")
        if request.permanent and request.retention_days:
            r.violations.add("retention_days", "must be 0 when permanent")
        elif not request.permanent and request.retention_days <= 0:
            r.violations.add("retention_days", f"is required: 1 to {rp.MAX_DAYS} days (or permanent)")
        days = None if request.permanent else request.retention_days
        retention_class = request.retention_class or rp.DEFAULT_CLASS
        tags = tuple(request.compliance_tags)
        if record_type:
            for field, problem in rp.problems(record_type, level, days, retention_class, tags):
                if not (field == "retention_days" and days is not None and days <= 0):
                    r.violations.add(field, problem)
        r.done()
        who = auth.principal()
        wanted = rp.Policy(record_type, level, days, retention_class, tags)
        policy, row, changed = await self.ctx.db.run(who.tenant_id, store.set_policy, who.tenant_id, wanted,
                                                     who.actor_type, who.actor_id, self.clock())
        return pb.SetRetentionPolicyResponse(policy=policy_message(policy, row), changed=changed)

    async def ListLegalHolds(self, request: pb.ListLegalHoldsRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListLegalHoldsResponse:
        r = Request()
        limit = r.page_size(request.page_size)
        r.done()
        listing = Listing.of(self.ctx.page_tokens, auth.principal().tenant_id, "legal_holds",
                             {"include_released": request.include_released})
        page = await listing.fetch(self.ctx.db, request.page_token, store.list_holds, request.include_released,
                                   limit=limit)
        return listing.answer(pb.ListLegalHoldsResponse, page, holds=[hold_message(row) for row in page.rows])

    async def PlaceLegalHold(self, request: pb.PlaceLegalHoldRequest,
                             context: grpc.aio.ServicerContext) -> pb.PlaceLegalHoldResponse:
        r = Request()
        scope = r.enum(request.scope, _PLACE["scope"].enum_type, "scope")
        if not request.scope:
            r.violations.add("scope", "is required: TENANT, RUN, INCIDENT or SUBJECT")
        if scope == "TENANT" and request.target_id:
            r.violations.add("target_id", "must be empty for a TENANT hold (it covers all of the tenant)")
        elif scope in ("RUN", "INCIDENT"):
            r.resource_id(request.target_id, "target_id")
        elif scope == "SUBJECT":  # as EraseDataSubject's subject_id and evidence_payloads.subject_id
            if not request.target_id.strip():
                r.violations.add("target_id", "is required: the data subject id")
            elif len(request.target_id) > MAX_SUBJECT:
                r.violations.add("target_id", f"is longer than {MAX_SUBJECT} characters")
            elif not request.target_id.isprintable():
                r.violations.add("target_id", "must not contain control characters")
        reason = _reason(r, request.reason, "reason")
        r.done()
        who = auth.principal()
        row = await self.ctx.db.run(who.tenant_id, store.place_hold, who.tenant_id, scope, request.target_id,
                                    reason, who.actor_type, who.actor_id, self.clock())
        return pb.PlaceLegalHoldResponse(hold=hold_message(row))

    async def ReleaseLegalHold(self, request: pb.ReleaseLegalHoldRequest,
                               context: grpc.aio.ServicerContext) -> pb.ReleaseLegalHoldResponse:
        r = Request()
        hold_id = r.resource_id(request.hold_id, "hold_id")
        reason = _reason(r, request.reason, "reason")
        r.done()
        who = auth.principal()
        row = await self.ctx.db.run(who.tenant_id, store.release_hold, who.tenant_id, hold_id, reason,
                                    who.actor_type, who.actor_id, self.clock())
        return pb.ReleaseLegalHoldResponse(hold=hold_message(row))


def _reason(r: Request, value: str, field: str) -> str:
    if not value.strip():
        r.violations.add(field, "is required")
    elif len(value) > MAX_REASON:
        r.violations.add(field, f"is longer than {MAX_REASON} characters")
    elif not value.isprintable():
        r.violations.add(field, "must not contain control characters")
    return value


def policy_message(policy: rp.Policy, row: Mapping[str, Any] | None) -> pb.RetentionPolicy:
    message = pb.RetentionPolicy(
        record_type=RECORD_TYPES[policy.record_type],
        level=LEVELS[policy.level] if policy.level else records_pb2.SYSTEM_SEVERITY_UNSPECIFIED,
        retention_days=policy.days or 0, permanent=policy.days is None, retention_class=policy.retention_class,
        compliance_tags=list(policy.compliance_tags), is_default=row is None)
    if row is not None:
        message.updated_at.CopyFrom(timestamp(row["updated_at"]))
        message.updated_by_id = row["updated_by_id"]
    return message


def hold_message(row: Mapping[str, Any]) -> pb.LegalHold:
    message = pb.LegalHold(hold_id=row["id"], scope=HOLD_SCOPES[row["scope"]], target_id=row["target_id"],
                           reason=row["reason"], placed_by_id=row["placed_by_id"],
                           placed_at=timestamp(row["placed_at"]), active=row["released_at"] is None,
                           released_by_id=row["released_by_id"] or "", release_reason=row["release_reason"] or "")
    if row["released_at"] is not None:
        message.released_at.CopyFrom(timestamp(row["released_at"]))
    return message


def servicers(ctx: ServiceContext) -> list[Servicer]:
    return [Servicer(DESCRIPTOR, pb_grpc.add_RetentionServiceServicer_to_server, RetentionService(ctx))]
