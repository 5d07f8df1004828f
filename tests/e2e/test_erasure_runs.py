"""Erasure beyond audit events (issue #25; docs/ERASURE.md): RecordRun and OTLP steps written in
hash format 2 with a data subject, Logs reads (trace O2, replay O4, system records) marking the
erased payloads ERASED, and an export made before the erasure losing its stored artifact while
its signature, chain and commitments still verify — and the auditor's copy offline."""
from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import grpc
import psycopg
import pytest
from google.protobuf import json_format, struct_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp, trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from psycopg.rows import dict_row

from aos.evidence.v1 import bundle_pb2, records_pb2
from aos.export.v1 import export_service_pb2 as export_pb, export_service_pb2_grpc as export_grpc
from aos.ingest.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc
from aos.logs.v1 import (
    llm_runs_service_pb2 as runs_pb,
    llm_runs_service_pb2_grpc as runs_grpc,
    records_pb2 as logs_records,
    system_logs_service_pb2 as system_pb,
    system_logs_service_pb2_grpc as system_grpc,
)
from aos_recording import dsse, hashing, verify_export
from aos_recording.verify import verify_trace
from aos_runtime.db import Database
from aos_runtime.server import ServiceContext
from services.ingest import otlp as otlp_receiver
from tests.db.sessions import ledger_report
from tests.e2e.support import BASE, error_info, token, ts, violations
from tests.logins import load_demo_scenarios, login_url

pytestmark = pytest.mark.db

TENANT = "tenant-erase-runs"
SECRET = "Erasure Subject Ninety asked about her mortgage at 12 Oak Lane"
PRESENT, ERASED = logs_records.PAYLOAD_STATE_PRESENT, logs_records.PAYLOAD_STATE_ERASED


@pytest.fixture(scope="module")
def tenant(database_url):
    return load_demo_scenarios(database_url, TENANT, base=BASE, keep=lambda s: s.id != "SDSR-PLATFORM-001")


@pytest.fixture()
async def ingest(suite, tenant):
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        yield pb_grpc.IngestServiceStub(channel)


@pytest.fixture()
async def runs(suite):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield runs_grpc.LlmRunsServiceStub(channel)


@pytest.fixture()
async def exports(suite):
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        yield export_grpc.ExportServiceStub(channel)


def producer():
    return (("authorization", f"Bearer {token(TENANT, scopes=('evidence.write',), actor_type='SYSTEM')}"),)


def officer():
    return (("authorization", f"Bearer {token(TENANT, scopes=('evidence.erase',))}"),)


def reader():
    return (("authorization", f"Bearer {token(TENANT, scopes=('logs.read', 'exports.read', 'exports.create'))}"),)


def value(plain) -> struct_pb2.Value:
    return json_format.ParseDict(plain, struct_pb2.Value())


def a_run(subject: str | None, other: str | None = None) -> pb.RunInput:
    """Three steps: the run's subject on steps 0 and 1 (their input/output hold SECRET), step 2
    naming ``other`` (its own subject) or none when ``other`` is None."""
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    run = pb.RunInput(run_id=f"run-{uuid.uuid4().hex[:12]}", provider="openai", model="gpt-4o",
                      status=records_pb2.LLM_RUN_STATUS_SUCCEEDED, input_tokens=10, output_tokens=5)
    run.started_at.CopyFrom(ts(start))
    run.completed_at.CopyFrom(ts(start + timedelta(seconds=3)))
    if subject is not None:
        run.data_subject_id = subject
    for i, step_type in enumerate((records_pb2.STEP_TYPE_INPUT, records_pb2.STEP_TYPE_LLM_CALL,
                                   records_pb2.STEP_TYPE_OUTPUT)):
        step = pb.StepInput(step_type=step_type, tokens=5)
        step.timestamp.CopyFrom(ts(start + timedelta(seconds=i)))
        step.input_data.CopyFrom(value({"prompt": f"{SECRET} #{i}"} if i < 2 else {"note": "other"}))
        step.output_data.CopyFrom(value(f"answer for {SECRET}" if i < 2 else "done"))
        if i == 2 and other is not None:
            step.data_subject_id = other
        run.steps.append(step)
    return run


