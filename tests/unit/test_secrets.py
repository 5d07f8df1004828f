"""Secrets and keys (issue #17, part 4): where development secrets live and how they are
written, which key files are refused, and that a production-like run (DATABASE_URL set)
never silently generates a throw-away key."""
from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aos_recording import dsse
from aos_runtime import auth, local_state
from aos_runtime.config import ConfigError, Settings
from aos_runtime.local_state import SecretFileError, dev_secret, read_dev_secret
from aos_runtime.pagination import PageTokens
from aos_runtime.service_main import token_verifier
from services.export.server import key_ring

ROOT = Path(__file__).resolve().parents[2]
SECRET = "k" * 48
DB = "postgresql://aos@db.invalid:5432/aos"  # never connected to: the refusals come first


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"AOS_DATA_DIR": str(tmp_path / "aos"), **env})


def public_of(pem_file: Path) -> dsse.PublicKey:
    """The public half of the private key on disk, read with cryptography itself."""
    private = serialization.load_pem_private_key(pem_file.read_bytes(), password=None)
    return dsse.PublicKey.from_raw(private.public_key().public_bytes(serialization.Encoding.Raw,
                                                                     serialization.PublicFormat.Raw))


def signing_key_file(path: Path, file_mode: int = 0o600) -> Path:
    path.write_bytes(dsse.SigningKey.generate().private_pem())
    path.chmod(file_mode)
    return path


# --- where and how development secrets are written --------------------------------------

def test_dev_secrets_are_0600_in_a_0700_directory_and_the_data_dir_stays_traversable(tmp_path):
    data_dir = tmp_path / "aos"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    first = dev_secret(data_dir, "jwt-secret")
    assert len(first) >= 32 and dev_secret(data_dir, "jwt-secret") == first  # created once
    assert mode(data_dir / "secrets") == 0o700 and mode(data_dir / "secrets" / "jwt-secret") == 0o600
    # The embedded Postgres runs as another OS user and keeps its data in AOS_DATA_DIR/pgdata.
    assert mode(data_dir) == 0o755
    assert sorted(p.name for p in (data_dir / "secrets").iterdir()) == ["jwt-secret"]  # no temp files left
    assert not (data_dir / "jwt-secret").exists()


def test_dev_secrets_are_0700_even_under_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        dev_secret(tmp_path / "aos", "page-token-secret")
    finally:
        os.umask(old)
    assert mode(tmp_path / "aos" / "secrets") == 0o700
    assert mode(tmp_path / "aos" / "secrets" / "page-token-secret") == 0o600


RACER = """
import os, sys, time
from aos_runtime.local_state import dev_secret
while not os.path.exists(sys.argv[2]):  # all start together once every racer is ready
    time.sleep(0.001)
print(dev_secret(sys.argv[1], "page-token-secret"))
"""


def test_concurrent_first_use_agrees_on_one_secret(tmp_path):
    # Separate processes (not forked from this one, which may run gRPC threads), released at once.
    go = tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / "aos"), str(go)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True) for _ in range(12)]
    time.sleep(2)  # imports done
    go.touch()
    values = {racer.communicate(timeout=60)[0].strip() for racer in racers}
    assert all(racer.returncode == 0 for racer in racers)
    assert len(values) == 1 and len(values.pop()) >= 32
    assert [p.name for p in (tmp_path / "aos" / "secrets").iterdir()] == ["page-token-secret"]


def test_a_writer_that_loses_the_race_takes_the_winners_secret(tmp_path, monkeypatch):
    """Deterministically, the interleaving the test above can only hope for: another process
    creates the secret after this one found it missing and before it writes its own."""
    data_dir = tmp_path / "aos"
    target = data_dir / "secrets" / "jwt-secret"
    mkstemp = tempfile.mkstemp

    def meanwhile_another_process_wins(*args, **kwargs):  # between the exists() check and the write
        target.write_text("the-winners-secret-" + "w" * 32)
        target.chmod(0o600)
        return mkstemp(*args, **kwargs)

    monkeypatch.setattr(local_state.tempfile, "mkstemp", meanwhile_another_process_wins)
    assert dev_secret(data_dir, "jwt-secret") == "the-winners-secret-" + "w" * 32
    assert [p.name for p in (data_dir / "secrets").iterdir()] == ["jwt-secret"]  # its own temp file removed


