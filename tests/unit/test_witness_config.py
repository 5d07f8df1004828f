"""AOS_WITNESS_KEYS, AOS_LOG_ORIGIN and AOS_CHECKPOINT_INTERVAL_S are read at start: a value the
Export service cannot use stops it with a configuration error naming the variable."""
from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aos_recording import note
from aos_runtime.config import ConfigError, Settings
from aos_runtime.server import ServiceContext
from services.export.server import ExportService

WITNESS = note.cosigner_key("w.example", Ed25519PrivateKey.generate().public_key())
OTHER = note.cosigner_key("v.example", Ed25519PrivateKey.generate().public_key())


def service(tmp_path: Path, **env: str) -> ExportService:
    settings = Settings.from_env({"AOS_DATA_DIR": str(tmp_path / "aos"), **env})
    return ExportService(ServiceContext(db=None, page_tokens=None, settings=settings))  # type: ignore[arg-type]


def test_defaults_and_lists(tmp_path):
    default = service(tmp_path)
    assert default.witnesses == () and default.checkpoint_interval_s == 60
    assert default.logs.origin("ledger", "t1") == "aos-evidence.local/ledger/t1"
    both = service(tmp_path, AOS_WITNESS_KEYS=f" {WITNESS}, {OTHER} ", AOS_LOG_ORIGIN="log.example.org",
                   AOS_CHECKPOINT_INTERVAL_S="0")
    assert [k.vkey() for k in both.witnesses] == [WITNESS, OTHER] and both.checkpoint_interval_s == 0
    assert both.logs.origin("exports", "t1") == "log.example.org/exports/t1"


@pytest.mark.parametrize("env, named", [
    ({"AOS_WITNESS_KEYS": "not-a-key"}, "AOS_WITNESS_KEYS"),
    ({"AOS_WITNESS_KEYS": note.verifier_key("log.example", Ed25519PrivateKey.generate().public_key())},
     "AOS_WITNESS_KEYS"),                                    # a log (0x01) key is no witness key
    ({"AOS_WITNESS_KEYS": WITNESS[:-4] + "AAA="}, "AOS_WITNESS_KEYS"),  # key id no longer matches
    ({"AOS_LOG_ORIGIN": "has space"}, "AOS_LOG_ORIGIN"),
])
def test_an_unusable_value_stops_the_start(tmp_path, env, named):
    with pytest.raises(ConfigError, match=named):
        service(tmp_path, **env)


def test_a_negative_interval_is_refused():
    with pytest.raises(ConfigError, match="AOS_CHECKPOINT_INTERVAL_S"):
        Settings.from_env({"AOS_CHECKPOINT_INTERVAL_S": "-1"})
