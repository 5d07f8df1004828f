"""What the CLI does without any service: the installed script, tokens, usage errors,
an unreachable address, and the client-side chain check."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from aos.evidence.v1 import integrity_pb2
from aos_cli.commands.ledger import Link, chain_anomalies
from aos_recording import hashing
from aos_runtime import auth

SECRET = "cli-secret-" + "y" * 40


def test_installed_script_prints_help():
    script = Path(sys.executable).with_name("aos-evidence")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("token", "audit", "runs", "export", "ledger", "--json", "--timeout"):
        assert command in done.stdout


def test_python_dash_m_runs_the_same_cli():
    done = subprocess.run([sys.executable, "-m", "aos_cli", "export", "verify", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "--offline ARTIFACT" in done.stdout


async def test_token_mint_signs_the_requested_claims(run, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    result = await run("token", "mint", "--secret-file", secret_file, "--tenant", "tenant-acme", "--subject", "bot-1",
                       "--actor-type", "agent", "--scope", "logs.read", "--scope", "exports.read", "--ttl", "2h")
    assert result.code == 0, result.err
    token = result.out.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="aos-evidence")
    assert (claims["tenant_id"], claims["sub"], claims["actor_type"], claims["scope"]) == (
        "tenant-acme", "bot-1", "AGENT", "logs.read exports.read")
    assert claims["exp"] - claims["iat"] == 2 * 3600
    # What the services' verifier makes of it.
    verifier = auth.TokenVerifier(secret=SECRET, public_key_pem=None, audience="aos-evidence", issuer=None)
    principal = verifier.verify(f"Bearer {token}")
    assert (principal.tenant_id, principal.actor_id, principal.scopes) == (
        "tenant-acme", "bot-1", frozenset({"logs.read", "exports.read"}))
    assert "tenant tenant-acme" in result.err and str(secret_file) in result.err


async def test_token_mint_uses_the_configured_secret_then_the_dev_secret(run, monkeypatch, tmp_path):
    monkeypatch.setenv("AOS_AUTH_JWT_SECRET", SECRET)
    monkeypatch.setenv("AOS_AUTH_ISSUER", "https://issuer.example")
    result = await run("--json", "token", "mint")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    claims = jwt.decode(doc["token"], SECRET, algorithms=["HS256"], audience="aos-evidence",
                        issuer="https://issuer.example")
    assert claims == doc["claims"]
    # every scope but evidence.erase, which a token carries only when named (docs/ERASURE.md)
    assert (claims["tenant_id"], claims["sub"], claims["scope"]) == ("tenant-demo", "user-demo",
                                                                     " ".join(auth.DEFAULT_SCOPES))
    assert "evidence.erase" not in claims["scope"].split() and "evidence.erase" in auth.SCOPES

    monkeypatch.delenv("AOS_AUTH_JWT_SECRET")
    monkeypatch.delenv("AOS_AUTH_ISSUER")
    data_dir = tmp_path / "dev"
    data_dir.mkdir()
    legacy = data_dir / "jwt-secret"  # where make run kept it before AOS_DATA_DIR/secrets/
    legacy.write_text("dev-" + SECRET)
    legacy.chmod(0o600)
    monkeypatch.setenv("AOS_DATA_DIR", str(data_dir))
    result = await run("token", "mint", "--json")  # global options after the command work too
    assert result.code == 0, result.err
    jwt.decode(json.loads(result.out)["token"], "dev-" + SECRET, algorithms=["HS256"], audience="aos-evidence")
    assert not legacy.exists() and (data_dir / "secrets" / "jwt-secret").read_text() == "dev-" + SECRET


async def test_token_mint_refuses_a_dev_secret_others_can_read(run, monkeypatch, tmp_path):
    data_dir = tmp_path / "dev"
    (data_dir / "secrets").mkdir(parents=True, mode=0o700)
    (data_dir / "secrets" / "jwt-secret").write_text("dev-" + SECRET)
    (data_dir / "secrets" / "jwt-secret").chmod(0o644)
    monkeypatch.setenv("AOS_DATA_DIR", str(data_dir))
    result = await run("token", "mint")
    assert result.code == 2 and "mode 0644" in result.err and "Traceback" not in result.err


@pytest.mark.parametrize("argv, message", [
    (["token", "mint"], "no signing secret"),  # AOS_DATA_DIR is empty and nothing is configured
    (["token", "mint", "--secret-file", "/nonexistent/secret"], "--secret-file"),
    (["token", "mint", "--ttl", "soon"], "--ttl"),
    (["token", "mint", "--ttl", "2d"], "AOS_AUTH_MAX_TOKEN_LIFETIME"),  # longer than the services accept
    (["token", "mint", "--scope", "everything"], "invalid choice"),
    (["export", "verify"], "EXPORT_ID or --offline ARTIFACT is required"),
    (["export", "create", "--run", "r", "--bundle", "SOC2"], "--format"),
    (["audit", "list", "--event-type", "Nope"], "one of: PolicyRuleCreated"),
    (["--timeout", "0", "audit", "list"], "--timeout must be positive"),
    (["ledger", "verify", "--checkpoint", "/nonexistent/cp.json"], "not a saved ledger checkpoint"),
    (["frobnicate"], "invalid choice"),
])
async def test_usage_errors_exit_2_without_traceback(run, argv, message):
    result = await run(*argv)
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err


async def test_an_unreachable_service_exits_3(run):
    result = await run("--logs", "127.0.0.1:1", "--timeout", "5", "audit", "list")
    assert result.code == 3
    assert "UNAVAILABLE" in result.err and "127.0.0.1:1" in result.err and "Traceback" not in result.err


def _chain(length: int) -> list[Link]:
    links, prev = [], hashing.GENESIS
    for seq in range(1, length + 1):
        content = hashing.sha256(b"entry %d" % seq)
        chain = hashing.chain_hash(prev, content)
        links.append(Link(seq, prev.hex(), content.hex(), chain.hex()))
        prev = chain
    return links


def _kinds(anomalies) -> list[tuple[int, str]]:
    return [(a.seq, integrity_pb2.AnomalyKind.Name(a.kind).removeprefix("ANOMALY_KIND_")) for a in anomalies]


def test_an_intact_chain_holds_its_checkpoint():
    links = _chain(5)
    assert chain_anomalies(list(reversed(links)), 3, links[2].chain_hash) == []  # walked newest first


def test_chain_anomalies_are_located_by_seq():
    links = _chain(6)
    rewritten = links[2]._replace(content_hash="00" * 32)  # content changed, hashes not recomputed
    assert _kinds(chain_anomalies([*links[:2], rewritten, *links[3:]], 0, "")) == [(3, "CHAIN_MISMATCH")]
    assert _kinds(chain_anomalies([*links[:3], *links[4:]], 0, "")) == [(5, "SEQUENCE_GAP")]
    relinked = links[3]._replace(prev_hash=links[1].chain_hash)
    assert _kinds(chain_anomalies([*links[:3], relinked, *links[4:]], 0, "")) == [
        (4, "BROKEN_LINK"), (4, "CHAIN_MISMATCH")]
    assert _kinds(chain_anomalies(links + [links[5]], 0, "")) == [(6, "SEQUENCE_DISORDER")]


def test_a_checkpoint_catches_truncation_and_rewritten_history():
    links = _chain(4)
    assert _kinds(chain_anomalies(links, 6, "ab" * 32)) == [(6, "TRUNCATION")]
    assert _kinds(chain_anomalies(links, 2, "ab" * 32)) == [(2, "CHECKPOINT_MISMATCH")]


def test_a_destination_ending_in_a_slash_is_a_directory(tmp_path):
    from aos_cli.commands.export import _destination
    target = _destination(f"{tmp_path}/out/")
    assert target.is_dir()
    assert not _destination(f"{tmp_path}/file.zip").exists()