def content_rows(url: str, subject: str, trace_id: str) -> tuple[list, int]:
    """Rows holding SECRET in the trace's append-only step rows (never) and the subject's payload rows."""
    with psycopg.connect(url) as conn:
        steps = conn.execute("SELECT id FROM aos_trace_steps x WHERE x.tenant_id = %s AND x.trace_id = %s "
                             "AND strpos(x::text, %s) > 0", (TENANT, trace_id, SECRET)).fetchall()
        payloads = conn.execute("SELECT count(*) FROM evidence_payloads x WHERE x.tenant_id = %s AND subject_id = %s "
                                "AND strpos(x::text, %s) > 0", (TENANT, subject, SECRET)).fetchone()[0]
    return steps, payloads


def recomputed(steps) -> list[bytes]:
    """Each v2 step's content hash from its non-payload fields and commitments (docs/ERASURE.md §1)."""
    out = []
    for s in steps:
        fields = {"step_index": s.step_index, "step_type": records_pb2.StepType.Name(s.step_type)
                  .removeprefix("STEP_TYPE_").lower(), "timestamp": s.timestamp.ToDatetime(timezone.utc),
                  "input_data": None, "output_data": None}
        out.append(hashing.step_content_hash_v2(fields, {p.field: p.commitment for p in s.payloads}))
    return out


async def test_a_recorded_runs_steps_are_erasable_and_every_hash_stays(ingest, runs, database_url):
    subject, other = f"subj-{uuid.uuid4().hex[:8]}", f"subj-{uuid.uuid4().hex[:8]}"
    run = a_run(subject, other)
    reply = await ingest.RecordRun(pb.RecordRunRequest(run=run), metadata=producer())
    assert reply.status == pb.ITEM_STATUS_CREATED
    assert reply.trace_content_hash == hashing.trace_content_hash(
        bytes.fromhex(h) for h in reply.step_content_hashes).hex()
    assert content_rows(database_url, subject, run.run_id) == ([], 4)  # 2 steps × (input, output), only in the side table
    # a retry is the same run (the stored salts give the same v2 hashes)
    again = await ingest.RecordRun(pb.RecordRunRequest(run=run), metadata=producer())
    assert again.status == pb.ITEM_STATUS_ALREADY_PRESENT and again.step_content_hashes == reply.step_content_hashes

    before = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=run.run_id), metadata=reader())
    assert [s.hash_version for s in before.steps] == [2, 2, 2]
    assert before.steps[0].input_data.struct_value["prompt"] == f"{SECRET} #0"
    assert [[(p.field, p.state) for p in s.payloads] for s in before.steps] == \
        [[("input_data", PRESENT), ("output_data", PRESENT)]] * 3
    assert [s.content_hash for s in before.steps] == list(reply.step_content_hashes)
    assert [h.hex() for h in recomputed(before.steps)] == list(reply.step_content_hashes)

    erased = await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-90"),
                                           metadata=officer())
    assert erased.payloads_erased == 4
    assert content_rows(database_url, subject, run.run_id) == ([], 0)

    after = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=run.run_id), metadata=reader())
    for s in after.steps[:2]:  # erased: unset (never empty content), the commitment marked ERASED
        assert not s.HasField("input_data") and not s.HasField("output_data")
        assert [(p.state, p.erasure_id) for p in s.payloads] == [(ERASED, erased.erasure_id)] * 2
    assert after.steps[2] == before.steps[2]  # the other subject's step, untouched
    assert [s.content_hash for s in after.steps] == [s.content_hash for s in before.steps]
    assert [p.commitment for s in after.steps for p in s.payloads] == \
        [p.commitment for s in before.steps for p in s.payloads]
    # the hashes still verify: each step's from its commitments, the trace's from the steps (SPEC §5)
    assert [h.hex() for h in recomputed(after.steps)] == list(reply.step_content_hashes)
    assert after.trace.content_hash == reply.trace_content_hash
    assert ledger_report(database_url, TENANT).ok

    # the replay at a step (O4) says ERASED the same way
    replay = await runs.GetLlmRunReplay(runs_pb.GetLlmRunReplayRequest(run_id=run.run_id, at_step=1),
                                        metadata=reader())
    assert not replay.state.step.HasField("input_data")
    assert [p.state for p in replay.state.step.payloads] == [ERASED, ERASED]
    assert replay.state.steps_hash == hashing.trace_content_hash(
        bytes.fromhex(h) for h in reply.step_content_hashes[:2]).hex()
    window_steps = [e.step for e in replay.replay.events if e.WhichOneof("payload") == "step"]
    assert window_steps and all(not s.HasField("input_data") for s in window_steps if s.step_index < 2)

    # erased evidence is never re-written: a retry now conflicts
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.RecordRun(pb.RecordRunRequest(run=run), metadata=producer())
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_a_step_with_a_subject_takes_no_claimed_hash(ingest):
    run = a_run(f"subj-{uuid.uuid4().hex[:8]}")
    run.steps[0].content_hash = "0" * 64
    run.trace_content_hash = "0" * 64
    run.steps[1].data_subject_id = ""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.RecordRun(pb.RecordRunRequest(run=run), metadata=producer())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(err.value)) == {"run.steps[0].content_hash", "run.trace_content_hash",
                                          "run.steps[1].data_subject_id"}


