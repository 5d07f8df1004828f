"""``export create | download | verify``: an artifact checked by the service, offline, and tampered."""
from __future__ import annotations

import json

import pytest

from aos_recording import dsse, hashing
from tests.e2e.support import DEMO

pytestmark = pytest.mark.db


@pytest.fixture
async def soc2_zip(cli, writer_tenant, tmp_path):
    """A SOC2 ZIP of the violating run, created and downloaded in one command."""
    artifact = tmp_path / "evidence.zip"
    result = await cli("--json", "export", "create", "--run", f"{writer_tenant}.run-support-103", "--bundle", "soc2",
                       "--format", "ZIP", "--idempotency-key", "cli-soc2-zip", "--download", artifact,
                       tenant=writer_tenant)
    assert result.code == 0, result.err
    return artifact, json.loads(result.out)


async def test_create_and_download_saves_artifact_envelope_and_keys(soc2_zip):
    artifact, doc = soc2_zip
    export = doc["export"]
    data = artifact.read_bytes()
    assert (hashing.sha256(data).hex(), len(data)) == (export["checksum"], int(export["size_bytes"]))
    assert doc["download"]["sha256"] == export["checksum"]
    envelope = artifact.with_name("evidence.zip.dsse.json")
    assert envelope.read_text() == export["dsse_envelope"]
    keys = dsse.load_keys_document(artifact.with_name("keys.json"))
    assert export["signing_key_id"] in {key.key_id for key in keys}
    assert not list(artifact.parent.glob("*.part"))


async def test_download_into_a_directory_uses_the_export_file_name(cli, soc2_zip, writer_tenant, tmp_path):
    _, doc = soc2_zip
    target = tmp_path / "again"
    target.mkdir()
    result = await cli("export", "download", doc["export"]["export_id"], "-o", target, tenant=writer_tenant)
    assert result.code == 0, result.err
    saved = target / doc["export"]["filename"]
    assert hashing.sha256(saved.read_bytes()).hex() == doc["export"]["checksum"]
    assert "matches the export's checksum" in result.out and "verify --offline" in result.err


async def test_the_service_verifies_the_export(cli, soc2_zip, writer_tenant):
    _, doc = soc2_zip
    result = await cli("export", "verify", doc["export"]["export_id"], tenant=writer_tenant)
    assert result.code == 0, result.err
    assert "VALID" in result.out and "FAIL" not in result.out
    as_json = json.loads((await cli("--json", "export", "verify", doc["export"]["export_id"],
                                    tenant=writer_tenant)).out)
    assert as_json["valid"] and {c["name"] for c in as_json["checks"]} >= {"checksum", "signature"}
    # The second answer is the first verification, recorded; --recompute verifies afresh.
    assert as_json["recorded"] and "recorded verification" in (await cli(
        "export", "verify", doc["export"]["export_id"], tenant=writer_tenant)).out
    fresh = await cli("export", "verify", "--recompute", doc["export"]["export_id"], tenant=writer_tenant)
    assert fresh.code == 0 and "verified by the service at" in fresh.out


async def test_offline_verification_passes_then_catches_one_flipped_byte(run, soc2_zip, tmp_path):
    artifact, doc = soc2_zip
    pin = doc["export"]["signing_key_id"]
    envelope, keys = artifact.with_name("evidence.zip.dsse.json"), artifact.with_name("keys.json")
    result = await run("export", "verify", "--offline", artifact, "--envelope", envelope, "--keys", keys,
                       "--key", pin)
    assert result.code == 0, result.out + result.err
    assert "INVALID" not in result.out and "VALID (exit 0)" in result.out
    # envelope and keys found beside it; the pin still has to come from the auditor
    assert (await run("export", "verify", "--offline", artifact, "--key", pin)).code == 0

    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = tmp_path / "tampered.zip"
    tampered.write_bytes(bytes(data))
    result = await run("--json", "export", "verify", "--offline", tampered, "--envelope", envelope, "--keys", keys,
                       "--key", pin)
    assert result.code == 1
    doc = json.loads(result.out)
    assert not doc["valid"] and doc["verdict"] == "TAMPERED"
    assert any(c["name"] == "checksum" and not c["passed"] for c in doc["checks"])


async def test_offline_verification_fails_closed(run, soc2_zip, tmp_path):
    """keys.json beside the artifact is no trust; an artifact without its envelope is UNSIGNED."""
    artifact, doc = soc2_zip
    result = await run("export", "verify", "--offline", artifact)          # keys.json beside it, nothing pinned
    assert result.code == 4 and "UNTRUSTED_KEY" in result.out and "--key KEY_ID" in result.out
    lone = tmp_path / "lone" / "evidence.zip"
    lone.parent.mkdir()
    lone.write_bytes(artifact.read_bytes())
    result = await run("--json", "export", "verify", "--offline", lone, "--key", doc["export"]["signing_key_id"],
                       "--keys", artifact.with_name("keys.json"))
    assert result.code == 3 and json.loads(result.out)["verdict"] == "UNSIGNED"
    other = dsse.SigningKey.generate().public
    result = await run("export", "verify", "--offline", artifact, "--key", other.raw.hex())
    assert result.code == 4
    assert "exit status" in (await run("export", "verify", "--help")).out


async def test_an_audit_slice_export_with_filters(cli, writer_tenant, tmp_path):
    result = await cli("--json", "export", "create", "--audit-slice", "--event-type", "LimitBreached",
                       "--until", "2026-11-01T13:00:00Z", "--bundle", "EVIDENCE", "--format", "csv",
                       "--download", tmp_path / "slice.csv", tenant=writer_tenant)
    assert result.code == 0, result.err
    export = json.loads(result.out)["export"]
    assert export["scope"] == "EXPORT_SCOPE_AUDIT_SLICE" and "LimitBreached" in export["slice_filter"]
    assert "LimitBreached" in (tmp_path / "slice.csv").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--run", f"{DEMO}.run-support-103", "--component", "api"], "filters a slice"),
    (["--system-slice", "--actor-id", "someone"], "filter --audit-slice"),
    (["--audit-slice", "--severity", "ERROR"], "filter --system-slice"),
    (["--system-slice", "--event-type", "LimitBreached"], "one of: STARTUP"),
])
async def test_create_rejects_filters_that_do_not_fit_the_subject(cli, argv, message):
    result = await cli("export", "create", *argv, "--bundle", "EVIDENCE", "--format", "JSON")
    assert result.code == 2 and message in result.err


async def test_another_tenants_export_is_not_found(cli, soc2_zip, tmp_path):
    _, doc = soc2_zip
    result = await cli("export", "download", doc["export"]["export_id"], "-o", tmp_path / "x.zip", tenant=DEMO)
    assert result.code == 2 and "NOT_FOUND" in result.err
    assert not list(tmp_path.glob("x.zip*"))
