"""The export service does not start without a usable signing key ring (issue #18).

A servicer built with no settings had no key ring and answered its first signing or
verifying call with an AttributeError; an unreadable key file was a traceback in a
worker after the service had migrated and forked. Both now stop the service at start
with a configuration error that names the variable.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aos_recording import dsse
from aos_runtime.config import ConfigError, Settings
from aos_runtime.server import ServiceContext
from services.export.server import ExportService, key_ring

ROOT = Path(__file__).resolve().parents[2]
SECRET = "k" * 48
DB = "postgresql://aos@db.invalid:5432/aos"  # never connected to: the refusal comes first


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"AOS_DATA_DIR": str(tmp_path / "aos"), **env})


def private_file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    path.chmod(0o600)
    return path


def test_the_export_servicer_is_not_built_without_its_key_ring(tmp_path):
    with pytest.raises(ConfigError, match="signing key ring"):
        ExportService(ServiceContext(db=None, page_tokens=None))
    built = ExportService(ServiceContext(db=None, page_tokens=None, settings=settings(tmp_path)))
    assert built.keys.active.public.key_id


@pytest.mark.parametrize("content", [b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
                         ids=["text", "bad-pem"])
def test_an_unusable_signing_key_file_is_a_configuration_error(tmp_path, content):
    key = private_file(tmp_path / "signing.pem", content)
    with pytest.raises(ConfigError, match=rf"AOS_EXPORT_SIGNING_KEY_FILE.*{key}: not an unencrypted PKCS#8"):
        key_ring(settings(tmp_path, AOS_EXPORT_SIGNING_KEY_FILE=str(key)))


def test_an_unreadable_verification_key_file_is_a_configuration_error(tmp_path):
    key = private_file(tmp_path / "signing.pem", dsse.SigningKey.generate().private_pem())
    absent = tmp_path / "retired.pem"
    with pytest.raises(ConfigError, match=rf"AOS_EXPORT_VERIFICATION_KEY_FILES.*{absent}: cannot read"):
        key_ring(settings(tmp_path, AOS_EXPORT_SIGNING_KEY_FILE=str(key),
                          AOS_EXPORT_VERIFICATION_KEY_FILES=str(absent)))


def _start_export(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_") and k != "DATABASE_URL"}
    env.update(DATABASE_URL=DB, AOS_DATA_DIR=str(tmp_path / "aos"), AOS_AUTH_JWT_SECRET=SECRET,
               AOS_PAGE_TOKEN_SECRET=SECRET, **extra)
    return subprocess.run([sys.executable, "-m", "services.export"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_the_export_service_alone_stops_at_start_without_a_signing_key(tmp_path):
    done = _start_export(tmp_path)
    assert done.returncode != 0
    assert "AOS_EXPORT_SIGNING_KEY_FILE is not set" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "aos" / "secrets").exists()  # no throw-away key generated on the way


def test_the_export_service_alone_stops_at_start_with_an_unusable_signing_key(tmp_path):
    key = private_file(tmp_path / "signing.pem", b"not a key")
    done = _start_export(tmp_path, AOS_EXPORT_SIGNING_KEY_FILE=str(key))
    assert done.returncode != 0
    assert done.stderr.startswith("configuration error: export signing keys"), done.stderr
    assert "not an unencrypted PKCS#8" in done.stderr and "Traceback" not in done.stderr, done.stderr