async def test_a_run_without_a_subject_stays_format_1(ingest, runs):
    run = a_run(None)
    reply = await ingest.RecordRun(pb.RecordRunRequest(run=run), metadata=producer())
    trace = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=run.run_id), metadata=reader())
    assert [s.hash_version for s in trace.steps] == [1, 1, 1] and not any(s.payloads for s in trace.steps)
    assert reply.step_content_hashes[0] == hashing.step_content_hash({
        "step_index": 0, "step_type": "input", "timestamp": run.steps[0].timestamp.ToDatetime(timezone.utc),
        "input_data": {"prompt": f"{SECRET} #0"}, "output_data": f"answer for {SECRET}"}).hex()


def _attr(key: str, text: str) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=text))


def otlp_trace(subject_attribute: str, subject: str) -> tuple[otlp.ExportTraceServiceRequest, str]:
    trace_id = uuid.uuid4().bytes
    start = int((datetime.now(timezone.utc) - timedelta(minutes=30)).timestamp() * 1e9)
    span = trace_pb2.Span(trace_id=trace_id, span_id=uuid.uuid4().bytes[:8], name="chat gpt-4o",
                          start_time_unix_nano=start, end_time_unix_nano=start + 2_000_000_000,
                          attributes=[_attr("gen_ai.operation.name", "chat"), _attr("gen_ai.request.model", "gpt-4o"),
                                      _attr("gen_ai.provider.name", "openai"), _attr(subject_attribute, subject),
                                      _attr("gen_ai.input.messages", json.dumps([{"role": "user",
                                                                                  "content": SECRET}])),
                                      _attr("gen_ai.output.messages", json.dumps([{"role": "assistant",
                                                                                   "content": f"re {SECRET}"}]))])
    request = otlp.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        scope_spans=[trace_pb2.ScopeSpans(spans=[span])])])
    return request, f"otel-{trace_id.hex()}"


@pytest.mark.parametrize("attribute", ["enduser.pseudo.id", "enduser.id", "user.id"])
async def test_otlp_spans_with_an_end_user_become_erasable_steps(attribute, suite, ingest, runs, database_url):
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    request, run_id = otlp_trace(attribute, subject)
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        traces = otlp_grpc.TraceServiceStub(channel)
        answer = await traces.Export(request, metadata=producer())
        assert not answer.partial_success.rejected_spans, answer
        retried = await traces.Export(request, metadata=producer())  # an exporter's retry: accepted, same run
        assert not retried.partial_success.rejected_spans, retried
    trace = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=run_id), metadata=reader())
    (step,) = trace.steps
    assert step.hash_version == 2 and [p.state for p in step.payloads] == [PRESENT, PRESENT]
    assert SECRET in json_format.MessageToJson(step.input_data)
    # the content stays out of the (unhashed, not erasable) metadata; the subject's id is kept
    attributes = json_format.MessageToDict(step.metadata)["attributes"]
    assert "gen_ai.input.messages" not in attributes and "gen_ai.output.messages" not in attributes
    assert attributes[attribute] == subject
    steps, held = content_rows(database_url, subject, run_id)
    assert steps == [] and held == 2

    erased = await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-91"),
                                           metadata=officer())
    assert erased.payloads_erased == 2 and content_rows(database_url, subject, run_id) == ([], 0)
    after = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=run_id), metadata=reader())
    assert not after.steps[0].HasField("input_data") and [p.state for p in after.steps[0].payloads] == [ERASED] * 2
    assert after.steps[0].content_hash == step.content_hash and recomputed(after.steps)[0].hex() == step.content_hash
    assert after.trace.content_hash == trace.trace.content_hash


