"""Configuration from the environment: defaults, validation, no silent typos."""
import pytest

from aos_runtime.config import ENV_VARS, ConfigError, Settings


def test_defaults_match_spec():
    s = Settings.from_env({})
    assert s.database_url is None
    assert s.bind_host == "127.0.0.1"
    assert dict(s.ports) == {"overview": 50051, "logs": 50052, "export": 50053, "ingest": 50054,
                              "gateway": 8080}
    assert s.audience == "aos-evidence"
    assert s.migrate_on_start is True


def test_overrides():
    s = Settings.from_env({"AOS_LOGS_PORT": "6000", "DATABASE_URL": "postgresql://x@h/db",
                           "AOS_MIGRATE_ON_START": "false", "AOS_LOG_LEVEL": "debug"})
    assert s.ports["logs"] == 6000 and s.database_url == "postgresql://x@h/db"
    assert s.migrate_on_start is False and s.log_level == "DEBUG"


@pytest.mark.parametrize("env", [{"AOS_LOGS_PORT": "http"}, {"AOS_DB_POOL_SIZE": "0"},
                                 {"AOS_MIGRATE_ON_START": "maybe"}, {"AOS_LOG_LEVEL": "LOUD"},
                                 {"AOS_LOGS_PROT": "1"}, {"AOS_MAX_UNREQUESTED_S": "0"},
                                 {"AOS_MAX_PENDING_CALLS": "-1"}, {"AOS_HEAVY_NICE": "20"}, {"AOS_HEAVY_NICE": "-1"},
                                 {"AOS_MAX_PENDING_CALLS": "8", "AOS_PENDING_CALLS_EARLY_DROP": "9"}])
def test_bad_values_and_unknown_names_are_refused(env):
    with pytest.raises(ConfigError):
        Settings.from_env(env)


# AOS_<SERVICE>_ADDRESS: one instance, a static list, or every address a DNS name returns.
@pytest.mark.parametrize("target", ["logs:50052", "10.0.0.7:50052", "[::1]:50052", "ipv4:10.0.0.1:1,10.0.0.2:2",
                                    "dns:///logs.internal:50052", "dns://10.0.0.53/logs:50052", "unix:/run/aos.sock"])
def test_service_addresses_take_grpc_targets(target):
    assert Settings.from_env({"AOS_LOGS_ADDRESS": target}).addresses["logs"] == target


@pytest.mark.parametrize("target", ["logs", "logs:port", "http://logs:50052", "ipv4:", "ipv4:10.0.0.1:1,",
                                    "dns:logs", "logs:50052 ", "a b:1"])
def test_service_addresses_refuse_what_is_not_a_target(target):
    with pytest.raises(ConfigError, match="AOS_LOGS_ADDRESS must be a gRPC target"):
        Settings.from_env({"AOS_LOGS_ADDRESS": target})


def test_every_variable_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [v.name for v in ENV_VARS if f"`{v.name}`" not in readme]
    assert not missing, f"README lacks: {missing}"


def test_the_pending_call_bound_becomes_grpc_cores_channel_arguments():
    """AOS_MAX_PENDING_CALLS and friends reach the server as gRPC core's own arguments
    (tests/reliability/test_fairness.py shows the core acting on them); 0 leaves gRPC's."""
    from aos_runtime.server import PendingCalls, server_options

    s = Settings.from_env({"AOS_MAX_PENDING_CALLS": "8", "AOS_PENDING_CALLS_EARLY_DROP": "2",
                           "AOS_MAX_UNREQUESTED_S": "3"})
    options = dict(server_options(1024, pending=PendingCalls(s.max_pending_calls, s.pending_calls_early_drop,
                                                              s.max_unrequested_s)))
    assert options["grpc.server.max_pending_requests_hard_limit"] == 8
    assert options["grpc.server.max_pending_requests"] == 2
    assert options["grpc.server_max_unrequested_time_in_server"] == 3
    assert not {k for k, _ in server_options(1024, pending=PendingCalls(0, 0, 1)) if "pending" in k or "unrequested" in k}
