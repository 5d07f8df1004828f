"""Erasure of one data subject at issue #25's scale, every proof checked before and after.

    cd bench && ../.venv/bin/python erasure_scale.py --data-dir DIR     # on search_scale.py's cluster
    cd bench && ../.venv/bin/python erasure_scale.py                    # a scratch database (a small check)

search_scale.py's bulk rows are hash format 1: nothing in them can be erased. This adds, on top
of whatever the database holds, one tenant (--tenant, a new one by default) with erasable evidence
written the way producers write it — the Ingest service in this process, called over a real
channel: AppendAuditEvents (--entries audit events in batches of 500), RecordRun (--runs runs of
--steps steps) and AppendSystemRecords (--system records), every item naming one of --subjects
data subjects (hash format 2: the payloads and their salts in evidence_payloads, the rows carrying
commitments). Each subject's text holds its own surname (``Quennell<k>``), a word no one else's has.

Then for one subject (the first, or --subject K), as a reviewer and an officer would:
- before: the chain verified whole (aos_recording.verify); the tree's root and an inclusion proof
  of each of the subject's ledger entries from the stored hashes, each checked by aics-tlog (an
  RFC 9162 verifier not written here); an export of one of its runs and one of its audit entries
  (AUDIT_SLICE by its case's correlation id) made and downloaded, verified offline
  (aos_recording.verify_export), their DSSE envelopes by securesystemslib, their carried entries'
  audit paths by aics-tlog; SearchEvidence and ListAuditEntries find its surname;
- EraseDataSubject over gRPC, timed at the caller, and the rows it touched counted (payloads
  deleted by record type, tombstones written, ledger entries added, stored export artifacts
  deleted);
- after: the chain whole again (two entries more); the tree consistent with the one before
  (aics-tlog), the earlier proofs still valid against the earlier root with the rows' leaves read
  again; the downloaded copies still verify as above; no row of the tenant (append-only tables,
  payloads, stored export artifacts) holds the surname; the entries read back ERASED; a new export
  carries no surname; the searches find nothing for it, another subject's surname still found.

Access recording is off (as in the e2e suite: views would append to the ledger being counted)
and an Export's heavy work runs in threads of this process.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import psycopg
from google.protobuf import json_format, struct_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aos.evidence.v1 import bundle_pb2, evidence_pb2, records_pb2
from aos.export.v1 import export_service_pb2 as export_pb, export_service_pb2_grpc as export_grpc
from aos.ingest.v1 import ingest_service_pb2 as ingest_pb, ingest_service_pb2_grpc as ingest_grpc
from aos.logs.v1 import (
    audit_ledger_service_pb2 as audit_pb,
    audit_ledger_service_pb2_grpc as audit_grpc,
    evidence_search_service_pb2 as search_pb,
    evidence_search_service_pb2_grpc as search_grpc,
    records_pb2 as logs_records,
)
from aos_recording import bulk, dsse, tlog, verify, verify_export
from aos_runtime.auth import mint_token
from aos_runtime.config import Settings
from aos_runtime.db import libpq_url
from aos_runtime.service_main import build_server
from scratch import scratch_database, service_logins

SECRET = "bench-erasure-secret-" + "x" * 40
BATCH = 500
EVENTS = (("API_KEY_CREATED", "API_KEY"), ("ACCESS_GRANTED", "ACTOR"), ("ACCESS_DENIED", "ACTOR"),
          ("LIMIT_UPDATED", "LIMIT"), ("ACTOR_LOGGED_IN", "ACTOR"), ("LIMIT_OVERRIDE_GRANTED", "LIMIT"))
PAYLOAD_TABLES = ("evidence_payloads", "erased_payloads", "log_export_artifacts", "erased_export_artifacts")


def surname(k: int) -> str:
    """Subject k's own word (one lexeme of the 'simple' search configuration)."""
    return f"Quennell{k:05d}"