async def test_system_records_read_erased_in_lists_and_the_replay(suite, ingest, runs, database_url):
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    run = a_run(subject)
    await ingest.RecordRun(pb.RecordRunRequest(run=run), metadata=producer())
    component = f"mailer-{uuid.uuid4().hex[:6]}"
    record = pb.SystemRecordInput(record_id=f"sys-{uuid.uuid4().hex}", component=component,
                                  event_type=records_pb2.SYSTEM_EVENT_TYPE_ERROR,
                                  severity=records_pb2.SYSTEM_SEVERITY_ERROR, summary=f"bounce for {SECRET}",
                                  run_id=run.run_id, data_subject_id=subject)
    record.occurred_at.CopyFrom(run.steps[1].timestamp)
    record.details.update({"to": SECRET})
    written = await ingest.AppendSystemRecords(pb.AppendSystemRecordsRequest(records=[record]), metadata=producer())
    assert written.results[0].status == pb.ITEM_STATUS_CREATED
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        system = system_grpc.SystemLogsServiceStub(channel)

        async def listed():
            page = await system.ListSystemRecords(system_pb.ListSystemRecordsRequest(component=component),
                                                  metadata=reader())
            (found,) = page.records
            return found

        before = await listed()
        assert before.hash_version == 2 and before.summary == f"bounce for {SECRET}"
        assert [(p.field, p.state) for p in before.payloads] == [("details", PRESENT), ("summary", PRESENT)]
        erased = await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-92"),
                                               metadata=officer())
        assert erased.payloads_erased == 8  # 3 steps × (input, output), the record's summary and details
        after = await listed()
        run_events = await system.ListSystemRunEvents(system_pb.ListSystemRunEventsRequest(run_id=run.run_id),
                                                      metadata=reader())
    assert after.summary == "" and not after.HasField("details")
    assert [(p.field, p.state, p.erasure_id) for p in after.payloads] == [
        ("details", ERASED, erased.erasure_id), ("summary", ERASED, erased.erasure_id)]
    assert after.content_hash == before.content_hash and after.metadata.checksum == before.metadata.checksum
    (event,) = [r for r in run_events.records if r.id == record.record_id]
    assert [p.state for p in event.payloads] == [ERASED, ERASED]
    replay = await runs.GetLlmRunReplay(runs_pb.GetLlmRunReplayRequest(run_id=run.run_id, window_seconds=600),
                                        metadata=reader())
    (in_window,) = [e.system_record for e in replay.replay.events
                    if e.WhichOneof("payload") == "system_record" and e.system_record.id == record.record_id]
    assert [p.state for p in in_window.payloads] == [ERASED, ERASED] and in_window.summary == ""
    assert ledger_report(database_url, TENANT).ok


async def _download(exports, export_id: str) -> bytes:
    return b"".join([m.data async for m in exports.DownloadExport(
        export_pb.DownloadExportRequest(export_id=export_id), metadata=reader())])


