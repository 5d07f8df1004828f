"""ExportService end to end: every scope × bundle type × format through a real server,
checked byte for byte, offline, and against tampering."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import zipfile
from datetime import datetime, timedelta, timezone

import grpc
import psycopg
import pytest

from aos.evidence.v1 import bundle_pb2, evidence_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_recording import dsse, hashing, scenarios, verify_export
from aos_recording.writers import Producer
from aos_runtime.service_main import build_server
from services.export import server as export_server
from tests.e2e.support import BASE, auth, settings, ts, violations
from tests.logins import load_demo_scenarios, login_url

pytestmark = pytest.mark.db
TENANT = "tenant-ex"
RUN = f"{TENANT}.run-support-103"           # a trace with a violation at step 3
INCIDENT = f"{TENANT}.inc-pii-7"           # an incident of a run, with a proposal
BUNDLES = ("EVIDENCE", "SOC2", "EXECUTIVE")
FORMATS = ("JSON", "CSV", "PDF", "ZIP")
SCOPES = ("run", "incident", "audit", "system")


@pytest.fixture(scope="module")
def ex_data(database_url):
    load_demo_scenarios(database_url, TENANT, base=BASE)


@pytest.fixture
async def stub(suite, ex_data):
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        yield pb_grpc.ExportServiceStub(channel)


def request(scope: str, bundle: str, fmt: str, **kw) -> pb.CreateExportRequest:
    subject = {"run": {"run_id": kw.pop("run_id", RUN)}, "incident": {"incident_id": INCIDENT},
               # Entries up to the demo's base time: the exports' own EvidenceExported entries stay out.
               "audit": {"audit_slice": pb.AuditSlice(created_before=ts(BASE + timedelta(hours=1)))},
               "system": {"system_slice": pb.SystemSlice(created_before=ts(BASE + timedelta(hours=1)))}}[scope]
    return pb.CreateExportRequest(bundle_type=bundle_pb2.BundleType.Value(f"BUNDLE_TYPE_{bundle}"),
                                  format=bundle_pb2.ExportFormat.Value(f"EXPORT_FORMAT_{fmt}"), **subject, **kw)


async def download(stub, export_id: str, tenant: str = TENANT) -> tuple[bytes, list[pb.DownloadExportResponse]]:
    messages = [m async for m in stub.DownloadExport(pb.DownloadExportRequest(export_id=export_id),
                                                      metadata=auth(tenant))]
    return b"".join(m.data for m in messages), messages


async def keys_file(stub, tmp_path):
    keys = await stub.ListSigningKeys(pb.ListSigningKeysRequest(), metadata=auth(TENANT))
    doc = dsse.keys_document(dsse.PublicKey.from_raw(k.public_key) for k in keys.keys)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(doc))
    return path


CASES = [(s, b, f) for s in SCOPES for b in BUNDLES for f in FORMATS if not (f == "CSV" and s in ("run", "incident"))]


@pytest.mark.parametrize("scope, bundle, fmt", CASES)
async def test_every_scope_bundle_and_format(stub, tmp_path, scope, bundle, fmt):
    created = (await stub.CreateExport(request(scope, bundle, fmt), metadata=auth(TENANT))).export
    assert (bundle_pb2.BundleType.Name(created.bundle_type), bundle_pb2.ExportFormat.Name(created.format)) == (
        f"BUNDLE_TYPE_{bundle}", f"EXPORT_FORMAT_{fmt}")
    data, messages = await download(stub, created.export_id)
    assert all(len(m.data) <= 1024 * 1024 for m in messages)
    assert (len(data), hashing.sha256(data).hex()) == (created.size_bytes, created.checksum)
    assert messages[0].content_type == created.content_type and messages[0].checksum == created.checksum
    manifest = json.loads(created.manifest)
    assert (manifest["checksum"], manifest["size"], manifest["export_id"]) == (created.checksum, len(data),
                                                                               created.export_id)
    _looks_like(fmt, data, bundle)
    # Verified by the service, and offline with nothing but the files and the public keys.
    verdict = await stub.VerifyExport(pb.VerifyExportRequest(export_id=created.export_id), metadata=auth(TENANT))
    assert verdict.valid, [(c.name, c.detail) for c in verdict.checks if not c.passed]
    assert {c.name for c in verdict.checks} == {"checksum", "manifest", "signature", "content_hash", "export_chain",
                                                "reproducible"}
    assert manifest["signed_at"] == manifest["created_at"] and manifest["signed_by"] == created.signing_key_id
    _covers(manifest, data, fmt, scope, bundle)
    (tmp_path / "artifact").write_bytes(data)
    (tmp_path / "export.dsse.json").write_text(created.dsse_envelope)
    args = [str(tmp_path / "artifact"), "--envelope", str(tmp_path / "export.dsse.json"),
            "--keys", str(await keys_file(stub, tmp_path))]
    assert verify_export.main(args) == verify_export.Verdict.UNTRUSTED_KEY.exit_code   # nothing pinned
    assert verify_export.main(args + ["--key", created.signing_key_id]) == 0


def _covers(manifest: dict, data: bytes, fmt: str, scope: str, bundle: str) -> None:
    """The signed manifest states the entries the export covers, per record type."""
    contents = manifest["contents"]
    if scope == "audit":
        (kind,) = contents
        assert kind == "audit_entry" and contents[kind]["count"] == manifest["records"] > 0
        assert contents[kind]["first_seq"] <= contents[kind]["last_seq"]
        assert "contiguous" not in contents[kind]          # a filtered slice may have gaps
        if fmt == "JSON" and bundle != "EXECUTIVE":
            records = json.loads(data)["records"]
            assert (records[0]["seq"], records[-1]["seq"]) == (contents[kind]["first_seq"], contents[kind]["last_seq"])
    elif scope == "system":
        assert contents == {"system_record": {"count": manifest["records"]}}
    else:
        assert {"audit_entry", "trace_step"} <= set(contents) if bundle != "EXECUTIVE" else "audit_entry" in contents
        if bundle != "EXECUTIVE":
            assert sum(c["count"] for c in contents.values()) == manifest["records"]


def _looks_like(fmt: str, data: bytes, bundle: str) -> None:
    if fmt == "JSON":
        assert json.loads(data)["bundle_type"] == bundle
        assert hashing.canonical_json(json.loads(data)) == data  # RFC 8785 bytes
    elif fmt == "CSV":
        rows = list(csv.reader(io.StringIO(data.decode())))
        assert rows[0][0] in ("seq", "id", "group")
    elif fmt == "PDF":
        assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    else:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        assert {"evidence.json", "report.pdf", "package-manifest.json", "package-manifest.dsse.json",
                "SHA256SUMS"} <= set(names)


# --- reproducibility --------------------------------------------------------------

@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("fmt", ["JSON", "PDF", "ZIP", "CSV"])
async def test_same_request_same_bytes(stub, scope, fmt):
    if fmt == "CSV" and scope in ("run", "incident"):
        pytest.skip("CSV is for slices")
    first = (await stub.CreateExport(request(scope, "SOC2", fmt), metadata=auth(TENANT))).export
    second = (await stub.CreateExport(request(scope, "SOC2", fmt), metadata=auth(TENANT))).export
    assert first.export_id != second.export_id and first.seq < second.seq
    assert first.checksum == second.checksum
    assert (await download(stub, first.export_id))[0] == (await download(stub, second.export_id))[0]


# --- the chain, the ledger, idempotency ---------------------------------------------

async def test_each_export_is_chained_and_recorded_in_the_ledger(stub, suite):
    from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb, audit_ledger_service_pb2_grpc as audit_grpc
    one = (await stub.CreateExport(request("run", "EVIDENCE", "JSON"), metadata=auth(TENANT))).export
    two = (await stub.CreateExport(request("incident", "EVIDENCE", "PDF"), metadata=auth(TENANT))).export
    assert two.seq == one.seq + 1 and two.prev_hash == one.chain_hash
    assert two.chain_hash == hashing.chain_hash(bytes.fromhex(two.prev_hash), hashing.manifest_hash(
        json.loads(two.manifest))).hex()
    manifest = json.loads(two.manifest)
    assert manifest["previous_export_chain_hash"] == one.chain_hash
    assert manifest["ledger_checkpoint"]["seq"] >= 1 and manifest["redaction"]["profile"] == "aos-default-v2"
    assert (two.requested_by_type, two.requested_by_id) == (evidence_pb2.ACTOR_TYPE_HUMAN, "user-e2e")
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        access = await audit_grpc.AuditLedgerServiceStub(channel).ListAccessEvents(
            audit_pb.ListAccessEventsRequest(page_size=1000), metadata=auth(TENANT))
    recorded = {e.entity_id: e for e in access.entries}
    assert recorded[two.export_id].event_type == evidence_pb2.AUDIT_EVENT_TYPE_EVIDENCE_EXPORTED
    assert recorded[two.export_id].correlation_id == INCIDENT
    assert recorded[one.export_id].correlation_id == RUN


async def test_idempotency_key(stub):
    req = request("run", "EXECUTIVE", "PDF", idempotency_key="ticket-4411-debrief")
    first = (await stub.CreateExport(req, metadata=auth(TENANT))).export
    again = (await stub.CreateExport(req, metadata=auth(TENANT))).export
    assert again == first
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateExport(request("run", "EVIDENCE", "PDF", idempotency_key="ticket-4411-debrief"),
                                metadata=auth(TENANT))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_idempotency_key_under_concurrency(stub):
    import asyncio
    req = request("audit", "EVIDENCE", "JSON", idempotency_key="nightly-2026-11-01")
    results = await asyncio.gather(*[stub.CreateExport(req, metadata=auth(TENANT)) for _ in range(6)])
    assert len({r.export.export_id for r in results}) == 1


# --- redaction ----------------------------------------------------------------------

SECRET_TENANT = "tenant-secrets"
SECRETS = {"openai": "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1L2", "email": "jane.doe@example.com",
           "card": "4111 1111 1111 1111", "jwt": "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiJ1c2VyLTEifQ." + "c2lnbmF0dXJl"}


@pytest.fixture(scope="module")
def secrets_data(database_url):
    producer = Producer(login_url(database_url, "producer"))
    story = scenarios.Scenario("SDSR-SECRETS", "", [
        {"trace": {"id": "trace-leak", "run": "run-leak", "agent": "agent-x", "at": "-1h", "steps": [
            {"type": "input", "input": {"prompt": f"mail {SECRETS['email']} the card {SECRETS['card']}"}},
            {"type": "tool_call", "input": {"openai_api_key": SECRETS["openai"], "tool": "send"},
             "output": {"header": f"Authorization: Bearer {SECRETS['jwt']}", "epoch_ms": 1732492800000}}]}},
        {"llm_run": {"run": "run-leak", "trace": "trace-leak", "provider": "openai", "model": "gpt-4o", "at": "-1h"}},
        {"audit": {"event": "AccessDenied", "entity": "ACTOR", "entity_id": "jane", "reason":
                   f"denied {SECRETS['email']}", "at": "-30m"}},
    ], scenarios.SCENARIO_DIR)
    scenarios.load(producer, story, SECRET_TENANT, base=BASE)
    producer.close()


@pytest.mark.parametrize("fmt", ["JSON", "PDF", "ZIP"])
async def test_redaction_applies_to_every_export(stub, secrets_data, fmt):
    created = (await stub.CreateExport(request("run", "EVIDENCE", fmt, run_id=f"{SECRET_TENANT}.run-leak"),
                                       metadata=auth(SECRET_TENANT))).export
    counts = {c.kind: c.count for c in created.redaction.counts}
    assert counts == {"bearer_token": 1, "card_number": 1, "email": 1, "secret_field": 1}
    assert json.loads(created.manifest)["redaction"]["counts"] == counts
    data, _ = await download(stub, created.export_id, SECRET_TENANT)
    blobs = [data]
    if fmt == "ZIP":
        archive = zipfile.ZipFile(io.BytesIO(data))
        blobs = [archive.read(n) for n in archive.namelist()]
    for blob in blobs:
        for secret in SECRETS.values():
            assert secret.encode() not in blob
    if fmt == "JSON":
        steps = json.loads(data)["trace"]["steps"]
        assert [s["redacted"] for s in steps] == [True, True]
        assert steps[1]["output_data"]["epoch_ms"] == 1732492800000  # a timestamp is not a card


async def test_slice_redaction(stub, secrets_data):
    created = (await stub.CreateExport(request("audit", "EVIDENCE", "CSV"), metadata=auth(SECRET_TENANT))).export
    data, _ = await download(stub, created.export_id, SECRET_TENANT)
    assert SECRETS["email"].encode() not in data and b"[REDACTED:email]" in data


# --- offline verification catches every change ----------------------------------------

async def _saved(stub, tmp_path, scope: str, fmt: str):
    created = (await stub.CreateExport(request(scope, "EVIDENCE", fmt), metadata=auth(TENANT))).export
    data, _ = await download(stub, created.export_id)
    return created, data, await keys_file(stub, tmp_path)


def _offline(tmp_path, data: bytes, envelope: str | None, keys, pin: str | None = None) -> int:
    (tmp_path / "a").write_bytes(data)
    args = [str(tmp_path / "a"), "--keys", str(keys)]
    if pin is not None:
        args += ["--key", pin]
    if envelope is not None:
        (tmp_path / "e.json").write_text(envelope)
        args += ["--envelope", str(tmp_path / "e.json")]
    return verify_export.main(args)


@pytest.mark.parametrize("fmt", ["JSON", "PDF", "ZIP"])
async def test_any_changed_artifact_byte_is_caught(stub, tmp_path, fmt):
    created, data, keys = await _saved(stub, tmp_path, "run", fmt)
    pin = created.signing_key_id
    assert _offline(tmp_path, data, created.dsse_envelope, keys, pin) == 0
    for position in (0, len(data) // 3, len(data) // 2, len(data) - 1):
        changed = bytearray(data)
        changed[position] ^= 0x01
        assert _offline(tmp_path, bytes(changed), created.dsse_envelope, keys, pin) == 1, position


async def test_a_changed_manifest_or_signature_is_caught(stub, tmp_path):
    import base64
    created, data, keys = await _saved(stub, tmp_path, "run", "JSON")
    envelope = json.loads(created.dsse_envelope)
    manifest = json.loads(base64.b64decode(envelope["payload"]))
    manifest["size"] += 1
    pin, invalid = created.signing_key_id, verify_export.Verdict.SIGNATURE_INVALID.exit_code
    forged = {**envelope, "payload": base64.b64encode(hashing.canonical_json(manifest)).decode()}
    assert _offline(tmp_path, data, json.dumps(forged), keys, pin) == invalid
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[5] ^= 0x80
    forged = {**envelope, "signatures": [{**envelope["signatures"][0], "sig": base64.b64encode(sig).decode()}]}
    assert _offline(tmp_path, data, json.dumps(forged), keys, pin) == invalid
    assert _offline(tmp_path, data, json.dumps({**envelope, "payloadType": "text/plain"}), keys, pin) == invalid
    other = dsse.SigningKey.generate().public
    (tmp_path / "other.json").write_text(json.dumps(dsse.keys_document([other])))
    # Signed by a key the auditor did not pin.
    assert _offline(tmp_path, data, created.dsse_envelope, tmp_path / "other.json", other.key_id) == \
        verify_export.Verdict.UNTRUSTED_KEY.exit_code


async def test_a_package_needs_its_envelope_and_catches_a_changed_member(stub, tmp_path):
    created, data, keys = await _saved(stub, tmp_path, "run", "ZIP")
    pin = created.signing_key_id
    assert _offline(tmp_path, data, created.dsse_envelope, keys, pin) == 0
    # Its own package signature carries no signing time: alone, the package is UNSIGNED.
    assert _offline(tmp_path, data, None, keys, pin) == verify_export.Verdict.UNSIGNED.exit_code
    archive = zipfile.ZipFile(io.BytesIO(data))
    members = {n: archive.read(n) for n in archive.namelist()}
    bundle = json.loads(members["evidence.json"])
    bundle["trace"]["steps"][1]["output_data"] = {"summary": "nothing happened"}   # rewrite history
    members["evidence.json"] = hashing.canonical_json(bundle)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as forged:
        for name, content in members.items():
            forged.writestr(name, content)
    assert _offline(tmp_path, out.getvalue(), created.dsse_envelope, keys, pin) == 1
    checks = {c.name: c.passed for c in verify_export.verify(out.getvalue(), created.dsse_envelope,
                                                             verify_export.load_keys([keys])).checks}
    assert checks["package_sums"] is False and checks["steps"] is False  # located: the member, and the step


async def test_a_rewritten_json_bundle_is_located(stub, tmp_path):
    created, data, keys = await _saved(stub, tmp_path, "audit", "JSON")
    bundle = json.loads(data)
    bundle["records"][2]["action_reason"] = "nothing to see"
    result = verify_export.verify(hashing.canonical_json(bundle), created.dsse_envelope,
                                  verify_export.load_keys([keys]))
    checks = {c.name: c for c in result.checks}
    assert not checks["checksum"].passed
    assert not checks["ledger"].passed and f"seq {bundle['records'][2]['seq']}: content" in checks["ledger"].detail


async def test_export_envelope_verifies_with_securesystemslib(stub):
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey
    created = (await stub.CreateExport(request("incident", "SOC2", "JSON"), metadata=auth(TENANT))).export
    (key,) = [k for k in (await stub.ListSigningKeys(pb.ListSigningKeysRequest(), metadata=auth(TENANT))).keys
              if k.key_id == created.signing_key_id]
    sslib_key = SSlibKey(key.key_id, "ed25519", "ed25519", {"public": key.public_key.hex()})
    verified = Envelope.from_dict(json.loads(created.dsse_envelope)).verify([sslib_key], 1)
    assert key.key_id in verified
    assert json.loads(Envelope.from_dict(json.loads(created.dsse_envelope)).pae().split(b" ", 4)[4]) == \
        json.loads(created.manifest)


# --- keys and checkpoints ---------------------------------------------------------------

async def test_signing_keys_and_a_signed_ledger_checkpoint(stub, suite, database_url):
    keys = (await stub.ListSigningKeys(pb.ListSigningKeysRequest(), metadata=auth(TENANT))).keys
    active = [k for k in keys if k.status == bundle_pb2.SIGNING_KEY_STATUS_ACTIVE]
    assert len(active) == 1 and active[0].algorithm == "ed25519" and len(active[0].public_key) == 32
    assert active[0].key_id == hashing.signing_key_id(active[0].public_key)
    cp = (await stub.GetLedgerCheckpoint(pb.GetLedgerCheckpointRequest(), metadata=auth(TENANT))).checkpoint
    statement = json.loads(dsse.verify_envelope(cp.dsse_envelope, [dsse.PublicKey.from_raw(active[0].public_key)],
                                                dsse.CHECKPOINT_PAYLOAD_TYPE))
    assert statement == {"tenant_id": TENANT, "seq": cp.seq, "chain_hash": cp.chain_hash,
                         "issued_at": hashing.rfc3339(cp.issued_at.ToDatetime())}
    from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb, audit_ledger_service_pb2_grpc as audit_grpc
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        entries = await audit_grpc.AuditLedgerServiceStub(channel).ListAuditEntries(
            audit_pb.ListAuditEntriesRequest(page_size=1), metadata=auth(TENANT))
    assert (entries.entries[0].seq, entries.entries[0].chain_hash) == (cp.seq, cp.chain_hash)
    # Recorded as the checkpoint retention needs (migration 0010), the signed envelope with it;
    # signing the same head again keeps the first statement.
    again = (await stub.GetLedgerCheckpoint(pb.GetLedgerCheckpointRequest(), metadata=auth(TENANT))).checkpoint
    assert again.seq == cp.seq and again.dsse_envelope != cp.dsse_envelope
    with psycopg.connect(database_url) as conn:
        recorded = conn.execute("SELECT chain_hash, envelope FROM ledger_checkpoints WHERE tenant_id = %s "
                                "AND kind = 'CHECKPOINT' AND seq = %s", (TENANT, cp.seq)).fetchall()
        assert [(bytes(h).hex(), e) for h, e in recorded] == [(cp.chain_hash, json.loads(cp.dsse_envelope))]
        # The Export role records only through that function: only entries the ledger holds,
        # never a row of its own (an anchor could be forged with one).
        conn.execute("SET ROLE aos_export")
        conn.execute("SELECT set_config('aos.tenant_id', %s, false)", (TENANT,))
        assert conn.execute("SELECT aos_record_signed_checkpoint(%s, %s, NULL)",
                            (cp.seq - 1, bytes(32))).fetchone() == (None,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO ledger_checkpoints (tenant_id, kind, seq, chain_hash) "
                         "VALUES (%s, 'RETENTION_ANCHOR', 1, %s)", (TENANT, bytes(32)))


@contextlib.asynccontextmanager
async def export_service(database_url: str, tmp_path, signing_key: str, *verification_keys: str):
    """An Export service of its own on port 0, signing with ``tmp_path/signing_key`` and
    verifying with the retired keys named: a stub to it."""
    base = settings(tmp_path)
    conf = dataclasses.replace(base, export_signing_key_file=tmp_path / signing_key,
                               export_verification_key_files=tuple(tmp_path / k for k in verification_keys))
    server = build_server("export", export_server.servicers, conf, login_url(database_url, "export"), port=0)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.ExportServiceStub(channel)
    finally:
        await server.stop(grace=0)


def write_signing_keys(tmp_path, **keys: dsse.SigningKey) -> None:
    for name, key in keys.items():
        (tmp_path / f"{name}.pem").write_bytes(key.private_pem())
        (tmp_path / f"{name}.pem").chmod(0o600)  # a signing key others can read is refused


async def test_rotation_keeps_old_exports_verifiable(database_url, ex_data, tmp_path):
    """A new signing key, the old one configured as a verification key: both listed,
    the old key RETIRED, and an export signed before the rotation still verifies."""
    old, new = dsse.SigningKey.generate(), dsse.SigningKey.generate()
    write_signing_keys(tmp_path, old=old, new=new)
    dsse.write_public_key_pem(old.public, tmp_path / "old.pub.pem")
    async with export_service(database_url, tmp_path, "old.pem") as stub:
        exported = (await stub.CreateExport(request("run", "EVIDENCE", "JSON"), metadata=auth(TENANT))).export
    assert exported.signing_key_id == old.public.key_id
    async with export_service(database_url, tmp_path, "new.pem", "old.pub.pem") as stub:
        keys = {k.key_id: k.status for k in
                (await stub.ListSigningKeys(pb.ListSigningKeysRequest(), metadata=auth(TENANT))).keys}
        assert keys == {new.public.key_id: bundle_pb2.SIGNING_KEY_STATUS_ACTIVE,
                        old.public.key_id: bundle_pb2.SIGNING_KEY_STATUS_RETIRED}
        verdict = await stub.VerifyExport(pb.VerifyExportRequest(export_id=exported.export_id),
                                          metadata=auth(TENANT))
        assert verdict.valid, [(c.name, c.detail) for c in verdict.checks if not c.passed]
        fresh = (await stub.CreateExport(request("run", "EVIDENCE", "JSON"), metadata=auth(TENANT))).export
        assert fresh.signing_key_id == new.public.key_id


async def test_the_service_refuses_a_signature_made_outside_its_keys_validity(database_url, ex_data, tmp_path):
    """VerifyExport pins the service's own key ring, validity included: once the ring
    dates the old key as ended before the manifest's signed_at, its export fails."""
    old, new = dsse.SigningKey.generate(), dsse.SigningKey.generate()
    write_signing_keys(tmp_path, old=old, new=new)
    ended = dsse.PublicKey.from_raw(old.public.raw, valid_until=datetime(2000, 1, 1, tzinfo=timezone.utc))
    (tmp_path / "old.keys.json").write_text(json.dumps(dsse.keys_document([ended])))
    async with export_service(database_url, tmp_path, "old.pem") as stub:
        exported = (await stub.CreateExport(request("run", "EVIDENCE", "JSON"), metadata=auth(TENANT))).export
    async with export_service(database_url, tmp_path, "new.pem", "old.keys.json") as stub:
        verdict = await stub.VerifyExport(pb.VerifyExportRequest(export_id=exported.export_id),
                                          metadata=auth(TENANT))
    checks = {c.name: c for c in verdict.checks}
    assert not verdict.valid and not checks["signature"].passed
    assert "KEY_NOT_VALID_AT" in checks["signature"].detail