def person(k: int) -> str:
    return f"Ada {surname(k)} of {k % 97 + 1} Elm Street, {bulk.CITIES[k % len(bulk.CITIES)]}"


def subject_id(tenant: str, k: int) -> str:
    return f"{tenant}.subj-{k:05d}"


def value(plain: Any) -> struct_pb2.Value:
    return json_format.ParseDict(plain, struct_pb2.Value())


def metadata(tenant: str, scopes: tuple[str, ...], actor_type: str = "HUMAN") -> tuple[tuple[str, str], ...]:
    bearer = mint_token(secret=SECRET, tenant_id=tenant, subject="bench-dpo", scopes=scopes, actor_type=actor_type)
    return (("authorization", f"Bearer {bearer}"),)


def audit_events(tenant: str, count: int, subjects: int, now: datetime) -> Iterator[ingest_pb.AuditEvent]:
    """``count`` v2 events, subject ``i % subjects``; its case's correlation id on each."""
    for i in range(count):
        k = i % subjects
        event, entity = EVENTS[i % len(EVENTS)]
        e = ingest_pb.AuditEvent(
            event_id=f"{tenant}.evt-{i}", event_type=evidence_pb2.AuditEventType.Value(f"AUDIT_EVENT_TYPE_{event}"),
            entity_type=evidence_pb2.AuditEntityType.Value(f"AUDIT_ENTITY_TYPE_{entity}"),
            entity_id=f"{entity.lower()}-{i % 200}", correlation_id=f"{tenant}.case-{k}",
            action_reason=bulk.REASONS[i % len(bulk.REASONS)].format(a=10 + i % 4990, c=person(k),
                                                                      city=bulk.CITIES[i % len(bulk.CITIES)]),
            data_subject_id=subject_id(tenant, k))
        e.occurred_at.FromDatetime(now - timedelta(seconds=count - i))
        e.after_state.update({"customer": person(k), "email": f"{surname(k).lower()}@example.org",
                              "status": bulk.STATUSES[i % len(bulk.STATUSES)], "amount": 10 + i % 4990})
        yield e


def a_run(tenant: str, n: int, steps: int, subjects: int, now: datetime) -> ingest_pb.RunInput:
    k = n % subjects
    start = now - timedelta(hours=1, seconds=n)
    run = ingest_pb.RunInput(run_id=f"{tenant}.run-{n}", provider="openai", model="gpt-4o",
                             status=records_pb2.LLM_RUN_STATUS_SUCCEEDED, input_tokens=40 * steps,
                             output_tokens=20 * steps, data_subject_id=subject_id(tenant, k))
    run.started_at.FromDatetime(start)
    run.completed_at.FromDatetime(start + timedelta(seconds=steps))
    for i in range(steps):
        step = ingest_pb.StepInput(step_type=records_pb2.STEP_TYPE_LLM_CALL, tokens=60)
        step.timestamp.FromDatetime(start + timedelta(seconds=i))
        prompt = bulk.PROMPTS[(n + i) % len(bulk.PROMPTS)].format(o=f"ord-{n}-{i}")
        step.input_data.CopyFrom(value({"messages": [{"role": "user", "content": f"{prompt} for {person(k)}"}]}))
        step.output_data.CopyFrom(value(bulk.ANSWERS[(n + i) % len(bulk.ANSWERS)].format(o=f"ord-{n}-{i}", a=n % 500)
                                        + f" ({person(k)})"))
        run.steps.append(step)
    return run


def system_records(tenant: str, count: int, subjects: int, now: datetime) -> Iterator[ingest_pb.SystemRecordInput]:
    for i in range(count):
        k = i % subjects
        r = ingest_pb.SystemRecordInput(
            record_id=f"{tenant}.sys-{i}", component="mailer", event_type=records_pb2.SYSTEM_EVENT_TYPE_ERROR,
            severity=records_pb2.SYSTEM_SEVERITY_WARNING, correlation_id=f"{tenant}.case-{k}",
            summary=f"Mail to {person(k)} bounced: mailbox full", data_subject_id=subject_id(tenant, k))
        r.occurred_at.FromDatetime(now - timedelta(seconds=count - i))
        r.details.update({"to": f"{surname(k).lower()}@example.org", "attempt": 1 + i % 3})
        yield r


