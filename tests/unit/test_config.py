"""Configuration from the environment: defaults, validation, no silent typos."""
import pytest

from aos_runtime.config import ENV_VARS, ConfigError, Settings


def test_defaults_match_spec():
    s = Settings.from_env({})
    assert s.database_url is None
    assert s.bind_host == "127.0.0.1"
    assert dict(s.ports) == {"overview": 50051, "logs": 50052, "export": 50053, "gateway": 8080}
    assert s.audience == "aos-evidence"
    assert s.migrate_on_start is True


def test_overrides():
    s = Settings.from_env({"AOS_LOGS_PORT": "6000", "DATABASE_URL": "postgresql://x@h/db",
                           "AOS_MIGRATE_ON_START": "false", "AOS_LOG_LEVEL": "debug"})
    assert s.ports["logs"] == 6000 and s.database_url == "postgresql://x@h/db"
    assert s.migrate_on_start is False and s.log_level == "DEBUG"


@pytest.mark.parametrize("env", [{"AOS_LOGS_PORT": "http"}, {"AOS_DB_POOL_SIZE": "0"},
                                 {"AOS_MIGRATE_ON_START": "maybe"}, {"AOS_LOG_LEVEL": "LOUD"},
                                 {"AOS_LOGS_PROT": "1"}])
def test_bad_values_and_unknown_names_are_refused(env):
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_every_variable_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [v.name for v in ENV_VARS if f"`{v.name}`" not in readme]
    assert not missing, f"README lacks: {missing}"