async def test_an_export_made_before_loses_its_artifact_and_says_so(ingest, exports, database_url):
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    run, untouched = a_run(subject), a_run(None)
    for r in (run, untouched):
        await ingest.RecordRun(pb.RecordRunRequest(run=r), metadata=producer())

    async def export_of(run_id: str):
        return (await exports.CreateExport(export_pb.CreateExportRequest(
            run_id=run_id, bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON),
            metadata=reader())).export

    made, other = await export_of(run.run_id), await export_of(untouched.run_id)
    copy = await _download(exports, made.export_id)  # the auditor's copy: 3 steps × (input, output) of the subject
    assert SECRET.encode() in copy
    keys = [dsse.PublicKey.from_raw(k.public_key) for k in (await exports.ListSigningKeys(
        export_pb.ListSigningKeysRequest(), metadata=reader())).keys if k.key_id == made.signing_key_id]
    assert verify_export.verify(copy, made.dsse_envelope, keys).ok
    first = await exports.VerifyExport(export_pb.VerifyExportRequest(export_id=made.export_id), metadata=reader())
    assert first.valid and first.payloads_erased == 0
    shown = (await exports.GetExport(export_pb.GetExportRequest(export_id=made.export_id), metadata=reader())).export
    assert not shown.content_erased and shown.payloads_erased == 0 and list(shown.erasure_ids) == []

    erased = await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-93"),
                                           metadata=officer())
    assert list(erased.exports_erased) == [made.export_id]
    with psycopg.connect(database_url) as conn:
        chunks = conn.execute("SELECT export_id, count(*) FROM log_export_artifacts WHERE tenant_id = %s "
                              "AND export_id = ANY(%s) GROUP BY export_id",
                              (TENANT, [made.export_id, other.export_id])).fetchall()
        # (the other run is format 1: its steps' text is evidence no erasure reaches, by design)
        held = conn.execute("SELECT count(*) FROM log_export_artifacts x WHERE x.tenant_id = %s AND x.export_id <> %s "
                            "AND strpos(convert_from(x.data, 'UTF8'), %s) > 0",
                            (TENANT, other.export_id, SECRET)).fetchone()[0]
        # the artifacts stay append-only for anyone else: no tombstone, no DELETE
        with pytest.raises(psycopg.DatabaseError) as refused:
            conn.execute("DELETE FROM log_export_artifacts WHERE tenant_id = %s AND export_id = %s",
                         (TENANT, other.export_id))
        assert refused.value.sqlstate == "AOS01"
    assert [e for e, _ in chunks] == [other.export_id] and held == 0

    # GetExport and ListExports say so too, from the tombstones (the other export: stored)
    shown = (await exports.GetExport(export_pb.GetExportRequest(export_id=made.export_id), metadata=reader())).export
    assert shown.content_erased and shown.payloads_erased == 6 and list(shown.erasure_ids) == [erased.erasure_id]
    # with its basis: the export recorded carrying the subject's payloads (docs/ERASURE.md §3a)
    (tombstone,) = shown.erasures
    assert (tombstone.erasure_id, tombstone.basis, tombstone.payloads_erased) == (
        erased.erasure_id, bundle_pb2.ERASURE_BASIS_RECORDED, 6) and tombstone.HasField("erased_at")
    assert shown.checksum == made.checksum and shown.chain_hash == made.chain_hash  # the signed record stays
    listed = {e.export_id: e for e in (await exports.ListExports(export_pb.ListExportsRequest(page_size=1000),
                                                                 metadata=reader())).exports}
    assert (listed[made.export_id].content_erased, listed[made.export_id].payloads_erased,
            list(listed[made.export_id].erasure_ids)) == (True, 6, [erased.erasure_id])
    assert list(listed[made.export_id].erasures) == [tombstone]
    assert not listed[other.export_id].content_erased and listed[other.export_id].payloads_erased == 0
    assert not listed[other.export_id].erasures
    (by_run,) = (await exports.ListExports(export_pb.ListExportsRequest(run_id=run.run_id),
                                           metadata=reader())).exports
    assert by_run.content_erased and list(by_run.erasure_ids) == [erased.erasure_id]
    assert list(by_run.erasures) == [tombstone]

    # the download answers honestly; the other export is untouched
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _download(exports, made.export_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(err.value)
    assert info.reason == "CONTENT_ERASED" and info.metadata["payloads_erased"] == "6"
    assert info.metadata["erasure_bases"] == "RECORDED"
    assert "content erased after export (6 payloads)" in err.value.details()
    assert await _download(exports, other.export_id)

    # VerifyExport: the earlier recorded VALID is not reused; signature, chain and commitments verify,
    # the content is reported erased — neither a false mismatch nor a VALID of bytes it no longer has
    now = await exports.VerifyExport(export_pb.VerifyExportRequest(export_id=made.export_id), metadata=reader())
    assert not now.recorded and now.payloads_erased == 6 and list(now.erasure_ids) == [erased.erasure_id]
    checks = {c.name: c for c in now.checks}
    assert "checksum" not in checks and "reproducible" not in checks
    assert checks["artifact"].passed and "content erased after export (6 payloads" in checks["artifact"].detail
    assert "basis RECORDED" in checks["artifact"].detail and list(now.erasures) == [tombstone]
    assert all(checks[n].passed for n in ("manifest", "signature", "content_hash", "export_chain", "records"))
    assert now.valid
    again = await exports.VerifyExport(export_pb.VerifyExportRequest(export_id=made.export_id), metadata=reader())
    assert again.recorded and again.payloads_erased == 6 and list(again.erasures) == [tombstone]
    untouched_check = await exports.VerifyExport(export_pb.VerifyExportRequest(export_id=other.export_id,
                                                                               recompute=True), metadata=reader())
    assert untouched_check.valid and untouched_check.payloads_erased == 0
    assert {c.name for c in untouched_check.checks} >= {"checksum", "reproducible"}

    # the auditor's copy: still VALID offline, and it opens what the erasure took from the server
    assert verify_export.verify(copy, made.dsse_envelope, keys).ok
    steps = json.loads(copy)["trace"]["steps"]
    assert all(hashing.openings_match(s, hashing.STEP_PAYLOAD_FIELDS) for s in steps)
    assert ledger_report(database_url, TENANT).ok


async def test_rest_through_the_gateway(suite, tenant, database_url):
    import httpx

    from gateway import backend_addresses, create_app

    subject = f"subj-{uuid.uuid4().hex[:8]}"
    run = a_run(subject)
    app = create_app(backend_addresses(suite))

    def auth(*scopes: str, actor_type: str = "HUMAN") -> dict[str, str]:
        return {"Authorization": f"Bearer {token(TENANT, scopes=scopes, actor_type=actor_type)}"}

    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        recorded = await http.post("/api/v1/ingest/runs", json=json_format.MessageToDict(pb.RecordRunRequest(run=run)),
                                   headers=auth("evidence.write", actor_type="SYSTEM"))
        assert recorded.status_code == 200, recorded.text
        trace_url = f"/api/v1/logs/llm-runs/{run.run_id}/trace"
        before = (await http.get(trace_url, headers=auth("logs.read"))).json()
        made = await http.post(f"/api/v1/logs/llm-runs/{run.run_id}/export", json={
            "bundleType": "BUNDLE_TYPE_EVIDENCE", "format": "EXPORT_FORMAT_JSON"},
            headers=auth("exports.create", "exports.read"))
        assert made.status_code == 200, made.text
        export_id = made.json()["export"]["export_id"]
        erased = await http.post("/api/v1/ingest/erasures", json={"subjectId": subject, "reason": "DSR-94"},
                                 headers=auth("evidence.erase"))
        after = (await http.get(trace_url, headers=auth("logs.read"))).json()
        download = await http.get(f"/api/v1/logs/exports/{export_id}:download", headers=auth("exports.read"))
        verified = await http.post(f"/api/v1/logs/exports/{export_id}:verify", json={"recompute": True},
                                   headers=auth("exports.read"))
        shown = await http.get(f"/api/v1/logs/exports/{export_id}", headers=auth("exports.read"))
        listed = await http.get("/api/v1/logs/exports", params={"run_id": run.run_id}, headers=auth("exports.read"))
    assert erased.status_code == 200 and erased.json()["exports_erased"] == [export_id]
    assert [s["hash_version"] for s in before["steps"]] == [2, 2, 2]
    assert before["steps"][0]["input_data"] == {"prompt": f"{SECRET} #0"}
    for b, a in zip(before["steps"], after["steps"], strict=True):
        assert "input_data" not in a and "output_data" not in a and a["content_hash"] == b["content_hash"]
        assert [p["state"] for p in a["payloads"]] == ["PAYLOAD_STATE_ERASED"] * 2
        assert [p["commitment"] for p in a["payloads"]] == [p["commitment"] for p in b["payloads"]]
    assert download.status_code == 400 and "CONTENT_ERASED" in download.text, download.text
    assert verified.status_code == 200, verified.text
    answer = verified.json()
    assert answer["valid"] is True and answer["payloads_erased"] == 6
    erasure_id = erased.json()["erasure_id"]
    # the erasure's basis, in the gateway's JSON (proto field and enum names)
    (basis,) = answer["erasures"]
    assert (basis["erasure_id"], basis["basis"], basis["payloads_erased"]) == (erasure_id, "ERASURE_BASIS_RECORDED", 6)
    assert shown.status_code == 200 and listed.status_code == 200, (shown.text, listed.text)
    for export in (shown.json()["export"], *listed.json()["exports"]):
        assert export["export_id"] == export_id
        assert (export["content_erased"], export["payloads_erased"], export["erasure_ids"]) == (True, 6, [erasure_id])
        assert export["erasures"] == [basis]
    assert ledger_report(database_url, TENANT).ok


def staged_rows(url: str, trace_hex: str) -> list[dict]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM otlp_staged_spans WHERE tenant_id = %s AND otel_trace_id = %s",
                            (TENANT, trace_hex)).fetchall()