def batches(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def counts(url: str, tenant: str, subject: str, erasure_id: str | None, exports: list[str]) -> dict[str, Any]:
    """The rows an erasure touches, counted as the admin."""
    with psycopg.connect(libpq_url(url)) as conn:
        payloads = dict(conn.execute(
            "SELECT record_type, count(*) FROM evidence_payloads WHERE tenant_id = %s AND subject_id = %s "
            "GROUP BY record_type", (tenant, subject)).fetchall())
        tombstones = conn.execute("SELECT count(*) FROM erased_payloads WHERE tenant_id = %s AND erasure_id = %s",
                                  (tenant, erasure_id)).fetchone()[0] if erasure_id else 0
        chunks = conn.execute("SELECT count(*), coalesce(sum(length(data)), 0) FROM log_export_artifacts "
                              "WHERE tenant_id = %s AND export_id = ANY(%s)", (tenant, exports)).fetchone()
        artifact_tombstones = conn.execute(
            "SELECT count(*) FROM erased_export_artifacts WHERE tenant_id = %s AND erasure_id = %s",
            (tenant, erasure_id)).fetchone()[0] if erasure_id else 0
        entries = conn.execute("SELECT count(*) FROM audit_ledger WHERE tenant_id = %s", (tenant,)).fetchone()[0]
    return {"payloads_by_record_type": payloads, "payloads": sum(payloads.values()), "payload_tombstones": tombstones,
            "export_artifact_chunks": chunks[0], "export_artifact_bytes": int(chunks[1]),
            "export_artifact_tombstones": artifact_tombstones, "ledger_entries": entries}


def rows_holding(url: str, tenant: str, word: str) -> dict[str, int]:
    """Rows of the tenant whose text holds ``word`` (case-insensitive), table by table, as the admin."""
    with psycopg.connect(libpq_url(url)) as conn:
        found = {t: conn.execute(f"SELECT count(*) FROM {t} x WHERE x.tenant_id = %s "
                                 f"AND strpos(lower(x::text), %s) > 0", (tenant, word.lower())).fetchone()[0]
                 for t in ("audit_ledger", "aos_trace_steps", "aos_traces", "system_records", "evidence_payloads")}
        # stored artifacts are bytes (a row's text form would be hex): the word's bytes in them
        found["log_export_artifacts"] = conn.execute(
            "SELECT count(*) FROM log_export_artifacts WHERE tenant_id = %s AND position(%s::bytea IN data) > 0",
            (tenant, word.encode())).fetchone()[0]
    return found


def ledger_tree(url: str, tenant: str):
    """(tree size, the stored-hash reader, {seq: content hash}) of the tenant's ledger log."""
    with psycopg.connect(libpq_url(url)) as conn:
        hashes = {int(i): bytes(h) for i, h in conn.execute(
            "SELECT hash_index, hash FROM tlog_hashes WHERE tenant_id = %s AND log = 'ledger'", (tenant,))}
        leaves = {int(s): bytes(h) for s, h in conn.execute(
            "SELECT seq, content_hash FROM audit_ledger WHERE tenant_id = %s", (tenant,))}
    return max(leaves), (lambda indexes: [hashes[i] for i in indexes]), leaves


def chain(url: str, tenant: str) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    started = time.perf_counter()
    with engine.connect() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, false)"), {"t": tenant})
        report = verify.verify_ledger(conn, tenant)
    engine.dispose()
    return {"ok": report.ok, "checked": report.checked, "wall_s": round(time.perf_counter() - started, 2)}


