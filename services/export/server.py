"""ExportService: evidence bundles, signed, recorded in append-only log_exports.

Handlers validate, call, answer: the work runs in one transaction in builder
(creating), verification (VerifyExport's checks), checkpoints (ledger checkpoints and
the signing keys) or the store, a download streams through ``Database.stream``, and
rows become messages through aos_evidence.messages, so an export reads the same in
Logs and here.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from sqlalchemy.exc import IntegrityError

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_evidence import queries as evidence
from aos_evidence.kinds import BundleType, ExportFormat, ExportScope
from aos_evidence.messages import export_message
from aos_recording import dsse
from aos_recording.hashing import rfc3339
from aos_runtime import auth, errors, faults, local_state, metrics
from aos_runtime.config import ConfigError, check_dev_key_allowed
from aos_runtime.evidence import timestamp
from aos_runtime.headers import WAL_POSITION_HEADER
from aos_runtime.pagination import Listing
from aos_runtime.server import ServiceContext, Servicer
from aos_runtime.validation import Request
from services.export import builder, checkpoints, quotas, store, verification

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["ExportService"]
_FIELDS = pb.CreateExportRequest.DESCRIPTOR.fields_by_name
_AUDIT = pb.AuditSlice.DESCRIPTOR.fields_by_name
_SYSTEM = pb.SystemSlice.DESCRIPTOR.fields_by_name
IDEMPOTENCY_KEY_MAX = 128


def key_ring(settings) -> dsse.KeyRing:
    """The configured signing key and retired verification keys; for the embedded
    default (no key configured; with DATABASE_URL set only under AOS_DEV_KEYS), a
    development key in AOS_DATA_DIR/secrets/ plus the retired public keys in
    AOS_DATA_DIR/export-signing-keys/retired/. A private key file others could read
    or that another user owns is refused (public keys need no secrecy)."""
    if settings.export_signing_key_file:
        local_state.check_private(settings.export_signing_key_file, "AOS_EXPORT_SIGNING_KEY_FILE")
        key_file, retired = settings.export_signing_key_file, []
    else:
        check_dev_key_allowed(settings, "AOS_EXPORT_SIGNING_KEY_FILE")
        key_file = local_state.dev_secret_file(settings.data_dir, dsse.DEV_SIGNING_KEY_FILE,
                                               lambda: dsse.SigningKey.generate().private_pem())
        retired = sorted((settings.data_dir / dsse.DEV_RETIRED_KEYS_DIR).glob("*.pem"))
    try:
        return dsse.KeyRing.load(key_file, [*retired, *settings.export_verification_key_files])
    except ValueError as exc:  # an unreadable or non-Ed25519 key: a start-up error, never a traceback
        raise ConfigError(f"export signing keys (AOS_EXPORT_SIGNING_KEY_FILE, "
                          f"AOS_EXPORT_VERIFICATION_KEY_FILES): {exc}") from None


class ExportService(pb_grpc.ExportServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        # No export without its signing keys: a service that cannot sign or verify does not start.
        if ctx.settings is None:
            raise ConfigError("the export service needs its settings: its signing key ring is read from them")
        self.keys = key_ring(ctx.settings)
        self._verifying: dict[tuple[str, str, bool], asyncio.Future[tuple[Mapping[str, Any], bool]]] = {}
        self.limits = quotas.Limits(rate_per_hour=ctx.settings.export_rate_per_hour,
                                    stored_bytes=ctx.settings.export_stored_bytes_per_tenant)

    # --- create -------------------------------------------------------------------
    def _plan(self, request: pb.CreateExportRequest, tenant: str) -> builder.Plan:
        r = Request()
        subject = request.WhichOneof("subject")
        bundle_name = r.enum(request.bundle_type, _FIELDS["bundle_type"].enum_type, "bundle_type")
        format_name = r.enum(request.format, _FIELDS["format"].enum_type, "format")
        bundle_type = BundleType(bundle_name) if bundle_name else None
        fmt = ExportFormat(format_name) if format_name else None
        if not request.bundle_type:
            r.violations.add("bundle_type", "is required (EVIDENCE, SOC2 or EXECUTIVE)")
        if not request.format:
            r.violations.add("format", "is required (JSON, CSV, PDF or ZIP)")
        key = request.idempotency_key or None
        if key is not None and (len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable()):
            r.violations.add("idempotency_key", f"must be printable and at most {IDEMPOTENCY_KEY_MAX} characters")
        run_id = incident_id = None
        slice_filter: dict = {}
        if subject is None:
            r.violations.add("subject", "one of run_id, incident_id, audit_slice or system_slice is required")
            scope = ExportScope.LLM_RUN
        elif subject == "run_id":
            scope, run_id = ExportScope.LLM_RUN, r.resource_id(request.run_id, "run_id")
        elif subject == "incident_id":
            scope, incident_id = ExportScope.INCIDENT, r.resource_id(request.incident_id, "incident_id")
        elif subject == "audit_slice":
            scope, audit = ExportScope.AUDIT_SLICE, request.audit_slice
            slice_filter = {
                "event_type": r.enum(audit.event_type, _AUDIT["event_type"].enum_type, "audit_slice.event_type"),
                "entity_type": r.enum(audit.entity_type, _AUDIT["entity_type"].enum_type, "audit_slice.entity_type"),
                "actor_type": r.enum(audit.actor_type, _AUDIT["actor_type"].enum_type, "audit_slice.actor_type"),
                "actor_id": r.optional_text(audit.actor_id, "audit_slice.actor_id"),
                "correlation_id": r.optional_text(audit.correlation_id, "audit_slice.correlation_id"),
                **_range(r, audit, "audit_slice")}
        else:
            scope, system = ExportScope.SYSTEM_SLICE, request.system_slice
            slice_filter = {
                "component": r.optional_text(system.component, "system_slice.component"),
                "event_type": r.enum(system.event_type, _SYSTEM["event_type"].enum_type, "system_slice.event_type"),
                "severity": r.enum(system.severity, _SYSTEM["severity"].enum_type, "system_slice.severity"),
                **_range(r, system, "system_slice")}
        if fmt is ExportFormat.CSV and not scope.is_slice:
            r.violations.add("format", "CSV is for audit and system slices; export a run or an incident as JSON, "
                                       "PDF or ZIP")
        r.done()
        # Unset (or unknown) values were violations above, and r.done() raised on them.
        assert bundle_type is not None and fmt is not None
        return builder.Plan(tenant_id=tenant, scope=scope, bundle_type=bundle_type, format=fmt, run_id=run_id,
                            incident_id=incident_id,
                            slice_filter={k: v for k, v in slice_filter.items() if v is not None},
                            idempotency_key=key)

    async def CreateExport(self, request: pb.CreateExportRequest,
                           context: grpc.aio.ServicerContext) -> pb.CreateExportResponse:
        reply = await self._create(request)
        # Read-your-writes on a replica: where the WAL stands after the export committed;
        # a Logs read passing it back waits for its replica to get there (docs/SERVING.md).
        await context.send_initial_metadata(((WAL_POSITION_HEADER, await self.ctx.db.wal_position()),))
        return reply

    async def _create(self, request: pb.CreateExportRequest) -> pb.CreateExportResponse:
        who = auth.principal()
        plan = self._plan(request, who.tenant_id)
        if plan.idempotency_key:
            existing = await self.ctx.db.run(who.tenant_id, store.export_by_idempotency_key, who.tenant_id,
                                             plan.idempotency_key)
            if existing is not None:
                return pb.CreateExportResponse(export=self._replay(plan, existing))
        started = time.monotonic()
        try:
            row = await self.ctx.db.run(who.tenant_id, builder.create, plan, self.keys, who.actor_type, who.actor_id,
                                        self.limits)
            metrics.observe_export(plan.scope.value, plan.format.value, row["size_bytes"], time.monotonic() - started)
        except (IntegrityError, *faults.QUOTA_FAULTS):
            # Another call with the same idempotency key committed first: answer with its export
            # (a replay is never refused by a quota, even one that call just filled).
            existing = await self.ctx.db.run(who.tenant_id, store.export_by_idempotency_key, who.tenant_id,
                                             plan.idempotency_key) if plan.idempotency_key else None
            if existing is None:
                raise
            return pb.CreateExportResponse(export=self._replay(plan, existing))
        return pb.CreateExportResponse(export=export_message(row))

    @staticmethod
    def _replay(plan: builder.Plan, existing: Mapping[str, Any]) -> bundle_pb2.Export:
        if not plan.same_request(existing):
            raise errors.ApiError(grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED",
                                  f"idempotency key {plan.idempotency_key!r} was used for another export request",
                                  metadata={"export_id": existing["id"]})
        return export_message(existing)

    # --- read -----------------------------------------------------------------------
    async def _row(self, export_id: str) -> Mapping[str, Any]:
        tenant = auth.principal().tenant_id
        row = await self.ctx.db.run(tenant, store.get_export, tenant, export_id)
        if row is None:
            raise errors.not_found(errors.Resource.EXPORT, export_id)
        return row

    async def GetExport(self, request: pb.GetExportRequest, context: grpc.aio.ServicerContext) -> pb.GetExportResponse:
        r = Request()
        export_id = r.resource_id(request.export_id, "export_id")
        r.done()
        return pb.GetExportResponse(export=export_message(await self._row(export_id)))

    async def ListExports(self, request: pb.ListExportsRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListExportsResponse:
        r = Request()
        scope_name = r.enum(request.scope, pb.ListExportsRequest.DESCRIPTOR.fields_by_name["scope"].enum_type, "scope")
        scope = ExportScope(scope_name) if scope_name else None
        run_id = r.resource_id(request.run_id, "run_id") if request.run_id else None
        incident_id = r.resource_id(request.incident_id, "incident_id") if request.incident_id else None
        start, end = r.time_range(request)
        limit = r.page_size(request.page_size)
        r.done()
        filters = evidence.ExportFilters(created_after=start, created_before=end, run_id=run_id, scope=scope,
                                         incident_id=incident_id)
        listing = Listing.of(self.ctx.page_tokens, auth.principal().tenant_id, "exports", filters)
        page = await listing.fetch(self.ctx.db, request.page_token, evidence.list_exports, filters, limit=limit)
        return listing.answer(pb.ListExportsResponse, page, exports=[export_message(row) for row in page.rows])

    async def DownloadExport(self, request: pb.DownloadExportRequest,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.DownloadExportResponse]:
        r = Request()
        export_id = r.resource_id(request.export_id, "export_id")
        r.done()
        row = await self._row(export_id)
        tenant = row["tenant_id"]
        # aclosing: a client that leaves closes the stream now, which frees its connection.
        async with contextlib.aclosing(self.ctx.db.stream(tenant, store.artifact_chunks, tenant, export_id)) as chunks:
            first = True
            async for chunk in chunks:
                message = pb.DownloadExportResponse(data=chunk)
                if first:
                    message.content_type, message.filename = row["content_type"], row["filename"]
                    message.size_bytes, message.checksum = row["size_bytes"], bytes(row["checksum"]).hex()
                    first = False
                yield message

    async def VerifyExport(self, request: pb.VerifyExportRequest,
                           context: grpc.aio.ServicerContext) -> pb.VerifyExportResponse:
        r = Request()
        export_id = r.resource_id(request.export_id, "export_id")
        r.done()
        row = await self._row(export_id)
        entry, recorded = await self._verify_shared(row, request.recompute)
        return _verify_response(entry, recorded=recorded)

    async def _verify_shared(self, row: Mapping[str, Any], recompute: bool) -> tuple[Mapping[str, Any], bool]:
        """One verification per export at a time in this process: calls arriving while one
        runs share its answer (single flight; recompute calls share theirs). It runs on if its
        first caller leaves: the others wait for it, and its result is recorded either way."""
        key = (row["tenant_id"], row["id"], recompute)
        task = self._verifying.get(key)
        if task is None:
            who = auth.principal()
            task = asyncio.ensure_future(self._verify(row, recompute, who.actor_type, who.actor_id))
            self._verifying[key] = task
            task.add_done_callback(lambda _done: self._verifying.pop(key, None))
        return await asyncio.shield(task)

    async def _verify(self, row: Mapping[str, Any], recompute: bool, actor_type: str,
                      actor_id: str) -> tuple[Mapping[str, Any], bool]:
        """The recorded verification by this verifier version (unless ``recompute``), else a
        fresh one, recorded. Looked up inside the flight: a call that comes as another
        flight ends finds what that one recorded."""
        tenant = row["tenant_id"]
        if not recompute:
            recorded = await self.ctx.db.run(tenant, store.recorded_verification, tenant, row["id"],
                                             verification.VERIFIER_VERSION)
            if recorded is not None:
                return recorded, True
        return await self.ctx.db.run(tenant, verification.verify_and_record, row, self.keys, actor_type,
                                     actor_id), False

    # --- keys and checkpoints --------------------------------------------------------
    async def ListSigningKeys(self, request: pb.ListSigningKeysRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListSigningKeysResponse:
        return pb.ListSigningKeysResponse(keys=[checkpoints.signing_key_message(k) for k in self.keys.public_keys()])

    async def GetLedgerCheckpoint(self, request: pb.GetLedgerCheckpointRequest,
                                  context: grpc.aio.ServicerContext) -> pb.GetLedgerCheckpointResponse:
        tenant = auth.principal().tenant_id
        checkpoint = await self.ctx.db.run(tenant, checkpoints.sign, tenant, self.keys.active)
        return pb.GetLedgerCheckpointResponse(checkpoint=checkpoint)


def _verify_response(entry: Mapping[str, Any], *, recorded: bool) -> pb.VerifyExportResponse:
    """A verification's answer from its ExportVerified entry (``recorded``: an earlier one)."""
    return pb.VerifyExportResponse(
        valid=entry["after_state"]["valid"], checks=verification.checks_of(entry),
        verified_at=timestamp(entry["created_at"]), recorded=recorded,
        verifier_version=entry["after_state"]["verifier_version"], audit_entry_id=entry["id"],
        audit_entry_seq=entry["seq"])


def _range(r: Request, message: pb.AuditSlice | pb.SystemSlice, prefix: str) -> dict[str, str | None]:
    start, end = r.time_range(message, prefix=f"{prefix}.")
    return {"created_after": rfc3339(start) if start else None, "created_before": rfc3339(end) if end else None}


def servicers(ctx: ServiceContext) -> list[Servicer]:
    return [Servicer(DESCRIPTOR, pb_grpc.add_ExportServiceServicer_to_server, ExportService(ctx))]