def test_legacy_secrets_move_into_secrets_and_keep_their_value(tmp_path):
    data_dir = tmp_path / "aos"
    data_dir.mkdir()
    for name, value in (("jwt-secret", "legacy-jwt-" + "x" * 40), ("page-token-secret", "legacy-page-" + "y" * 40)):
        (data_dir / name).write_text(value)
        (data_dir / name).chmod(0o600)  # as the previous version wrote them
    assert dev_secret(data_dir, "jwt-secret") == "legacy-jwt-" + "x" * 40
    assert read_dev_secret(data_dir, "page-token-secret") == "legacy-page-" + "y" * 40
    assert sorted(p.name for p in (data_dir / "secrets").iterdir()) == ["jwt-secret", "page-token-secret"]
    assert not (data_dir / "jwt-secret").exists() and not (data_dir / "page-token-secret").exists()
    assert mode(data_dir / "secrets" / "jwt-secret") == 0o600


def test_a_legacy_signing_key_moves_and_keeps_signing_as_before(tmp_path):
    """An existing .aos/ keeps its key id: envelopes it signed still verify under the ring."""
    data_dir = tmp_path / "aos"
    data_dir.mkdir()
    legacy = signing_key_file(data_dir / dsse.DEV_SIGNING_KEY_FILE)
    before = dsse.KeyRing.load(legacy).active.public.key_id
    ring = key_ring(settings(tmp_path))
    assert ring.active.public.key_id == before
    assert not legacy.exists() and mode(data_dir / "secrets" / dsse.DEV_SIGNING_KEY_FILE) == 0o600
    assert key_ring(settings(tmp_path)).active.public.key_id == before  # and stays


def test_reading_never_creates(tmp_path):
    assert read_dev_secret(tmp_path / "aos", "jwt-secret") is None
    assert not (tmp_path / "aos").exists()


# --- files others could read, write or own ----------------------------------------------

@pytest.mark.parametrize("file_mode", [0o644, 0o640, 0o604, 0o620])
def test_a_dev_secret_others_can_access_is_refused(tmp_path, file_mode):
    data_dir = tmp_path / "aos"
    dev_secret(data_dir, "jwt-secret")
    (data_dir / "secrets" / "jwt-secret").chmod(file_mode)
    with pytest.raises(SecretFileError, match=f"mode {file_mode:04o}"):
        dev_secret(data_dir, "jwt-secret")


def test_a_legacy_secret_others_could_read_is_refused_not_moved(tmp_path):
    data_dir = tmp_path / "aos"
    data_dir.mkdir()
    (data_dir / "jwt-secret").write_text("z" * 48)
    (data_dir / "jwt-secret").chmod(0o644)
    with pytest.raises(SecretFileError, match="mode 0644"):
        dev_secret(data_dir, "jwt-secret")
    assert (data_dir / "jwt-secret").exists() and not (data_dir / "secrets" / "jwt-secret").exists()


def test_a_loosened_secrets_directory_is_refused(tmp_path):
    data_dir = tmp_path / "aos"
    dev_secret(data_dir, "jwt-secret")
    (data_dir / "secrets").chmod(0o755)
    with pytest.raises(SecretFileError, match="chmod 700"):
        dev_secret(data_dir, "jwt-secret")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_secret_owned_by_another_user_is_refused(tmp_path):
    data_dir = tmp_path / "aos"
    dev_secret(data_dir, "jwt-secret")
    os.chown(data_dir / "secrets" / "jwt-secret", 65534, 65534)  # nobody
    with pytest.raises(SecretFileError, match="owned by uid 65534"):
        dev_secret(data_dir, "jwt-secret")
    key = signing_key_file(tmp_path / "signing.pem")
    os.chown(key, 65534, 65534)
    with pytest.raises(SecretFileError, match="AOS_EXPORT_SIGNING_KEY_FILE"):
        key_ring(settings(tmp_path, AOS_EXPORT_SIGNING_KEY_FILE=str(key)))