def content_anywhere(url: str, needle: str) -> list[str]:
    """The tables (as the admin, no row security) whose rows of the tenant hold ``needle`` as text,
    or as bytes (a bytea column reads as hex: a staged span's protobuf bytes)."""
    hits = []
    with psycopg.connect(url) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition")]
        for table in tables:
            if conn.execute(f"SELECT EXISTS (SELECT FROM {table} x WHERE x.tenant_id = %s "
                            "AND (strpos(x::text, %s) > 0 OR strpos(x::text, %s) > 0))",
                            (TENANT, needle, needle.encode().hex())).fetchone()[0]:
                hits.append(table)
    return hits


@pytest.fixture()
async def sealer(database_url):
    """A TraceReceiver as the Ingest server's sealer has it (the suite's own waits its 30 s window)."""
    db = Database(login_url(database_url, "ingest"), service="ingest", pool_size=2)
    yield otlp_receiver.TraceReceiver(ServiceContext(db=db, page_tokens=cast(Any, None)))
    await db.close()


def kept_span(trace_id: bytes, n: int, subject: str, start: int, secret: str = SECRET) -> trace_pb2.Span:
    """A child span (its root never sent: the trace stays kept) naming ``subject``, ``secret`` in its
    content attributes and in an event."""
    return trace_pb2.Span(
        trace_id=trace_id, span_id=bytes([n]) * 8, parent_span_id=b"\x01" * 8, name=f"chat {n}",
        start_time_unix_nano=start + n * 1_000_000_000, end_time_unix_nano=start + n * 1_000_000_000 + 500_000_000,
        attributes=[_attr("gen_ai.operation.name", "chat"), _attr("gen_ai.request.model", "gpt-4o"),
                    _attr("gen_ai.provider.name", "openai"), _attr("enduser.pseudo.id", subject),
                    _attr("gen_ai.input.messages", json.dumps([{"role": "user", "content": f"{secret} {n}"}])),
                    _attr("gen_ai.output.messages", json.dumps([{"role": "assistant", "content": f"re {secret}"}]))],
        events=[trace_pb2.Span.Event(name="gen_ai.user.message", time_unix_nano=start,
                                     attributes=[_attr("content", secret)])])


