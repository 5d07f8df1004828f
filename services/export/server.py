"""ExportService: evidence bundles, signed, recorded in append-only log_exports.

Handlers validate, call, answer: the work runs in one transaction in builder
(creating), verification (VerifyExport's checks), checkpoints (ledger checkpoints and
the signing keys) or the store, a download streams through ``Database.stream``, and
rows become messages through aos_evidence.messages, so an export reads the same in
Logs and here.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from sqlalchemy.exc import IntegrityError

from aos.evidence.v1 import bundle_pb2, integrity_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_evidence import queries as evidence
from aos_evidence.kinds import BundleType, ExportFormat, ExportScope
from aos_evidence.messages import export_erasures, export_message
from aos_recording import dsse, intoto, note
from aos_recording.hashing import rfc3339
from aos_runtime import auth, errors, faults, local_state, metrics
from aos_runtime.config import ConfigError, check_dev_key_allowed
from aos_runtime.evidence import timestamp
from aos_runtime.headers import WAL_POSITION_HEADER
from aos_runtime.pagination import Listing
from aos_runtime.server import ServiceContext, Servicer, continue_as_stream
from aos_runtime.validation import Request
from services.export import builder, checkpoints, quotas, retention, store, verification

log = logging.getLogger("aos.export")

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
        self.logs = log_signer(ctx.settings, self.keys)
        if ctx.db is not None:  # a heavy worker process builds its own from the settings (aos_runtime.offload)
            ctx.db.share(self.keys, "export.keys", key_ring, ctx.settings)
            ctx.db.share(self.logs, "export.logs", log_signer, ctx.settings, self.keys)
        self.witnesses = witness_keys(ctx.settings)
        self.checkpoint_interval_s = ctx.settings.checkpoint_interval_s
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
                                        self.limits, self.logs)
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
        row = await self._row(export_id)
        statement = intoto.sign_export_statement(row["manifest"], self.keys.active)
        return pb.GetExportResponse(export=export_message(row), intoto_envelope=dsse.envelope_json(statement))

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
        erased = await self.ctx.db.run(tenant, store.erased_content, tenant, export_id)
        if erased is not None:  # its artifact went with the content an erasure took (docs/ERASURE.md §5)
            raise faults.ExportContentErased(export_id, erased.payloads, erased.erasure_ids, erased.bases)
        # The heavy part (finding the export) is done: the rest hands stored chunks on at the
        # client's pace, holding a stream slot, not a heavy one (issue #19).
        await continue_as_stream()
        # One short transaction per chunk (the artifact is append-only, so chunk n read later is
        # the chunk n of the export found above): between chunks a slow reader holds no
        # connection, and a client that leaves holds nothing at all.
        sent = 0
        for chunk_no in itertools.count():
            chunk = await self.ctx.db.run(tenant, store.artifact_chunk, tenant, export_id, chunk_no)
            if chunk is None:
                break
            message = pb.DownloadExportResponse(data=chunk)
            if chunk_no == 0:
                message.content_type, message.filename = row["content_type"], row["filename"]
                message.size_bytes, message.checksum = row["size_bytes"], bytes(row["checksum"]).hex()
            sent += len(chunk)
            yield message
        if sent != row["size_bytes"]:  # the recorded size is what the chunks add up to; never seen otherwise
            raise RuntimeError(f"export {export_id}: {sent} artifact bytes stored, {row['size_bytes']} recorded")

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
            recorded = await self.ctx.db.run(tenant, verification.current_verification, row)
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
        r = Request()
        log_name = _log(r, request.log, pb.GetLedgerCheckpointRequest)
        if request.tree_size < 0:
            r.violations.add("tree_size", "must not be negative (0: the head, signed now)")
        r.done()
        tenant = auth.principal().tenant_id
        if request.tree_size:
            return pb.GetLedgerCheckpointResponse(log_checkpoint=await self.ctx.db.run(
                tenant, _kept_checkpoint, tenant, log_name, request.tree_size, self.logs))
        if log_name == "exports":
            return pb.GetLedgerCheckpointResponse(log_checkpoint=await self.ctx.db.run(
                tenant, checkpoints.publish, tenant, log_name, self.logs))
        statement, signed = await self.ctx.db.run(tenant, _ledger_head_checkpoints, tenant, self.keys.active,
                                                  self.logs)
        return pb.GetLedgerCheckpointResponse(checkpoint=statement, log_checkpoint=signed)

    async def AddCheckpointCosignature(self, request: pb.AddCheckpointCosignatureRequest,
                                       context: grpc.aio.ServicerContext) -> pb.AddCheckpointCosignatureResponse:
        r = Request()
        log_name = _log(r, request.log, pb.AddCheckpointCosignatureRequest)
        size, body = request.tree_size, None
        if not request.cosignature.strip():
            r.violations.add("cosignature", "is required: the witness's signature line, '— <name> <base64>'")
        elif "\n" in request.cosignature.rstrip("\n"):
            r.violations.add("cosignature", "is one signature line")
        if size < 0:
            r.violations.add("tree_size", "must not be negative")
        if request.checkpoint_note:
            try:
                body, _ = note.split_note(request.checkpoint_note.encode())
                parsed = note.Checkpoint.parse(body)
            except note.NoteError as exc:
                r.violations.add("checkpoint_note", f"is not a C2SP checkpoint note: {exc}")
            else:
                if size and size != parsed.size:
                    r.violations.add("tree_size", f"is {size}, the checkpoint note's is {parsed.size}")
                size = parsed.size
        elif size <= 0:
            r.violations.add("tree_size", "is required (the cosigned checkpoint's size) unless checkpoint_note is set")
        r.done()
        tenant = auth.principal().tenant_id
        line = request.cosignature.rstrip("\n").encode() + b"\n"
        checkpoint, added = await self.ctx.db.run(tenant, _cosign, tenant, log_name, size, body, line, self.logs,
                                                  self.witnesses)
        return pb.AddCheckpointCosignatureResponse(checkpoint=checkpoint, added=added)

    # --- the periodic publisher --------------------------------------------------------
    async def publish_checkpoints(self) -> None:
        """Every AOS_CHECKPOINT_INTERVAL_S: a C2SP checkpoint for each log (every tenant's)
        that grew since its newest kept one. A failed round is logged and the next one runs."""
        if self.checkpoint_interval_s <= 0:
            return
        while True:
            await asyncio.sleep(self.checkpoint_interval_s)
            try:
                await self.publish_round()
            except asyncio.CancelledError:
                raise
            except Exception:  # the publisher outlives one failed round (the database may be away)
                log.exception("checkpoint publication failed; retried next round")

    async def publish_round(self) -> int:
        """One round of the publisher: the number of checkpoints signed and kept."""
        grown = await self.ctx.db.run(None, checkpoints.publish_all)
        for row in grown:
            await self.ctx.db.run(row["tenant_id"], checkpoints.publish, row["tenant_id"], row["log"], self.logs,
                                  row["tree_size"])
        return len(grown)


def log_signer(settings, keys: dsse.KeyRing) -> checkpoints.LogSigner:
    """The transparency logs' checkpoint signer: the ring's active key under AOS_LOG_ORIGIN."""
    try:
        note.log_origin(settings.log_origin, "ledger", "tenant")
    except ValueError as exc:
        raise ConfigError(f"AOS_LOG_ORIGIN {settings.log_origin!r} makes no valid note key name: {exc}") from None
    return checkpoints.LogSigner(keys.active, settings.log_origin)


def witness_keys(settings) -> tuple[note.NoteVerifier, ...]:
    """AOS_WITNESS_KEYS parsed: cosignature/v1 (type 0x04) verifier keys; anything else stops the start."""
    keys = []
    for vkey in settings.witness_keys:
        try:
            key = note.parse_verifier_key(vkey)
        except (note.NoteError, ValueError) as exc:
            raise ConfigError(f"AOS_WITNESS_KEYS: {vkey[:80]!r} is no verifier key: {exc}") from None
        if key.sig_type != note.SIG_COSIGNATURE:
            raise ConfigError(f"AOS_WITNESS_KEYS: {key.name} is a type 0x{key.sig_type:02x} key; witnesses "
                              "cosign with cosignature/v1 (type 0x04) keys")
        keys.append(key)
    return tuple(keys)


def _log(r: Request, number: int, request_cls: Any) -> str:
    """The request's log field as the database spells it (unset: the ledger)."""
    return r.enum(number, request_cls.DESCRIPTOR.fields_by_name["log"].enum_type, "log") or "ledger"


def _ledger_head_checkpoints(conn, tenant: str, key: dsse.SigningKey, signer: checkpoints.LogSigner
                             ) -> tuple[integrity_pb2.LedgerCheckpoint, integrity_pb2.LogCheckpoint]:
    """Both forms of the ledger's head, in one transaction: the DSSE statement and the C2SP
    checkpoint of the tree at the same size (the head seq)."""
    statement = checkpoints.sign(conn, tenant, key)
    return statement, checkpoints.publish(conn, tenant, "ledger", signer, statement.seq)


def _kept_checkpoint(conn, tenant: str, log_name: str, size: int,
                     signer: checkpoints.LogSigner) -> integrity_pb2.LogCheckpoint:
    row = checkpoints.kept(conn, tenant, log_name, size)
    if row is None:
        raise faults.RecordNotFound(faults.Resource.CHECKPOINT, f"{log_name}/{size}")
    return checkpoints.served(conn, row, signer)


def _cosign(conn, tenant: str, log_name: str, size: int, body: bytes | None, line: bytes,
            signer: checkpoints.LogSigner, witnesses: tuple[note.NoteVerifier, ...]
            ) -> tuple[integrity_pb2.LogCheckpoint, bool]:
    """Checks a witness's cosignature line against the checkpoint kept at ``size`` and keeps it."""
    row = checkpoints.kept(conn, tenant, log_name, size)
    if row is None:
        raise faults.RecordNotFound(faults.Resource.CHECKPOINT, f"{log_name}/{size}")
    kept_body = row["body"].encode()
    if body is not None and body != kept_body:
        log.warning("a witness sent a checkpoint that is not the one kept", extra={
            "tenant": tenant, "log": log_name, "tree_size": size})
        raise errors.ApiError(grpc.StatusCode.FAILED_PRECONDITION, "CHECKPOINT_NOT_OURS",
                              f"the checkpoint note's text is not that of the {log_name} checkpoint kept at "
                              f"size {size} (origin, size or root differ)", metadata={"tree_size": str(size)})
    try:
        verified = note.verify_cosignatures(kept_body + b"\n" + line, witnesses) if witnesses else []
    except note.NoteError as exc:
        if exc.reason == note.BAD_SIGNATURE:
            raise errors.ApiError(grpc.StatusCode.INVALID_ARGUMENT, "BAD_COSIGNATURE",
                                  "the cosignature does not verify over the kept checkpoint",
                                  violations=[("cosignature", f"does not verify: {exc}")]) from None
        if exc.reason != note.UNVERIFIED:
            raise errors.invalid_argument("cosignature", f"is not a signature line: {exc}") from None
        verified = []
    if not verified:
        raise errors.ApiError(grpc.StatusCode.PERMISSION_DENIED, "UNKNOWN_WITNESS_KEY",
                              "the cosignature is not from a configured witness key (AOS_WITNESS_KEYS)"
                              + ("" if witnesses else "; none is configured"))
    v = verified[0]
    added = store.keep_cosignature(conn, tenant, log_name, size, v.name, v.key_id, v.timestamp, line.decode())
    return checkpoints.served(conn, row, signer), added


def _verify_response(entry: Mapping[str, Any], *, recorded: bool) -> pb.VerifyExportResponse:
    """A verification's answer from its ExportVerified entry (``recorded``: an earlier one)."""
    return pb.VerifyExportResponse(
        valid=entry["after_state"]["valid"], checks=verification.checks_of(entry),
        verified_at=timestamp(entry["created_at"]), recorded=recorded,
        verifier_version=entry["after_state"]["verifier_version"], audit_entry_id=entry["id"],
        audit_entry_seq=entry["seq"], payloads_erased=entry["after_state"].get("payloads_erased") or 0,
        erasure_ids=entry["after_state"].get("erasure_ids") or (),
        erasures=export_erasures(entry.get("erasures") or ()))


def _range(r: Request, message: pb.AuditSlice | pb.SystemSlice, prefix: str) -> dict[str, str | None]:
    start, end = r.time_range(message, prefix=f"{prefix}.")
    return {"created_after": rfc3339(start) if start else None, "created_before": rfc3339(end) if end else None}


def servicers(ctx: ServiceContext) -> list[Servicer]:
    service = ExportService(ctx)
    return [Servicer(DESCRIPTOR, pb_grpc.add_ExportServiceServicer_to_server, service,
                     background=service.publish_checkpoints), *retention.servicers(ctx)]
