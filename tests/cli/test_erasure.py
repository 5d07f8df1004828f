"""``erase`` against the suite: a v2 subject written through Ingest, erased from the CLI."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta

import grpc
import psycopg
import pytest

from aos.evidence.v1 import evidence_pb2
from aos.ingest.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc
from tests.e2e.support import BASE, token, ts

pytestmark = pytest.mark.db


async def write(suite, tenant: str, subject: str) -> None:
    event = pb.AuditEvent(event_id=f"evt-{uuid.uuid4().hex}", event_type=evidence_pb2.AUDIT_EVENT_TYPE_API_KEY_CREATED,
                          entity_type=evidence_pb2.AUDIT_ENTITY_TYPE_API_KEY, entity_id="key-cli",
                          action_reason="for the subject", occurred_at=ts(BASE + timedelta(hours=3)),
                          data_subject_id=subject)
    event.after_state.update({"owner": "CLI Subject"})
    meta = (("authorization", f"Bearer {token(tenant, scopes=('evidence.write',), actor_type='SYSTEM')}"),)
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        reply = await pb_grpc.IngestServiceStub(channel).AppendAuditEvents(
            pb.AppendAuditEventsRequest(events=[event]), metadata=meta)
    assert reply.results[0].status == pb.ITEM_STATUS_CREATED


async def test_erase_from_the_cli(cli, suite, writer_tenant, database_url):
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    await write(suite, writer_tenant, subject)
    refused = await cli("erase", subject, "--reason", "DSR-1", tenant=writer_tenant)
    assert refused.code == 2 and "--yes" in refused.err
    result = await cli("--json", "erase", subject, "--reason", "DSR-1", "--yes", tenant=writer_tenant)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["subject_id"] == subject and int(doc["payloads_erased"]) == 2
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM evidence_payloads WHERE tenant_id = %s AND subject_id = %s",
                            (writer_tenant, subject)).fetchone()[0] == 0
    table = await cli("erase", subject, "--reason", "DSR-1", "--yes", tenant=writer_tenant)
    assert table.code == 0 and subject in table.out


async def test_a_held_subject_exits_with_the_hold_named(cli, suite, writer_tenant):
    """The hold is retention's (``retention hold --subject``, migration 0023_erasure's SUBJECT scope):
    it refuses the erasure until it is released."""
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    await write(suite, writer_tenant, subject)
    placed = await cli("--json", "retention", "hold", "--subject", subject, "--reason", "matter 9", tenant=writer_tenant)
    assert placed.code == 0, placed.err
    hold = json.loads(placed.out)
    assert hold["scope"] == "LEGAL_HOLD_SCOPE_SUBJECT" and hold["target_id"] == subject
    result = await cli("erase", subject, "--reason", "DSR-2", "--yes", tenant=writer_tenant)
    assert result.code != 0 and hold["hold_id"] in result.err
    released = await cli("retention", "release", hold["hold_id"], "--reason", "settled", tenant=writer_tenant)
    assert released.code == 0, released.err
    erased = await cli("--json", "erase", subject, "--reason", "DSR-2", "--yes", tenant=writer_tenant)
    assert erased.code == 0 and int(json.loads(erased.out)["payloads_erased"]) == 2, erased.err


async def test_runs_and_exports_after_an_erasure_say_erased(cli, suite, writer_tenant):
    """A run recorded with a data subject (hash format 2), exported, then erased from the CLI: the
    erasure names the export whose artifact went, the replay shows ERASED, the server's
    verification says the content was erased after the export rather than a mismatch."""
    from datetime import datetime, timezone

    from google.protobuf import json_format, struct_pb2

    from aos.evidence.v1 import bundle_pb2, records_pb2
    from aos.export.v1 import export_service_pb2 as export_pb, export_service_pb2_grpc as export_grpc

    subject = f"subj-{uuid.uuid4().hex[:8]}"
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    run = pb.RunInput(run_id=f"run-{uuid.uuid4().hex[:10]}", provider="openai", model="gpt-4o",
                      status=records_pb2.LLM_RUN_STATUS_SUCCEEDED, started_at=ts(start),
                      completed_at=ts(start + timedelta(seconds=1)), data_subject_id=subject)
    step = pb.StepInput(step_type=records_pb2.STEP_TYPE_LLM_CALL, timestamp=ts(start))
    step.input_data.CopyFrom(json_format.ParseDict({"prompt": "CLI Subject's question"}, struct_pb2.Value()))
    run.steps.append(step)
    writer = (("authorization", f"Bearer {token(writer_tenant, scopes=('evidence.write',), actor_type='SYSTEM')}"),)
    reader = (("authorization", f"Bearer {token(writer_tenant, scopes=('exports.create', 'exports.read'))}"),)
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        await pb_grpc.IngestServiceStub(channel).RecordRun(pb.RecordRunRequest(run=run), metadata=writer)
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        made = (await export_grpc.ExportServiceStub(channel).CreateExport(export_pb.CreateExportRequest(
            run_id=run.run_id, bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON),
            metadata=reader)).export

    before = await cli("export", "show", made.export_id, tenant=writer_tenant)
    assert before.code == 0 and "stored" in before.out and "ERASED" not in before.out, before.out + before.err
    erased = await cli("erase", subject, "--reason", "DSR-3", "--yes", tenant=writer_tenant)
    assert erased.code == 0, erased.err
    assert made.export_id in erased.out
    replay = await cli("runs", "replay", run.run_id, "--at-step", "0", tenant=writer_tenant)
    assert replay.code == 0, replay.err
    assert "ERASED (erasure era_" in replay.out and "CLI Subject" not in replay.out
    verified = await cli("export", "verify", made.export_id, tenant=writer_tenant)
    assert verified.code == 0, verified.out + verified.err
    assert "content erased after export (1 payloads" in verified.out and "VALID" in verified.out
    # export show / list say the content was erased, naming the erasure (GetExport / ListExports)
    erasure_id = next(w for w in erased.out.replace("(", " ").replace(")", " ").replace(",", " ").split()
                      if w.startswith("era_"))
    shown = await cli("export", "show", made.export_id, tenant=writer_tenant)
    assert shown.code == 0, shown.err
    assert "ERASED after export (1 payloads" in shown.out and f"{erasure_id} recorded" in shown.out
    listed = await cli("export", "list", "--run", run.run_id, tenant=writer_tenant)
    assert listed.code == 0, listed.err
    assert made.export_id in listed.out and f"ERASED ({erasure_id} recorded)" in " ".join(listed.out.split())
    doc = await cli("--json", "export", "list", "--run", run.run_id, tenant=writer_tenant)
    (export,) = json.loads(doc.out)["exports"]
    assert (export["content_erased"], export["payloads_erased"], export["erasure_ids"]) == (True, 1, [erasure_id])
    assert [(e["erasure_id"], e["basis"]) for e in export["erasures"]] == [(erasure_id, "ERASURE_BASIS_RECORDED")]


async def test_an_untracked_export_says_its_basis(cli, suite, export_in_threads, writer_tenant, monkeypatch):
    """An export rendered without recording whose payloads it carried (what the Export service did
    before migration 0026), made after the subject's payloads: the erasure takes it on basis
    UNTRACKED (docs/ERASURE.md §3c), and export show / list / verify say so, with the count as an
    upper bound ("up to N payloads")."""
    from aos.evidence.v1 import bundle_pb2
    from aos.export.v1 import export_service_pb2 as export_pb, export_service_pb2_grpc as export_grpc
    from services.export import store as export_store
    from tests.e2e.erasure_support import write_subject

    monkeypatch.setenv("COLUMNS", "400")  # rich's tables: one line a row
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    reader = (("authorization", f"Bearer {token(writer_tenant, scopes=('exports.create', 'exports.read'))}"),)
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        correlation = await write_subject(pb_grpc.IngestServiceStub(channel), subject, tenant=writer_tenant)
    with monkeypatch.context() as pre_0026:
        pre_0026.setattr(export_store, "record_payload_subjects", lambda *args, **kwargs: None)
        # An Export service whose heavy work runs in threads of this process (tests/conftest.py's
        # export_in_threads): the patch above does not reach a heavy worker process.
        async with grpc.aio.insecure_channel(export_in_threads) as channel:
            made = (await export_grpc.ExportServiceStub(channel).CreateExport(export_pb.CreateExportRequest(
                bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON,
                audit_slice=export_pb.AuditSlice(correlation_id=correlation)), metadata=reader)).export
    erased = await cli("--json", "erase", subject, "--reason", "DSR-4", "--yes", tenant=writer_tenant)
    assert erased.code == 0, erased.err
    doc = json.loads(erased.out)
    assert made.export_id in doc["exports_erased"]
    erasure_id, count = doc["erasure_id"], int(doc["payloads_erased"])
    shown = await cli("export", "show", made.export_id, tenant=writer_tenant)
    assert shown.code == 0, shown.err
    flat = " ".join(shown.out.split())
    assert f"ERASED after export (up to {count} payloads, erasure {erasure_id} untracked)" in flat, shown.out
    listed = await cli("export", "list", tenant=writer_tenant)
    assert listed.code == 0, listed.err
    row = next(line for line in listed.out.splitlines() if made.export_id in line)
    assert f"ERASED ({erasure_id} untracked)" in row, listed.out
    verified = await cli("export", "verify", made.export_id, tenant=writer_tenant)
    assert verified.code == 0, verified.out + verified.err
    flat = " ".join(verified.out.split())
    assert f"content erased after export (up to {count} payloads; erasure {erasure_id} untracked)" in flat, verified.out
    as_json = await cli("--json", "export", "show", made.export_id, tenant=writer_tenant)
    assert [(e["erasure_id"], e["basis"], int(e["payloads_erased"])) for e in json.loads(as_json.out)["erasures"]] == [
        (erasure_id, "ERASURE_BASIS_UNTRACKED", count)]
