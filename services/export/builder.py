"""Building an export: gather the records, render the artifact, sign, record — in one transaction.

The artifact's chunks are written as they are rendered; the log_exports row (which
names the artifact's checksum and carries the signed manifest) and the
EvidenceExported audit entry are written last, in the same transaction. A crash
anywhere before the commit leaves neither the row nor a byte of the artifact.
"""
from __future__ import annotations

import array
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from aos_evidence import queries as evidence
from aos_evidence.kinds import BundleType, ExportFormat, ExportScope
from aos_evidence.queries import AuditFilters
from aos_recording import dsse, erasure, verify_export
from aos_recording.hashing import GENESIS, canonical_json, manifest_hash, rfc3339
from aos_recording.writers import AuditLedgerWriter, new_id
from aos_runtime import faults
from aos_runtime.db import cpu_bound
from services.export import artifacts, bundles, checkpoints, dbthread, quotas, retention_store, store

# v2: signed_at and signed_by (the signing time and key, inside what is signed: a verifier
# checks the key's validity at that time), contents (per record type, the count and ledger
# seq range the artifact covers).
# v3 (with a log signer): transparency_log, the C2SP checkpoint of the ledger at the export's
# bound (origin, tree size, root, the signed note) and one proof that every ledger entry the
# artifact carries is a leaf of its tree (verify_export checks both; v2 manifests still verify).
MANIFEST_VERSION = "aos.export-manifest/v2"


@dataclass(frozen=True)
class Plan:
    """What to export, as validated from a request (or re-read from a recorded export)."""
    tenant_id: str
    scope: ExportScope
    bundle_type: BundleType
    format: ExportFormat
    run_id: str | None = None
    incident_id: str | None = None
    slice_filter: dict[str, Any] = field(default_factory=dict)   # the request's filter, JSON-able
    idempotency_key: str | None = None

    @property
    def subject(self) -> Any:
        return self.run_id or self.incident_id or self.slice_filter

    def same_request(self, row: Mapping[str, Any]) -> bool:
        """Whether a recorded export was made for this very request (idempotency)."""
        recorded = {k: v for k, v in (row["slice_filter"] or {}).items() if k not in ("max_seq", "recorded_until")}
        return (row["scope"], row["run_id"], row["incident_id"], row["bundle_type"], row["format"]) == (
            self.scope, self.run_id, self.incident_id, self.bundle_type, self.format) and \
            recorded == (self.slice_filter if self.scope.is_slice else {})


def _head(plan: Plan) -> dict[str, Any]:
    # Plain strings in the document: canonical_json takes its fast path only for exact builtins.
    return {"format_version": bundles.FORMAT_VERSION, "tenant_id": plan.tenant_id, "scope": plan.scope.value,
            "subject": plan.subject, "bundle_type": plan.bundle_type.value}


# --- gathering ---------------------------------------------------------------------

def _run_evidence(conn: Connection, writer: bundles.RecordWriter, tenant: str, run_id: str,
                  max_seq: int) -> dict[str, Any] | None:
    run = evidence.get_run(conn, tenant, run_id)
    trace = evidence.trace_of_run(conn, tenant, run_id)
    if run is None and trace is None:
        return None
    return run_evidence(
        writer, run, trace,
        # Streamed through a server-side cursor as the writer takes them (never all held).
        store.trace_steps(conn, tenant, trace["trace_id"]) if trace else (),
        governance=evidence.run_audit_entries(conn, tenant, run_id, states=True),
        incidents=store.run_incidents(conn, tenant, run_id, trace["trace_id"] if trace else None),
        breaches=evidence.run_breaches(conn, tenant, run_id), max_seq=max_seq)