# --- lists, isolation, bad input -------------------------------------------------------

async def test_list_exports_filters_and_pages(stub):
    for _ in range(3):
        await stub.CreateExport(request("incident", "EVIDENCE", "JSON"), metadata=auth(TENANT))
    by_incident = await stub.ListExports(pb.ListExportsRequest(incident_id=INCIDENT, page_size=1000),
                                         metadata=auth(TENANT))
    assert by_incident.total_size >= 3 and all(e.incident_id == INCIDENT for e in by_incident.exports)
    seen, token = [], ""
    while True:
        page = await stub.ListExports(pb.ListExportsRequest(incident_id=INCIDENT, page_size=2, page_token=token),
                                      metadata=auth(TENANT))
        seen += [e.export_id for e in page.exports]
        token = page.next_page_token
        if not token:
            break
    assert seen == [e.export_id for e in by_incident.exports]
    slices = await stub.ListExports(pb.ListExportsRequest(scope=bundle_pb2.EXPORT_SCOPE_AUDIT_SLICE,
                                                          page_size=1000), metadata=auth(TENANT))
    assert slices.exports and all(e.scope == bundle_pb2.EXPORT_SCOPE_AUDIT_SLICE for e in slices.exports)
    assert all(e.metadata.export_id == e.export_id for e in slices.exports)