@dataclasses.dataclass
class Copy:
    """An export as its holder keeps it: the artifact, the envelope, the signing key."""
    export_id: str
    data: bytes
    envelope: str
    key: Any   # ListSigningKeys' entry


def offline_checks(copy: Copy) -> dict[str, Any]:
    """The holder's checks of a copy: the suite's offline verifier, the DSSE envelope by
    securesystemslib, each carried ledger entry's audit path (from the manifest's proof) by aics-tlog."""
    from aics_tlog import tree as aics_tree
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    public = dsse.PublicKey.from_raw(copy.key.public_key)
    result = verify_export.verify(copy.data, copy.envelope, [public])
    sslib_key = SSlibKey(copy.key.key_id, "ed25519", "ed25519", {"public": copy.key.public_key.hex()})
    envelope = Envelope.from_dict(json.loads(copy.envelope))
    signed_by = list(envelope.verify([sslib_key], 1))
    manifest = json.loads(base64.b64decode(json.loads(copy.envelope)["payload"]))
    out: dict[str, Any] = {"verify_export": result.verdict.name, "ok": result.ok,
                           "dsse_securesystemslib": signed_by == [copy.key.key_id]}
    section = manifest.get("transparency_log")
    records = json.loads(copy.data).get("records") if copy.data[:1] == b"{" else None
    leaves = [(r["seq"], r["content_hash"]) for r in (records or []) if r.get("seq") and r.get("content_hash")]
    if section and leaves:
        root = base64.b64decode(section["root"])
        out["aics_inclusion"] = all(
            aics_tree.verify_leaf_inclusion(bytes.fromhex(content), seq - 1, section["tree_size"],
                                            verify_export.inclusion_proof(leaves, section, seq), root)
            for seq, content in leaves)
        out["entries_proved"] = len(leaves)
    return out


async def export_copy(stub, tenant: str, request: export_pb.CreateExportRequest) -> Copy:
    meta = metadata(tenant, ("exports.read", "exports.create"))
    created = (await stub.CreateExport(request, metadata=meta)).export
    data = b"".join([m.data async for m in stub.DownloadExport(
        export_pb.DownloadExportRequest(export_id=created.export_id), metadata=meta)])
    (key,) = [k for k in (await stub.ListSigningKeys(export_pb.ListSigningKeysRequest(), metadata=meta)).keys
              if k.key_id == created.signing_key_id]
    return Copy(created.export_id, data, created.dsse_envelope, key)


async def found(search, audit, tenant: str, word: str) -> dict[str, int]:
    meta = metadata(tenant, ("logs.read",))
    hits = await search.SearchEvidence(search_pb.SearchEvidenceRequest(query=word), metadata=meta)
    listed = await audit.ListAuditEntries(audit_pb.ListAuditEntriesRequest(search=word, page_size=50), metadata=meta)
    return {"search_evidence_total": hits.total_size, "list_audit_entries_total": listed.total_size}