def run_evidence(writer: bundles.RecordWriter, run: Mapping[str, Any] | None, trace: Mapping[str, Any] | None,
                 steps: Iterable[Mapping[str, Any]], *, governance: Iterable[Mapping[str, Any]],
                 incidents: Iterable[Mapping[str, Any]], breaches: Iterable[Mapping[str, Any]],
                 max_seq: int) -> dict[str, Any]:
    """A run bundle's records from its rows (the trace's ``steps`` as an iterable: taken once,
    into bundles.Steps)."""
    governance = [e for e in governance if _governs(e, max_seq)]
    return {
        "run": writer.llm_run(run) if run else None,
        "trace": writer.trace(trace, steps) if trace else None,
        "policy_context": {
            "policy_snapshot_id": trace["policy_snapshot_id"] if trace else None,
            "violated_policy_id": trace["violation_policy_id"] if trace else None,
            "policy_events": [e["id"] for e in governance if e["entity_type"] in ("POLICY_RULE", "LIMIT")]},
        "incidents": [writer.incident(i) for i in incidents],
        "limit_breaches": [writer.breach(b) for b in breaches],
        "governance": [writer.audit_entry(e) for e in sorted(governance, key=lambda e: e["seq"])],
    }


def incident_evidence(writer: bundles.RecordWriter, incident: Mapping[str, Any], run: Mapping[str, Any],
                      entries: Iterable[Mapping[str, Any]], proposals: Iterable[Mapping[str, Any]],
                      max_seq: int) -> dict[str, Any]:
    """An incident bundle's records: its source run's (``run``, from run_evidence, or {}), its
    ledger entries merged into the run's by id, its proposals."""
    own = {e["id"]: e for e in entries if _governs(e, max_seq)}
    governance = sorted([writer.audit_entry(e) for e in own.values()] +
                        [e for e in run.get("governance", []) if e["id"] not in own], key=lambda e: e["seq"])
    return {**run, "incident": writer.incident(incident), "governance": governance,
            "proposals": [writer.proposal(p) for p in proposals]}


def _governs(entry: Mapping[str, Any], max_seq: int) -> bool:
    """Ledger entries a bundle carries: those recorded before the export began, and
    not the exports of the same evidence (access events, not governance — else each
    export would change the next one's bytes)."""
    return entry["seq"] <= max_seq and entry["event_type"] != "EvidenceExported"


def _views(bundle: dict[str, Any]) -> dict[str, Any]:
    """SOC2 adds its control mapping; EXECUTIVE keeps the debrief and the hashes, not the raw records."""
    kind = BundleType(bundle["bundle_type"])
    if kind is BundleType.SOC2:
        return {**bundle, "soc2": bundles.soc2(bundles.run_controls(bundle), str(bundle["subject"]),
                                               artifacts.newest_time(bundle))}
    if kind is BundleType.EXECUTIVE:
        trace = bundle.get("trace") or {}
        return {**{k: bundle[k] for k in ("format_version", "tenant_id", "scope", "subject", "bundle_type")},
                "debrief": bundles.run_debrief(bundle),
                "evidence_hashes": {"trace": trace.get("content_hash"),
                                    "ledger": [{"seq": e["seq"], "chain_hash": e["chain_hash"]}
                                               for e in bundle.get("governance", [])]},
                "as_of": artifacts.newest_time(bundle)}
    return bundle


def _gather(conn: Connection, plan: Plan, writer: bundles.RecordWriter, max_seq: int) -> dict[str, Any]:
    head = _head(plan)
    if plan.scope is ExportScope.LLM_RUN:
        run_id = _subject_id(plan.run_id, "run_id")
        found = _run_evidence(conn, writer, plan.tenant_id, run_id, max_seq)
        if found is None:
            raise faults.RecordNotFound(faults.Resource.RUN, run_id)
        return _views({**head, **found})
    incident_id = _subject_id(plan.incident_id, "incident_id")
    incident = store.incident(conn, plan.tenant_id, incident_id)
    if incident is None:
        raise faults.RecordNotFound(faults.Resource.INCIDENT, incident_id)
    run = (_run_evidence(conn, writer, plan.tenant_id, incident["source_run_id"], max_seq)
           if incident["source_run_id"] else None) or {}
    return _views({**head, **incident_evidence(
        writer, incident, run, store.incident_audit_entries(conn, plan.tenant_id, incident_id),
        store.incident_proposals(conn, plan.tenant_id, incident_id), max_seq)})