def test_a_configured_signing_key_others_can_read_is_refused(tmp_path):
    key = signing_key_file(tmp_path / "signing.pem", 0o644)
    with pytest.raises(SecretFileError, match=r"AOS_EXPORT_SIGNING_KEY_FILE .* mode 0644"):
        key_ring(settings(tmp_path, AOS_EXPORT_SIGNING_KEY_FILE=str(key)))
    key.chmod(0o600)
    assert key_ring(settings(tmp_path, AOS_EXPORT_SIGNING_KEY_FILE=str(key))).active.public == public_of(key)


def test_a_missing_signing_key_file_is_a_clear_error(tmp_path):
    with pytest.raises(SecretFileError, match="AOS_EXPORT_SIGNING_KEY_FILE"):
        key_ring(settings(tmp_path, AOS_EXPORT_SIGNING_KEY_FILE=str(tmp_path / "absent.pem")))


def test_a_public_jwt_key_needs_no_secrecy(tmp_path):
    pem = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    public = tmp_path / "jwt.pub"
    public.write_bytes(pem)
    public.chmod(0o644)
    verifier = auth.TokenVerifier.from_settings(settings(tmp_path, AOS_AUTH_JWT_PUBLIC_KEY_FILE=str(public)))
    assert verifier.audience == "aos-evidence"


# --- DATABASE_URL set: no throw-away keys unless AOS_DEV_KEYS -----------------------------

def test_with_database_url_a_missing_page_token_secret_is_refused(tmp_path):
    production = settings(tmp_path, DATABASE_URL=DB)
    with pytest.raises(ConfigError, match="AOS_PAGE_TOKEN_SECRET is not set"):
        PageTokens.from_settings(production)
    assert not (tmp_path / "aos" / "secrets").exists()  # nothing generated
    # Configured: used as given, nothing generated either.
    configured = dataclasses.replace(production, page_token_secret="p" * 40)
    assert PageTokens.from_settings(configured).key == b"p" * 40
    assert not (tmp_path / "aos" / "secrets").exists()
    # AOS_DEV_KEYS=1 allows a development one.
    allowed = settings(tmp_path, DATABASE_URL=DB, AOS_DEV_KEYS="1")
    assert PageTokens.from_settings(allowed).key == dev_secret(tmp_path / "aos", "page-token-secret").encode()


def test_with_database_url_a_missing_jwt_key_or_signing_key_is_refused(tmp_path):
    production = settings(tmp_path, DATABASE_URL=DB)
    with pytest.raises(ConfigError, match="AOS_AUTH_JWT_SECRET is not set"):
        token_verifier(production)
    with pytest.raises(ConfigError, match="AOS_EXPORT_SIGNING_KEY_FILE is not set"):
        key_ring(production)
    assert not (tmp_path / "aos" / "secrets").exists()
    allowed = settings(tmp_path, DATABASE_URL=DB, AOS_DEV_KEYS="true")
    assert token_verifier(allowed).max_lifetime_s == 86400
    # The development key AOS_DEV_KEYS allows is the one written (0600) under secrets/.
    dev_key = tmp_path / "aos" / "secrets" / dsse.DEV_SIGNING_KEY_FILE
    assert key_ring(allowed).active.public == public_of(dev_key) and mode(dev_key) == 0o600