async def test_another_tenants_exports_and_subjects_are_not_found(stub):
    mine = (await stub.CreateExport(request("run", "EVIDENCE", "JSON"), metadata=auth(TENANT))).export
    for call in (stub.GetExport(pb.GetExportRequest(export_id=mine.export_id), metadata=auth("tenant-other")),
                 stub.VerifyExport(pb.VerifyExportRequest(export_id=mine.export_id), metadata=auth("tenant-other")),
                 stub.CreateExport(request("run", "EVIDENCE", "JSON"), metadata=auth("tenant-other")),
                 stub.CreateExport(request("incident", "EVIDENCE", "JSON"), metadata=auth("tenant-other"))):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await download(stub, mine.export_id, "tenant-other")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListExports(pb.ListExportsRequest(), metadata=auth("tenant-other"))
    assert mine.export_id not in {e.export_id for e in listed.exports}


@pytest.mark.parametrize("req, field", [
    (pb.CreateExportRequest(bundle_type=1, format=1), "subject"),
    (pb.CreateExportRequest(run_id="r", format=1), "bundle_type"),
    (pb.CreateExportRequest(run_id="r", bundle_type=1), "format"),
    (pb.CreateExportRequest(run_id="r", bundle_type=9, format=1), "bundle_type"),
    (pb.CreateExportRequest(run_id="bad id!", bundle_type=1, format=1), "run_id"),
    (pb.CreateExportRequest(run_id="r", bundle_type=1, format=2), "format"),   # CSV of a run
    (pb.CreateExportRequest(audit_slice=pb.AuditSlice(event_type=99), bundle_type=1, format=1),
     "audit_slice.event_type"),
    (pb.CreateExportRequest(system_slice=pb.SystemSlice(created_after=ts(BASE), created_before=ts(BASE)),
                            bundle_type=1, format=1), "system_slice.created_before"),
    (pb.CreateExportRequest(run_id="r", bundle_type=1, format=1, idempotency_key="k" * 200), "idempotency_key"),
])
async def test_bad_create_requests(stub, req, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateExport(req, metadata=auth(TENANT))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(err.value)


async def test_unknown_ids(stub):
    for call in (stub.GetExport(pb.GetExportRequest(export_id="exp_missing"), metadata=auth(TENANT)),
                 stub.CreateExport(request("run", "EVIDENCE", "JSON", run_id="run-missing"), metadata=auth(TENANT))):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetExport(pb.GetExportRequest(export_id=""), metadata=auth(TENANT))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_every_byte_of_the_envelope_and_a_json_artifact_matters(stub, tmp_path):
    """Flip each bit of each byte, one at a time: a variant the offline verifier accepts is
    one DSSE itself calls the same envelope (payloadType, payload and signature unchanged,
    e.g. a renamed keyid member or an unused base64 bit); every other one is refused."""
    created, data, keys = await _saved(stub, tmp_path, "incident", "JSON")
    public = verify_export.load_keys([keys])
    envelope = created.dsse_envelope.encode()
    assert verify_export.verify(data, created.dsse_envelope, public).ok
    signed = _signed_parts(envelope)
    for i in range(len(envelope)):
        for bit in (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40):
            changed = bytearray(envelope)
            changed[i] ^= bit
            if verify_export.verify(data, changed.decode("utf-8", "replace"), public).ok:
                assert _signed_parts(bytes(changed)) == signed, (i, bit)
    for i in range(0, len(data), max(1, len(data) // 2000)):
        changed = bytearray(data)
        changed[i] ^= 0x04
        assert not verify_export.verify(bytes(changed), created.dsse_envelope, public).ok, i


def _signed_parts(envelope: bytes):
    """What a DSSE signature covers, and the signature: (payloadType, payload, [sig])."""
    payload, payload_type, signatures = dsse._parse(envelope)
    return payload_type, payload, [sig for _, sig in signatures]