def _subject_id(value: str | None, name: str) -> str:
    """A run or incident plan's subject; the request validation made sure it is there."""
    if value is None:
        raise ValueError(f"the export plan has no {name}")
    return value


def _slice_records(conn: Connection, plan: Plan, writer: bundles.RecordWriter, bounds: Mapping[str, Any],
                   thread: dbthread.ConnectionThread | None = None):
    f = plan.slice_filter
    if plan.scope is ExportScope.AUDIT_SLICE:
        filters = AuditFilters(event_types=(f["event_type"],) if f.get("event_type") else (),
                               entity_type=f.get("entity_type"), actor_type=f.get("actor_type"),
                               actor_id=f.get("actor_id"), correlation_id=f.get("correlation_id"),
                               created_after=_time(f.get("created_after")),
                               created_before=_time(f.get("created_before")))
        rows = store.audit_slice(conn, plan.tenant_id, filters, bounds["max_seq"])
        return "audit_entry", bundles.AuditRecords(writer, thread.read_ahead(rows) if thread else rows)
    system_filters = {**{k: f.get(k) for k in ("component", "event_type", "severity")},
                      "created_after": _time(f.get("created_after")),
                      "created_before": _time(f.get("created_before")),
                      "recorded_until": _time(bounds["recorded_until"])}
    return "system_record", (writer.system_record(r)
                             for r in store.system_slice(conn, plan.tenant_id, system_filters))


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def render(conn: Connection, plan: Plan, key: dsse.SigningKey, sink: artifacts.Sink,
           bounds: Mapping[str, Any], ledger_seqs: array.array | None = None,
           carried: Counter[str] | None = None, thread: dbthread.ConnectionThread | None = None
           ) -> artifacts.Rendered:
    """The artifact for ``plan`` over the records within ``bounds`` (the ledger head
    ``max_seq``, and for system slices ``recorded_until``). ``ledger_seqs`` collects the seqs
    of the ledger entries the artifact carries (8 bytes each), for the manifest's proof;
    ``carried`` counts, per data subject, the v2 payloads it carries. With ``thread`` (an audit
    slice only), every statement of the render goes through it: the rows are read ahead (and
    the sink, the caller's, writes through it too)."""
    if thread is not None and plan.scope is not ExportScope.AUDIT_SLICE:
        raise ValueError("only an audit slice's render runs its statements on a helper thread")
    # v2 records (docs/ERASURE.md) go out with their payloads still held and the salts that open
    # their commitments; erased fields as erased.
    def opener(kind: str, row: Mapping[str, Any]) -> Mapping[str, Any]:
        def open_row() -> dict[str, Any]:
            return erasure.opened(conn, plan.tenant_id, kind, row, with_salts=True)

        opened = thread.call(open_row) if thread is not None else open_row()
        if carried is not None:
            carried.update((opened.get("payload_subjects") or {}).values())
        return opened

    # An executive bundle carries no steps: their JSON is not spooled.
    writer = bundles.RecordWriter(opener=opener, step_json=plan.bundle_type is not BundleType.EXECUTIVE)
    if not plan.scope.is_slice:
        bundle = _gather(conn, plan, writer, bounds["max_seq"])
        if ledger_seqs is not None:
            hashes = bundle.get("evidence_hashes") or {}
            ledger_seqs.extend(e["seq"] for e in bundle.get("governance") or hashes.get("ledger") or [])
        return artifacts.render_bundle(bundle, plan.format, writer.redactor.counts, key, sink)
    kind, records = _slice_records(conn, plan, writer, bounds, thread)
    if ledger_seqs is not None and isinstance(records, bundles.AuditRecords):
        records.seqs = ledger_seqs
    return artifacts.render_slice(_head(plan), kind, records, plan.format, writer, key, sink)