async def test_spans_kept_unsealed_are_reached_by_the_erasure_and_sealed_erased(
        suite, ingest, runs, sealer, database_url):
    """docs/ERASURE.md §3b: the erasure takes the kept spans' content at once; the seal after it
    still makes the run (the Export was acknowledged) with its steps' payloads born ERASED."""
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    trace_id = uuid.uuid4().bytes
    run_id = f"otel-{trace_id.hex()}"
    start = int((datetime.now(timezone.utc) - timedelta(minutes=30)).timestamp() * 1e9)
    secret = f"{SECRET} {uuid.uuid4().hex}"  # this test's own: other tests leave format-1 copies of SECRET
    spans = [kept_span(trace_id, n, subject, start, secret) for n in (2, 3)]
    request = otlp.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        scope_spans=[trace_pb2.ScopeSpans(spans=spans)])])
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        traces = otlp_grpc.TraceServiceStub(channel)
        answer = await traces.Export(request, metadata=producer())
        assert not answer.partial_success.rejected_spans, answer
        kept = staged_rows(database_url, trace_id.hex())
        assert [r["subject_id"] for r in kept] == [subject] * 2
        assert all(secret.encode() in bytes(r["content"]) and secret.encode() not in bytes(r["span"]) for r in kept)
        assert content_anywhere(database_url, secret) == ["otlp_staged_spans"]  # the search finds bytes too

        erased = await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-95"),
                                               metadata=officer())
        assert erased.payloads_erased == 0  # nothing sealed yet: no payload row of the subject
        kept = staged_rows(database_url, trace_id.hex())
        assert [(r["content"], r["erasure_id"]) for r in kept] == [(None, erased.erasure_id)] * 2
        assert content_anywhere(database_url, secret) == []
        # An exporter's retry after the erasure: kept as it was (erased), not brought back.
        retried = await traces.Export(request, metadata=producer())
        assert not retried.partial_success.rejected_spans, retried
        assert [r["content"] for r in staged_rows(database_url, trace_id.hex())] == [None, None]

    now = datetime.now(timezone.utc)
    assert await sealer.seal_quiet(now + timedelta(seconds=sealer.quiet_s + 1)) >= 1
    assert staged_rows(database_url, trace_id.hex()) == []
    trace = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=run_id), metadata=reader())
    assert len(trace.steps) == 2
    for step in trace.steps:
        assert step.hash_version == 2 and not step.HasField("input_data") and not step.HasField("output_data")
        assert [(p.state, p.erasure_id) for p in step.payloads] == [(ERASED, erased.erasure_id)] * 2
    assert [s.content_hash for s in trace.steps] == [h.hex() for h in recomputed(trace.steps)]
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        stored = conn.execute("SELECT * FROM aos_traces WHERE tenant_id = %s AND trace_id = %s",
                              (TENANT, trace.trace.trace_id)).fetchone()
        rows = conn.execute("SELECT * FROM aos_trace_steps WHERE tenant_id = %s AND trace_id = %s "
                            "ORDER BY step_index", (TENANT, trace.trace.trace_id)).fetchall()
        payloads = conn.execute("SELECT count(*) AS n FROM evidence_payloads WHERE tenant_id = %s AND record_id LIKE %s",
                                (TENANT, f"{trace.trace.trace_id}/%")).fetchone()["n"]
    assert verify_trace(stored, rows) == [] and payloads == 0
    # A retry after the seal: erased evidence is never re-written (docs/ERASURE.md §2), refused in the answer.
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        late = await otlp_grpc.TraceServiceStub(channel).Export(request, metadata=producer())
    assert late.partial_success.rejected_spans == 2 and "already recorded" in late.partial_success.error_message
    assert content_anywhere(database_url, secret) == []
    assert ledger_report(database_url, TENANT).ok


