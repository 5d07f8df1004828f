"""The README's "Verifying an export offline" walk-through, step by step, against real
servers: every file saved exactly as the commands there save it (curl's response body as
is, ``jq -r`` output with its newline, buf curl's own JSON), then the verifier run as a
subprocess with the README's flags."""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest

from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from tests.e2e.support import token
from tests.gateway.support import WRITER, bearer

pytestmark = pytest.mark.db
ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".venv" / "bin" / "buf"


def jq_raw(body: bytes, *path: str) -> str:
    """``jq -r .a.b``: the string, then a newline."""
    value = json.loads(body)
    for name in path:
        value = value[name]
    return value + "\n"


def verifier(*args: object) -> subprocess.CompletedProcess:
    """``.venv/bin/python -m aos_recording.verify_export ...`` as the README runs it."""
    return subprocess.run([sys.executable, "-m", "aos_recording.verify_export", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


async def out_of_band_key(suite):
    """The active signing key as the auditor is told it by another channel (here: the
    service's gRPC port, not the files being verified)."""
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        keys = await pb_grpc.ExportServiceStub(channel).ListSigningKeys(
            pb.ListSigningKeysRequest(), metadata=(("authorization", f"Bearer {token(WRITER)}"),))
    (active,) = [k for k in keys.keys if k.status == 1]
    return active


async def out_of_band_public_key(suite) -> str:
    """The README's pin: the public key, base64 of its 32 raw bytes (as REST and jq print it)."""
    return base64.b64encode((await out_of_band_key(suite)).public_key).decode()


# How the README's operator reads the public key from the gateway's signing-keys answer.
OPERATOR_JQ = '.keys[] | select(.status == "SIGNING_KEY_STATUS_ACTIVE") | .public_key'


@pytest.mark.parametrize("fmt", ["ZIP", "JSON"])
async def test_the_rest_walkthrough_as_written(served, suite, writer_data, tmp_path, fmt):
    api = f"{served}/api/v1/logs/exports"
    async with httpx.AsyncClient(headers=bearer(WRITER), timeout=60) as curl:
        # curl -s -H "Authorization: Bearer $TOKEN" -X POST $API -d '{...}' | jq -r .export.export_id
        created = await curl.post(api, content=json.dumps({
            "run_id": f"{WRITER}.run-support-103", "bundle_type": "BUNDLE_TYPE_SOC2",
            "format": f"EXPORT_FORMAT_{fmt}"}))
        assert created.status_code == 200, created.text
        export_id = jq_raw(created.content, "export", "export_id").strip()
        # curl -s ... "$API/$EXPORT_ID:download" -o export.zip
        artifact = tmp_path / f"export.{fmt.lower()}"
        download = await curl.get(f"{api}/{export_id}:download")
        assert download.status_code == 200
        artifact.write_bytes(download.content)
        # curl -s ... "$API/$EXPORT_ID" | jq -r .export.dsse_envelope > export.dsse.json
        fetched = await curl.get(f"{api}/{export_id}")
        (tmp_path / "export.dsse.json").write_text(jq_raw(fetched.content, "export", "dsse_envelope"))
        # curl -s ... "$API/signing-keys" > keys.json
        keys = await curl.get(f"{api}/signing-keys")
        assert keys.status_code == 200
        (tmp_path / "keys.json").write_bytes(keys.content)
    public_key = await out_of_band_public_key(suite)
    key_id = (await out_of_band_key(suite)).key_id
    assert public_key in keys.text

    readme = [artifact, "--envelope", tmp_path / "export.dsse.json", "--keys", tmp_path / "keys.json"]
    done = verifier(*readme, "--key", public_key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("VALID") and "64-bit" not in done.stdout
    # Pinning only the key id still verifies, but the verifier says it is the weaker pin.
    by_id = verifier(*readme, "--key", key_id)
    assert by_id.returncode == 0, by_id.stdout + by_id.stderr
    assert "64-bit key id only" in by_id.stdout.strip().splitlines()[-1]
    # The same files without the pin: keys.json is no trust.
    unpinned = verifier(*readme)
    assert unpinned.returncode == 4 and "UNTRUSTED_KEY" in unpinned.stdout and "--key KEY_ID" in unpinned.stdout
    # Without the envelope: UNSIGNED.
    assert verifier(artifact, "--keys", tmp_path / "keys.json", "--key", public_key).returncode == 3


# The README's block, verbatim (README.md, "Verifying an export offline"); the test fills
# in only the placeholders: the token, the gateway's address, the public key, and a run of
# the gateway tests' own tenant.
README_REST = """\
TOKEN=...                # a token with exports.read (and exports.create to make an export)
GATEWAY=http://127.0.0.1:8080
API=$GATEWAY/api/v1/logs/exports
EXPORT_ID=$(curl -s -H "Authorization: Bearer $TOKEN" -X POST "$API" \\
  -d '{"run_id": "tenant-demo.run-support-103", "bundle_type": "BUNDLE_TYPE_SOC2", "format": "EXPORT_FORMAT_ZIP"}' \\
  | jq -r .export.export_id)
curl -s -H "Authorization: Bearer $TOKEN" "$API/$EXPORT_ID:download" -o export.zip
curl -s -H "Authorization: Bearer $TOKEN" "$API/$EXPORT_ID" | jq -r .export.dsse_envelope > export.dsse.json
curl -s -H "Authorization: Bearer $TOKEN" "$API/signing-keys" > keys.json
KEY=...                  # the export signing key's public key, as the operator gave it to you out of band
.venv/bin/python -m aos_recording.verify_export export.zip --envelope export.dsse.json --keys keys.json --key $KEY
"""


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="the README's block needs curl and jq")
async def test_the_readme_block_runs_verbatim_in_a_shell(served, suite, writer_data, tmp_path):
    script = (README_REST.replace("TOKEN=...", f"TOKEN={token(WRITER)}")
              .replace("GATEWAY=http://127.0.0.1:8080", f"GATEWAY={served}")
              .replace("KEY=...", f"KEY={await out_of_band_public_key(suite)}")
              .replace("tenant-demo.run-support-103", f"{WRITER}.run-support-103"))
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    process = await asyncio.create_subprocess_exec(   # the gateway answers on this event loop: keep it free
        "bash", "-euo", "pipefail", "-c", script, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, out.decode() + err.decode()
    assert out.decode().strip().splitlines()[-1].startswith("VALID")
    assert (tmp_path / "export.dsse.json").read_text().endswith("}\n")   # jq -r's newline, accepted
    # The operator's command in the README reads that same key from the gateway's answer.
    jq = await asyncio.create_subprocess_exec("jq", "-r", OPERATOR_JQ, tmp_path / "keys.json",
                                              stdout=asyncio.subprocess.PIPE)
    printed, _ = await asyncio.wait_for(jq.communicate(), 60)
    assert printed.decode().strip() == await out_of_band_public_key(suite)


@pytest.mark.skipif(not BUF.exists(), reason="buf is installed by make (requirements) into .venv/bin")
async def test_the_buf_curl_walkthrough_as_written(served, suite, writer_data, tmp_path):
    """Keys and envelope saved from buf curl (lowerCamelCase proto3 JSON), the artifact over REST."""
    async with httpx.AsyncClient(headers=bearer(WRITER), timeout=60) as curl:
        created = (await curl.post(f"{served}/api/v1/logs/exports", json={
            "run_id": f"{WRITER}.run-support-103", "bundle_type": "BUNDLE_TYPE_EVIDENCE",
            "format": "EXPORT_FORMAT_PDF"})).json()["export"]
        artifact = tmp_path / "export.pdf"
        artifact.write_bytes((await curl.get(f"{served}/api/v1/logs/exports/{created['export_id']}:download")).content)

    async def call(method: str, body: str) -> bytes:
        # call() { .venv/bin/buf curl --protocol grpc --http2-prior-knowledge -H "authorization: Bearer $TOKEN" \
        #            -d "$3" "http://127.0.0.1:$1/$2"; }
        # (a child process: the servers answer on this test's event loop, which must keep running)
        process = await asyncio.create_subprocess_exec(
            BUF, "curl", "--protocol", "grpc", "--http2-prior-knowledge",
            "-H", f"authorization: Bearer {token(WRITER)}", "-d", body,
            f"http://{suite['export']}/aos.export.v1.ExportService/{method}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, err
        return out

    # call 50053 aos.export.v1.ExportService/ListSigningKeys '{}' > keys.json
    (tmp_path / "keys.json").write_bytes(await call("ListSigningKeys", "{}"))
    assert b'"keyId"' in (tmp_path / "keys.json").read_bytes()
    # call 50053 aos.export.v1.ExportService/GetExport '{"export_id": "'$EXPORT_ID'"}' \
    #   | jq -r .export.dsseEnvelope > export.dsse.json
    got = await call("GetExport", json.dumps({"export_id": created["export_id"]}))
    (tmp_path / "export.dsse.json").write_text(jq_raw(got, "export", "dsseEnvelope"))
    done = verifier(artifact, "--envelope", tmp_path / "export.dsse.json", "--keys", tmp_path / "keys.json",
                    "--key", await out_of_band_public_key(suite))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_shows_exactly_the_block_these_tests_run():
    """The walk-through tested above is the one an auditor reads: README.md carries it verbatim,
    and the operator's command that reads the pin (before the block, and in Trying it) too."""
    readme = (ROOT / "README.md").read_text()
    assert README_REST in readme
    operator = f"/api/v1/logs/exports/signing-keys | jq -r '{OPERATOR_JQ}')"
    assert f"`curl -s -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8080{operator[:-1]}`" in readme
    assert f"KEY=$(curl -s -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8080{operator}" in readme
