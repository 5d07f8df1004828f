"""Exports carry proofs (issue #20, part 4), from the running service: the manifest (v3) names
the C2SP checkpoint of the ledger it was built against and one proof that every ledger entry
the artifact carries is a leaf of its tree; the offline verifier checks both, under a pinned
log key and a k-of-n witness policy on the checkpoint fetched later (with its cosignatures);
an entry's standard audit path derived from the bundle verifies with aics-tlog against the
root the running suite serves; a proof altered under a valid signature is caught."""
from __future__ import annotations

import base64
import dataclasses
import json
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import grpc
import pytest
from aics_tlog import checkpoint as aics_checkpoint, note as aics_note, tree as aics_tree
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_recording import dsse, hashing, verify_export, witness
from aos_recording.verify_export import LogPolicy, Verdict
from aos_runtime.service_main import build_server
from tests.db.sessions import append_entries, new_id
from tests.e2e.support import BASE, WITNESS_KEYS, WITNESSES, auth, service_modules, settings, token, ts
from tests.logins import load_demo_scenarios, login_url

pytestmark = pytest.mark.db

OCT = datetime(2026, 10, 1, tzinfo=timezone.utc)


async def exported(address: str, tenant: str, request: pb.CreateExportRequest) -> tuple[bytes, str, dict]:
    """(artifact, envelope, manifest) of a new export."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.ExportServiceStub(channel)
        created = (await stub.CreateExport(request, metadata=auth(tenant), timeout=60)).export
        artifact = b"".join([m.data async for m in stub.DownloadExport(
            pb.DownloadExportRequest(export_id=created.export_id), metadata=auth(tenant))])
    return artifact, created.dsse_envelope, json.loads(created.manifest)


async def kept_checkpoint(address: str, tenant: str, size: int) -> pb.GetLedgerCheckpointResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        return await pb_grpc.ExportServiceStub(channel).GetLedgerCheckpoint(
            pb.GetLedgerCheckpointRequest(tree_size=size), metadata=auth(tenant), timeout=10)


async def signing_key(address: str, tenant: str) -> dsse.PublicKey:
    async with grpc.aio.insecure_channel(address) as channel:
        keys = (await pb_grpc.ExportServiceStub(channel).ListSigningKeys(
            pb.ListSigningKeysRequest(), metadata=auth(tenant), timeout=10)).keys
    return dsse.PublicKey.from_raw(keys[0].public_key)


async def cosign_all(address: str, tenant: str, served, k: int = 2) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.ExportServiceStub(channel)
        for name, key in WITNESSES[:k]:
            done = witness.cosign_checkpoint(None, served.signed_note.encode(), [], log_key=served.log_verifier_key,
                                             origin=served.origin, name=name, private_key=key,
                                             timestamp=int(time.time()), first_use=True)
            await stub.AddCheckpointCosignature(pb.AddCheckpointCosignatureRequest(
                tree_size=served.tree_size, cosignature=done.line.decode()),
                metadata=(("authorization", f"Bearer {token(tenant)}"),), timeout=10)


@pytest.mark.parametrize("fmt", ["JSON", "CSV", "ZIP"])
async def test_a_filtered_audit_slice_proves_its_entries_against_a_cosigned_checkpoint(suite, database_url, fmt):
    tenant = new_id("t")
    append_entries(database_url, tenant, [OCT], 12)
    # a second batch at the same hours: the slice below (the first three hours) is a filtered,
    # non-contiguous set of leaves (seqs 1-3 and 13-15)
    more = append_entries(database_url, tenant, [OCT], 5)
    artifact, envelope, manifest = await exported(suite["export"], tenant, pb.CreateExportRequest(
        audit_slice=pb.AuditSlice(created_before=ts(datetime(2026, 10, 1, 3, tzinfo=timezone.utc))),
        bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.ExportFormat.Value(f"EXPORT_FORMAT_{fmt}")))
    section = manifest["transparency_log"]
    assert manifest["format_version"] == verify_export.MANIFEST_V3
    assert section["origin"] == f"aos-evidence.local/ledger/{tenant}" and section["tree_size"] == 17
    assert section["records"] == 6 and [e.seq for e in more][:3] == [13, 14, 15]
    key = await signing_key(suite["export"], tenant)
    served = (await kept_checkpoint(suite["export"], tenant, 17)).log_checkpoint
    assert base64.b64decode(section["root"]) == served.root_hash
    # the verifier: the manifest's own note (no cosignature yet) under the pinned log key
    result = verify_export.verify(artifact, envelope, [key], policy=LogPolicy(log_key=served.log_verifier_key))
    assert result.ok, result.checks
    assert {c.name for c in result.checks} >= {"checkpoint", "inclusion"}
    # two witnesses cosign the kept checkpoint; the auditor fetches it by size: 2 of 2
    await cosign_all(suite["export"], tenant, served)
    later = (await kept_checkpoint(suite["export"], tenant, 17)).log_checkpoint
    strict = LogPolicy(log_key=served.log_verifier_key, witnesses=WITNESS_KEYS, min_witnesses=2,
                       not_after=int(time.time()) + 60, checkpoint=later.signed_note.encode())
    assert verify_export.verify(artifact, envelope, [key], policy=strict).ok
    # aics-tlog: the cosigned checkpoint with a 2-of-2 policy, and each carried entry's audit path
    their_log = aics_note.parse_vkey(served.log_verifier_key)
    verdict = aics_checkpoint.verify_checkpoint(aics_note.parse_note(later.signed_note.encode()), their_log,
                                                [aics_note.parse_vkey(k) for k in WITNESS_KEYS], 2,
                                                expected_origin=served.origin, now=int(time.time()) + 60)
    assert verdict.ok, verdict.error
    leaves = result.ledger_leaves
    assert leaves is not None and len(leaves) == 6
    for seq, content in leaves:
        path = verify_export.inclusion_proof(leaves, section, seq)
        assert aics_tree.verify_leaf_inclusion(bytes.fromhex(content), seq - 1, 17, path, verdict.root)


async def test_a_run_bundle_proves_its_governance_entries(suite, database_url):
    tenant = f"tenant-prf-{uuid.uuid4().hex[:6]}"
    load_demo_scenarios(database_url, tenant, base=BASE)
    artifact, envelope, manifest = await exported(suite["export"], tenant, pb.CreateExportRequest(
        run_id=f"{tenant}.run-support-103", bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE,
        format=bundle_pb2.EXPORT_FORMAT_JSON))
    section = manifest["transparency_log"]
    assert section["records"] == len(json.loads(artifact)["governance"]) > 0
    vkey = (await kept_checkpoint(suite["export"], tenant, section["tree_size"])).log_checkpoint.log_verifier_key
    result = verify_export.verify(artifact, envelope, [await signing_key(suite["export"], tenant)],
                                  policy=LogPolicy(log_key=vkey))
    assert result.ok and "inclusion" in {c.name for c in result.checks}, result.checks
    # a PDF of the same run: the checkpoint is checked, the inclusion is said not to be
    pdf, pdf_envelope, _ = await exported(suite["export"], tenant, pb.CreateExportRequest(
        run_id=f"{tenant}.run-support-103", bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE,
        format=bundle_pb2.EXPORT_FORMAT_PDF))
    shown = verify_export.verify(pdf, pdf_envelope, [await signing_key(suite["export"], tenant)],
                                 policy=LogPolicy(log_key=vkey))
    assert shown.ok and "inclusion not checked" in (shown.note or "")


async def test_a_proof_altered_under_a_valid_signature_is_caught(database_url, tmp_path):
    """An export service whose signing key this test holds re-signs a manifest whose proof (or
    checkpoint root) was altered: the signature verifies, the proof check does not."""
    signing = Ed25519PrivateKey.generate()
    key_path = Path(tempfile.mkdtemp(prefix="aos-prf-")) / "export.pem"
    key_path.write_bytes(signing.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    key_path.chmod(0o600)
    conf = dataclasses.replace(settings(Path(tempfile.mkdtemp(prefix="aos-prf-data-"))),
                               export_signing_key_file=key_path, checkpoint_interval_s=0)
    server = build_server("export", service_modules()["export"].servicers, conf, login_url(database_url, "export"),
                          port=0)
    address = f"127.0.0.1:{await server.start()}"
    try:
        tenant = new_id("t")
        append_entries(database_url, tenant, [OCT], 9)
        artifact, envelope, manifest = await exported(address, tenant, pb.CreateExportRequest(
            audit_slice=pb.AuditSlice(), bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE,
            format=bundle_pb2.EXPORT_FORMAT_JSON))
        key = dsse.SigningKey.from_private(signing)
        assert verify_export.verify(artifact, envelope, [key.public]).ok
        section = manifest["transparency_log"]
        assert section["tree_size"] == 9 and section["inclusion_proof"] == []  # every leaf carried: no hash needed
        # alter what the proof stands on (the root; a proof hash), and re-sign with the service's key
        root = bytearray(base64.b64decode(section["root"]))
        root[0] ^= 1
        forged_root = {**section, "root": base64.b64encode(bytes(root)).decode()}
        for forged in (forged_root, {**section, "inclusion_proof": [base64.b64encode(bytes(32)).decode()]}):
            resigned = dsse.envelope_json(dsse.sign_envelope(dsse.MANIFEST_PAYLOAD_TYPE, hashing.canonical_json(
                {**manifest, "transparency_log": forged}), key))
            result = verify_export.verify(artifact, resigned, [key.public])
            assert result.verdict is Verdict.TAMPERED
            failed = [c.name for c in result.checks if not c.passed]
            assert failed and failed[0] in ("checkpoint", "inclusion"), result.checks
    finally:
        await server.stop(grace=0)