# --- recording ------------------------------------------------------------------------

@cpu_bound
def create(conn: Connection, plan: Plan, keys: dsse.KeyRing, actor_type: str, actor_id: str,
           limits: quotas.Limits = quotas.NONE, log: checkpoints.LogSigner | None = None) -> Mapping[str, Any]:
    """Renders, signs and records one export; returns its log_exports row. Refuses with a
    quota fault (faults.QUOTA_FAULTS) before rendering, and again under the chain lock with the
    artifact's size, when the tenant's ``limits`` would be passed."""
    tenant = plan.tenant_id
    quotas.check(conn, tenant, limits)
    export_id = new_id("exp")
    ledger = evidence.ledger_head(conn, tenant)
    bounds = {"max_seq": ledger["seq"] if ledger else 0}
    if plan.scope is ExportScope.SYSTEM_SLICE:
        bounds["recorded_until"] = rfc3339(store.database_now(conn))
    seqs = array.array("q")
    carried: Counter[str] = Counter()
    if plan.scope is ExportScope.AUDIT_SLICE:
        # An audit slice (up to the whole ledger) is read ahead and its chunks written behind, on
        # a helper thread, while this one renders (dbthread: the database's time overlaps).
        with dbthread.ConnectionThread() as thread:
            sink = artifacts.Sink(lambda n, data: store.write_chunk(conn, tenant, export_id, n, data), thread)
            rendered = render(conn, plan, keys.active, sink, bounds, seqs, carried, thread)
    else:
        sink = artifacts.Sink(lambda n, data: store.write_chunk(conn, tenant, export_id, n, data))
        rendered = render(conn, plan, keys.active, sink, bounds, seqs, carried)

    created_at = store.database_now(conn)
    previous = store.lock_export_chain(conn, tenant)
    quotas.check(conn, tenant, limits, adding_bytes=rendered.size)  # exact: other creates wait on the lock
    previous_chain = bytes(previous["chain_hash"]) if previous else GENESIS
    slice_filter = {**plan.slice_filter, **bounds} if plan.scope.is_slice else None
    filename = f"{export_id}.{plan.format.extension}"
    manifest = {
        "format_version": MANIFEST_VERSION, "export_id": export_id, "tenant_id": tenant, "scope": plan.scope,
        "subject": {"run_id": plan.run_id} if plan.run_id else {"incident_id": plan.incident_id}
        if plan.incident_id else {"filter": slice_filter},
        "bundle_type": plan.bundle_type, "format": plan.format, "content_type": plan.format.content_type,
        "filename": filename, "size": rendered.size, "checksum": rendered.checksum.hex(), "records": rendered.records,
        "created_at": rfc3339(created_at), "requested_by": {"type": actor_type, "id": actor_id},
        # The artifact stays reproducible: the signing time lives here, in the manifest only.
        "signed_at": rfc3339(created_at), "signed_by": keys.active.public.key_id, "contents": rendered.contents,
        "redaction": rendered.redaction,
        "ledger_checkpoint": {"seq": bounds["max_seq"],
                              "chain_hash": bytes(ledger["chain_hash"]).hex() if ledger else GENESIS.hex()},
        "previous_export_chain_hash": previous_chain.hex(),
        # The retention policies in force for the carried records (issue #25; seed 001's retention_class).
        "retention": retention_store.manifest_section(conn, tenant, plan.scope, plan.slice_filter.get("severity")
                                                      if plan.scope is ExportScope.SYSTEM_SLICE else None),
    }
    if log is not None:
        # v3: the C2SP checkpoint of the ledger at max_seq (kept now if it was not) and one
        # proof that every ledger entry the artifact carries is a leaf of its tree.
        manifest["format_version"] = verify_export.MANIFEST_V3
        manifest["transparency_log"] = checkpoints.manifest_section(conn, tenant, log, bounds["max_seq"], seqs)
    envelope = dsse.sign_envelope(dsse.MANIFEST_PAYLOAD_TYPE, canonical_json(manifest), keys.active)
    inserted = store.insert_export(conn, {
        "id": export_id, "tenant_id": tenant, "scope": plan.scope, "subject_id": plan.run_id or plan.incident_id,
        "run_id": plan.run_id, "incident_id": plan.incident_id, "slice_filter": slice_filter,
        "bundle_type": plan.bundle_type, "format": plan.format, "content_type": manifest["content_type"],
        "filename": filename, "size_bytes": rendered.size, "checksum": rendered.checksum, "manifest": manifest,
        "dsse_envelope": envelope, "signing_key_id": keys.active.public.key_id, "redaction": rendered.redaction,
        "idempotency_key": plan.idempotency_key, "requested_by_type": actor_type, "requested_by_id": actor_id,
        "correlation_id": plan.run_id or plan.incident_id, "created_at": created_at,
        "content_hash": manifest_hash(manifest)})
    if bytes(inserted["prev_hash"]) != previous_chain:  # the lock above makes this impossible; prove it
        raise RuntimeError("the export chain moved under its lock")
    # Whose erasable payloads the stored artifact holds: erasing one of them deletes it (0026).
    store.record_payload_subjects(conn, tenant, export_id, carried)
    AuditLedgerWriter(conn).append(
        tenant_id=tenant, event_type="EvidenceExported", entity_type="LOG_EXPORT", entity_id=export_id,
        actor_type=actor_type, actor_id=actor_id, correlation_id=plan.run_id or plan.incident_id,
        action_reason=f"{plan.bundle_type} {plan.format} export of {plan.scope}",
        after_state={"export_id": export_id, "scope": plan.scope, "bundle_type": plan.bundle_type,
                     "format": plan.format, "checksum": rendered.checksum.hex(), "run_id": plan.run_id,
                     "incident_id": plan.incident_id},
        created_at=created_at)
    exported = store.get_export(conn, tenant, export_id)
    if exported is None:  # written above, in this transaction
        raise RuntimeError(f"export {export_id} is not readable after its insert")
    return exported