async def run(admin_url: str, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from aics_tlog import tree as aics_tree

    from services.export.server import servicers as export_servicers
    from services.ingest.server import servicers as ingest_servicers
    from services.logs.server import servicers as logs_servicers

    tenant = args.tenant or f"erasure-{uuid.uuid4().hex[:6]}"
    k = args.subject
    subject, word, other_word = subject_id(tenant, k), surname(k), surname((k + 1) % args.subjects)
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as admin:
        admin.execute("SET ROLE aos_owner")
        admin.execute("INSERT INTO tenants (id, name) VALUES (%s, 'Erasure at scale') ON CONFLICT DO NOTHING",
                      (tenant,))
    logins = service_logins(admin_url, data_dir / "aos")
    settings = dataclasses.replace(Settings.from_env({}), jwt_secret=SECRET, data_dir=data_dir / "aos",
                                   checkpoint_interval_s=0, access_recording=False, heavy_processes=False)
    servers = {"ingest": build_server("ingest", ingest_servicers, settings, logins["ingest"], port=0),
               "logs": build_server("logs", logs_servicers, settings, logins["logs"], port=0),
               "export": build_server("export", export_servicers, settings, logins["export"], port=0)}
    address = {name: f"127.0.0.1:{await server.start()}" for name, server in servers.items()}
    out: dict[str, Any] = {"tenant": tenant, "subject": subject, "word": word, "volume": {
        "entries": args.entries, "runs": args.runs, "steps": args.steps, "system": args.system,
        "subjects": args.subjects}}
    try:
        async with contextlib.AsyncExitStack() as stack:
            channels = {name: await stack.enter_async_context(grpc.aio.insecure_channel(a))
                        for name, a in address.items()}
            ingest = ingest_grpc.IngestServiceStub(channels["ingest"])
            search = search_grpc.EvidenceSearchServiceStub(channels["logs"])
            audit = audit_grpc.AuditLedgerServiceStub(channels["logs"])
            exports = export_grpc.ExportServiceStub(channels["export"])
            producer = metadata(tenant, ("evidence.write",), actor_type="SYSTEM")
            now = datetime.now(timezone.utc)

            # 1. the tenant's erasable evidence, as producers write it
            written: dict[str, Any] = {}
            started = time.perf_counter()
            for batch in batches(audit_events(tenant, args.entries, args.subjects, now), BATCH):
                reply = await ingest.AppendAuditEvents(ingest_pb.AppendAuditEventsRequest(events=batch),
                                                       metadata=producer)
                assert reply.created == len(batch), reply.results[0]
            written["audit_events_s"] = round(time.perf_counter() - started, 1)
            started = time.perf_counter()
            for n in range(args.runs):
                reply = await ingest.RecordRun(ingest_pb.RecordRunRequest(
                    run=a_run(tenant, n, args.steps, args.subjects, now)), metadata=producer)
                assert reply.status == ingest_pb.ITEM_STATUS_CREATED, reply
            written["runs_s"] = round(time.perf_counter() - started, 1)
            started = time.perf_counter()
            for batch in batches(system_records(tenant, args.system, args.subjects, now), BATCH):
                reply = await ingest.AppendSystemRecords(ingest_pb.AppendSystemRecordsRequest(records=batch),
                                                         metadata=producer)
                assert reply.created == len(batch), reply.results[0]
            written["system_records_s"] = round(time.perf_counter() - started, 1)
            with psycopg.connect(libpq_url(admin_url), autocommit=True) as admin:
                written["payload_rows_of_the_tenant"] = admin.execute(
                    "SELECT count(*) FROM evidence_payloads WHERE tenant_id = %s", (tenant,)).fetchone()[0]
                written["payload_rows_in_all"] = admin.execute("SELECT count(*) FROM evidence_payloads").fetchone()[0]
                # what autovacuum would have done by the time anyone erases: the payloads' statistics
                # (the table was empty) and their search index's pending list merged. Not the 10 M
                # tables: the tenant's rows are a sliver of them (autovacuum is on for the rest).
                started = time.perf_counter()
                admin.execute("VACUUM (ANALYZE) evidence_payloads")
                written["vacuum_analyze_s"] = round(time.perf_counter() - started, 1)
            out["written"] = written

            # 2. before: chain, tree and proofs, two exports held by an auditor, the searches
            run_id = f"{tenant}.run-{k}" if k < args.runs else None  # run n's subject is n % subjects
            before: dict[str, Any] = {"chain": chain(admin_url, tenant)}
            n0, read, leaves0 = ledger_tree(admin_url, tenant)
            root0 = tlog.tree_hash(n0, read)
            with psycopg.connect(libpq_url(admin_url)) as conn:
                mine = [int(s) for (s,) in conn.execute(
                    "SELECT seq FROM audit_ledger WHERE tenant_id = %s AND correlation_id = %s ORDER BY seq",
                    (tenant, f"{tenant}.case-{k}"))]
            proofs0 = {s: tlog.prove_record(n0, s - 1, read) for s in mine}
            before["tree"] = {"size": n0, "subject_entries": len(mine), "aics_inclusion": all(
                aics_tree.verify_leaf_inclusion(leaves0[s], s - 1, n0, p, root0) for s, p in proofs0.items())}
            copies = {"audit_slice": await export_copy(exports, tenant, export_pb.CreateExportRequest(
                bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON,
                audit_slice=export_pb.AuditSlice(correlation_id=f"{tenant}.case-{k}")))}
            if run_id:
                copies["run"] = await export_copy(exports, tenant, export_pb.CreateExportRequest(
                    bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON, run_id=run_id))
            before["exports"] = {name: {**offline_checks(c), "bytes": len(c.data),
                                        "holds_word": word.encode() in c.data} for name, c in copies.items()}
            before["found"] = await found(search, audit, tenant, word)
            before["found_other_subject"] = await found(search, audit, tenant, other_word)
            before["rows_holding_word"] = rows_holding(admin_url, tenant, word)
            export_ids = [c.export_id for c in copies.values()]
            before["counts"] = counts(admin_url, tenant, subject, None, export_ids)
            out["before"] = before

            # 3. the erasure, as the CLI and REST call it
            started, cpu = time.perf_counter(), time.process_time()
            erased = await ingest.EraseDataSubject(ingest_pb.EraseDataSubjectRequest(
                subject_id=subject, reason="DSR bench"), metadata=metadata(tenant, ("evidence.erase",)))
            out["erase"] = {"wall_s": round(time.perf_counter() - started, 3),
                            "this_process_cpu_s": round(time.process_time() - cpu, 3),
                            "payloads_erased": erased.payloads_erased, "exports_erased": list(erased.exports_erased),
                            "request_seq": erased.request_seq, "executed_seq": erased.executed_seq}

            # 4. after
            after: dict[str, Any] = {"counts": counts(admin_url, tenant, subject, erased.erasure_id, export_ids),
                                     "chain": chain(admin_url, tenant)}
            n1, read, leaves1 = ledger_tree(admin_url, tenant)
            root1 = tlog.tree_hash(n1, read)
            after["tree"] = {
                "size": n1,
                "aics_consistency_with_before": aics_tree.verify_consistency(n0, n1, root0, root1,
                                                                             tlog.prove_tree(n1, n0, read)),
                "earlier_proofs_aics": all(aics_tree.verify_leaf_inclusion(leaves1[s], s - 1, n0, p, root0)
                                           for s, p in proofs0.items()),
                "leaves_unchanged": all(leaves1[s] == leaves0[s] for s in leaves0)}
            after["exports_held_before"] = {name: offline_checks(c) for name, c in copies.items()}
            meta = metadata(tenant, ("exports.read", "exports.create"))
            try:
                await exports.DownloadExport(export_pb.DownloadExportRequest(export_id=copies["audit_slice"].export_id),
                                             metadata=meta).read()
                after["download_of_earlier_export"] = "served"
            except grpc.aio.AioRpcError as err:
                after["download_of_earlier_export"] = f"{err.code().name}: {err.details()}"
            later = await export_copy(exports, tenant, export_pb.CreateExportRequest(
                bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON,
                audit_slice=export_pb.AuditSlice(correlation_id=f"{tenant}.case-{k}")))
            after["export_made_after"] = {**offline_checks(later), "holds_word": word.encode() in later.data}
            read_meta = metadata(tenant, ("logs.read",))
            entry = await audit.GetAuditEntry(audit_pb.GetAuditEntryRequest(entry_id=f"{tenant}.evt-{k}"),
                                              metadata=read_meta)
            after["entry_read_back"] = {"payload_states": [logs_records.PayloadState.Name(p.state)
                                                           for p in entry.entry.payloads],
                                        "action_reason_present": entry.entry.HasField("action_reason"),
                                        "after_state_present": entry.HasField("after_state")}
            after["found"] = await found(search, audit, tenant, word)
            after["found_other_subject"] = await found(search, audit, tenant, other_word)
            after["rows_holding_word"] = rows_holding(admin_url, tenant, word)
            out["after"] = after
    finally:
        for server in servers.values():
            await server.stop(grace=0)
    b, a = out["before"]["counts"], out["after"]["counts"]
    out["rows_touched"] = {"payloads_deleted": b["payloads"] - a["payloads"],
                           "payloads_deleted_by_record_type": b["payloads_by_record_type"],
                           "payload_tombstones_written": a["payload_tombstones"],
                           "ledger_entries_added": a["ledger_entries"] - b["ledger_entries"],
                           "export_artifact_chunks_deleted": b["export_artifact_chunks"] - a["export_artifact_chunks"],
                           "export_artifact_bytes_deleted": b["export_artifact_bytes"] - a["export_artifact_bytes"],
                           "export_artifact_tombstones_written": a["export_artifact_tombstones"]}
    out["verdict"] = verdict(out)
    return out


def verdict(out: dict[str, Any]) -> dict[str, bool]:
    """Each claim of the docstring, from the figures (all must be true)."""
    before, after, erase = out["before"], out["after"], out["erase"]
    return {
        # (the two exports made between add their EvidenceExported entries)
        "chain_ok_before_and_after": before["chain"]["ok"] and after["chain"]["ok"]
        and after["chain"]["checked"] == after["counts"]["ledger_entries"]
        and out["rows_touched"]["ledger_entries_added"] == 2,
        "proofs_before_ok": before["tree"]["aics_inclusion"],
        "tree_consistent_and_earlier_proofs_ok": after["tree"]["aics_consistency_with_before"]
        and after["tree"]["earlier_proofs_aics"] and after["tree"]["leaves_unchanged"],
        "exports_held_before_still_verify": all(
            c["ok"] and c["dsse_securesystemslib"] and c.get("aics_inclusion", True)
            for c in after["exports_held_before"].values())
        and all(c["holds_word"] for c in before["exports"].values()),
        "export_after_verifies_without_content": after["export_made_after"]["ok"]
        and not after["export_made_after"]["holds_word"],
        "erased_everything_of_the_subject": erase["payloads_erased"] == before["counts"]["payloads"] > 0
        and after["counts"]["payloads"] == 0 and not any(after["rows_holding_word"].values())
        and not any(before["rows_holding_word"][t] for t in ("audit_ledger", "aos_trace_steps", "aos_traces",
                                                              "system_records")),
        "reads_say_erased": bool(after["entry_read_back"]["payload_states"]) and all(
            s == "PAYLOAD_STATE_ERASED" for s in after["entry_read_back"]["payload_states"]),
        "search_finds_nothing_after": all(before["found"].values()) and not any(after["found"].values())
        and after["found_other_subject"] == before["found_other_subject"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="search_scale.py's cluster (started here, stopped after); "
                                           "default: a scratch database")
    parser.add_argument("--tenant", help="default: a new tenant erasure-<random>")
    parser.add_argument("--subjects", type=int, default=500)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--system", type=int, default=2_000)
    parser.add_argument("--subject", type=int, default=0, help="the subject erased (0 .. --subjects - 1)")
    args = parser.parse_args()
    if args.data_dir:
        from search_scale import server

        data_dir = Path(args.data_dir).resolve()
        pg = server(data_dir)
        try:
            result = asyncio.run(run(pg.url, data_dir, args))
        finally:
            pg.stop()
    else:
        with scratch_database("aos-bench-erasure-scale-") as (url, work):
            result = asyncio.run(run(url, work, args))
    print(json.dumps(result, indent=2, default=str))
    return 0 if all(result["verdict"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