async def test_a_kept_span_of_another_subject_is_sealed_with_its_content(suite, ingest, runs, database_url):
    """The erasure reaches its subject's kept spans only; sealed by the root span's arrival (the
    other path), a resend of the erased span with the root does not bring its content back."""
    subject, other = f"subj-{uuid.uuid4().hex[:8]}", f"subj-{uuid.uuid4().hex[:8]}"
    trace_id = uuid.uuid4().bytes
    start = int((datetime.now(timezone.utc) - timedelta(minutes=30)).timestamp() * 1e9)
    first, second = kept_span(trace_id, 2, subject, start), kept_span(trace_id, 3, other, start)
    root = trace_pb2.Span(trace_id=trace_id, span_id=b"\x01" * 8, name="invoke_agent", start_time_unix_nano=start,
                          end_time_unix_nano=start + 5_000_000_000,
                          attributes=[_attr("gen_ai.operation.name", "invoke_agent")])

    def request(*spans):
        return otlp.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
            scope_spans=[trace_pb2.ScopeSpans(spans=list(spans))])])

    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        traces = otlp_grpc.TraceServiceStub(channel)
        assert not (await traces.Export(request(first, second), metadata=producer())).partial_success.rejected_spans
        erased = await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-96"),
                                               metadata=officer())
        sealed = await traces.Export(request(root, first), metadata=producer())
        assert not sealed.partial_success.rejected_spans, sealed
    assert staged_rows(database_url, trace_id.hex()) == []
    trace = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=f"otel-{trace_id.hex()}"),
                                      metadata=reader())
    assert [[(p.state, p.erasure_id) for p in s.payloads] for s in trace.steps] == [
        [], [(ERASED, erased.erasure_id)] * 2, [(PRESENT, "")] * 2]
    assert SECRET in json_format.MessageToJson(trace.steps[2].input_data)
    assert f"{SECRET} 2" not in json_format.MessageToJson(trace)


async def test_the_erasure_waits_for_a_seal_in_progress(ingest, database_url):
    """A seal holds the tenant's run-recording lock from before it reads the kept spans to its
    commit; the erasure takes it too, so it never runs between a seal's read and its commit
    (which would seal content the erasure had just marked). Without the lock it would not wait."""
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('aos_ingest_runs:' || %s, 0))", (TENANT,))
        erasure = asyncio.ensure_future(ingest.EraseDataSubject(
            pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-97"), metadata=officer()))
        await asyncio.sleep(1.0)
        assert not erasure.done()  # waiting for the "seal"
        conn.commit()
    assert (await asyncio.wait_for(erasure, 30)).erasure_id