def plan_of(row: Mapping[str, Any]) -> tuple[Plan, dict[str, Any]]:
    """The plan and bounds a recorded export was rendered with (to render it again)."""
    recorded = dict(row["slice_filter"] or {})
    bounds = {k: recorded.pop(k) for k in ("max_seq", "recorded_until") if k in recorded}
    bounds.setdefault("max_seq", row["manifest"]["ledger_checkpoint"]["seq"])
    return Plan(tenant_id=row["tenant_id"], scope=ExportScope(row["scope"]), bundle_type=BundleType(row["bundle_type"]),
                format=ExportFormat(row["format"]), run_id=row["run_id"], incident_id=row["incident_id"],
                slice_filter=recorded), bounds


def rerender(conn: Connection, row: Mapping[str, Any], key: dsse.SigningKey) -> artifacts.Rendered:
    """The artifact of a recorded export rendered again (VerifyExport): its size and checksum,
    nothing stored. An audit slice's rows are read ahead and its chunks hashed on a helper
    thread while this one renders, as when it was created."""
    plan, bounds = plan_of(row)
    if plan.scope is ExportScope.AUDIT_SLICE:
        with dbthread.ConnectionThread() as thread:
            return render(conn, plan, key, artifacts.Sink(lambda n, data: None, thread), bounds, thread=thread)
    return render(conn, plan, key, artifacts.Sink(lambda n, data: None), bounds)


def rerender_checksum(conn: Connection, row: Mapping[str, Any], key: dsse.SigningKey) -> bytes:
    return rerender(conn, row, key).checksum