def test_the_embedded_default_still_generates_development_keys(tmp_path):
    embedded = settings(tmp_path)  # DATABASE_URL unset: make run, make test
    secrets_dir = tmp_path / "aos" / "secrets"
    ring = key_ring(embedded)
    assert PageTokens.from_settings(embedded).key == (secrets_dir / "page-token-secret").read_text().strip().encode()
    assert token_verifier(embedded)._keys == {"HS256": (secrets_dir / "jwt-secret").read_text().strip()}
    assert ring.active.public == public_of(secrets_dir / dsse.DEV_SIGNING_KEY_FILE)
    assert sorted(p.name for p in secrets_dir.iterdir()) == [dsse.DEV_SIGNING_KEY_FILE, "jwt-secret",
                                                               "page-token-secret"]
    # Another process (a second service of the suite) loads the same key, not one of its own.
    other = subprocess.run([sys.executable, "-c", KEY_ID_OF_THE_RING, str(tmp_path / "aos")], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == ring.active.public.key_id


KEY_ID_OF_THE_RING = """
import sys
from pathlib import Path
from aos_runtime.config import Settings
from services.export.server import key_ring
print(key_ring(Settings.from_env({"AOS_DATA_DIR": sys.argv[1]})).active.public.key_id)
"""


def test_the_development_ring_lists_the_retired_public_keys_beside_it(tmp_path):
    """AOS_DATA_DIR/export-signing-keys/retired/*.pem stay verifiable; other files there are no keys."""
    old = dsse.SigningKey.generate()
    retired_dir = tmp_path / "aos" / dsse.DEV_RETIRED_KEYS_DIR
    retired_dir.mkdir(parents=True)
    dsse.write_public_key_pem(old.public, retired_dir / "2025.pem")
    (retired_dir / "README.txt").write_text("not a key")
    ring = key_ring(settings(tmp_path))
    assert [k.key_id for k in ring.public_keys()] == [ring.active.public.key_id, old.public.key_id]
    assert ring.get(old.public.key_id).status == "RETIRED"


def _start(module: str, tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_") and k != "DATABASE_URL"}
    env.update(DATABASE_URL=DB, AOS_DATA_DIR=str(tmp_path / "aos"), **extra)
    return subprocess.run([sys.executable, "-m", module], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("module, extra, variable", [
    ("services", {}, "AOS_AUTH_JWT_SECRET"),
    ("services", {"AOS_AUTH_JWT_SECRET": SECRET}, "AOS_PAGE_TOKEN_SECRET"),
    ("services", {"AOS_AUTH_JWT_SECRET": SECRET, "AOS_PAGE_TOKEN_SECRET": SECRET}, "AOS_EXPORT_SIGNING_KEY_FILE"),
    ("services.logs", {"AOS_AUTH_JWT_SECRET": SECRET}, "AOS_PAGE_TOKEN_SECRET"),
    ("services.overview", {"AOS_PAGE_TOKEN_SECRET": SECRET}, "AOS_AUTH_JWT_SECRET"),
])
def test_the_suite_and_a_service_stop_at_start_naming_the_missing_variable(tmp_path, module, extra, variable):
    done = _start(module, tmp_path, **extra)
    assert done.returncode != 0
    assert f"{variable} is not set" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "aos" / "secrets").exists()  # nothing generated on the way


def test_short_secrets_stop_the_suite_at_start(tmp_path):
    done = _start("services", tmp_path, AOS_AUTH_JWT_SECRET="too-short")
    assert done.returncode != 0 and "AOS_AUTH_JWT_SECRET must be at least 32 bytes" in done.stderr, done.stderr
    done = _start("services.logs", tmp_path, AOS_AUTH_JWT_SECRET=SECRET, AOS_PAGE_TOKEN_SECRET="short")
    assert done.returncode != 0 and "AOS_PAGE_TOKEN_SECRET must be at least 32 bytes" in done.stderr, done.stderr


def test_settings_validate_the_new_variables():
    assert Settings.from_env({}).max_token_lifetime_s == 86400 and Settings.from_env({}).dev_keys is False
    assert Settings.from_env({"AOS_AUTH_MAX_TOKEN_LIFETIME": "3600", "AOS_DEV_KEYS": "1"}).max_token_lifetime_s == 3600
    for env in ({"AOS_AUTH_MAX_TOKEN_LIFETIME": "0"}, {"AOS_AUTH_MAX_TOKEN_LIFETIME": "1d"},
                {"AOS_DEV_KEYS": "sometimes"}, {"AOS_PAGE_TOKEN_SECRET": "x" * 31}):
        with pytest.raises(ConfigError):
            Settings.from_env(env)
