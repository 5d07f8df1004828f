"""The container deployment files, checked without a Docker engine.

- docker-compose.yml validates against the vendored Compose Specification schema
  (tests/deploy/vendor/compose_spec.json, see the README there);
- its environment holds only variables the suite understands, with values
  Settings.from_env accepts; published ports and healthchecks match the services;
  the migrate job gates the services;
- only the migrate job holds the admin DSN; each service holds its own login's DSN and
  password, no other; passwords and secrets are required, never defaulted; every
  instance shares the page-token secret and Export's signing key;
- the Dockerfile's runtime stage is not root and runs code that exists in the repo;
- tools/grpc_health_probe.py (the healthcheck) exits 0 only for SERVING.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.support import COMPOSE_FILE, REQUIRED, ROOT
from tests.e2e.support import free_port

try:
    from aos_runtime.config import ENV_VARS, SERVICES, Settings
except ImportError:  # run without the project installed / on PYTHONPATH
    sys.path.insert(0, str(ROOT))
    from aos_runtime.config import ENV_VARS, SERVICES, Settings

DOCKERFILE = ROOT / "Dockerfile"
SCHEMA_FILE = Path(__file__).resolve().parent / "vendor" / "compose_spec.json"
PROBE = ROOT / "tools" / "grpc_health_probe.py"

KNOWN_VARS = {v.name: v for v in ENV_VARS}
PLACEHOLDER = "placeholder-from-test-32-bytes-long"  # secrets must be >= 32 bytes
APP_SERVICES = tuple(SERVICES)  # overview, logs, export: python -m services.<name>
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$")


# ---- helpers --------------------------------------------------------------------

def load_compose() -> dict:
    with COMPOSE_FILE.open() as f:
        return yaml.safe_load(f)


_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, against ``env`` (not the test runner's environment).

    ``${VAR:?msg}`` / ``${VAR?msg}`` that would be an error become PLACEHOLDER;
    ``${VAR:-d}`` / ``${VAR-d}`` use their default; plain ``${VAR}`` unset is "".
    """
    def substitute(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        present = name in env
        value = env.get(name, "")
        if op in (":-", ":?"):
            missing = not value
        else:
            missing = not present
        if not missing or op is None:
            return value
        return arg if op.endswith("-") else PLACEHOLDER

    return _INTERPOLATION.sub(substitute, value)


def environment(service: dict) -> dict[str, str]:
    """A service's `environment:` (mapping or list form), values as written."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.split("=", 1) if "=" in item else [item, ""] for item in env]
        env = {k: v for k, v in pairs}
    return {k: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in env.items()}


def interpolated_environment(service: dict) -> dict[str, str]:
    return {k: interpolate(v, {}) for k, v in environment(service).items()}


def as_argv(command) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def healthcheck_argv(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return shlex.split(test)
    kind, *rest = test
    if kind == "CMD-SHELL":
        return shlex.split(" ".join(rest))
    assert kind == "CMD", f"healthcheck test must start with CMD or CMD-SHELL, got {kind!r}"
    return list(rest)


def published_ports(service: dict) -> list[tuple[str | None, int, int]]:
    """(host_ip, published, target) for each entry of `ports:`."""
    out = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out.append((entry.get("host_ip"), int(entry["published"]), int(entry["target"])))
            continue
        spec = interpolate(str(entry), {}).split("/", 1)[0]  # the defaults of ${VAR:-default}
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            ip, published, target = parts
        elif len(parts) == 2:
            ip, (published, target) = None, parts
        else:
            ip, published, target = None, parts[0], parts[0]
        out.append((ip, int(published), int(target)))
    return out


def python_module_exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return (path / "__main__.py").is_file() or path.with_suffix(".py").is_file()


def assert_python_command_exists(argv: list[str], where: str) -> None:
    """``python -m pkg.mod ...`` or ``python path/to/script.py ...``: the target is in the repo."""
    assert argv and Path(argv[0]).name.startswith("python"), f"{where}: expected a python command, got {argv}"
    if argv[1] == "-m":
        assert python_module_exists(argv[2]), f"{where}: module {argv[2]} is not in the repo"
    else:
        script = argv[1].removeprefix("/app/")
        assert (ROOT / script).is_file(), f"{where}: {script} is not in the repo"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        logical.append(current)
        current = ""
    if current:
        logical.append(current)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in logical]


def dockerfile_stages() -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    """Global ARG defaults and the instructions of each stage (FROM first)."""
    args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for instruction, rest in dockerfile_instructions():
        if instruction == "FROM":
            stages.append([(instruction, rest)])
        elif stages:
            stages[-1].append((instruction, rest))
        elif instruction == "ARG" and "=" in rest:
            name, default = rest.split("=", 1)
            args[name.strip()] = default.strip().strip('"')
    return args, stages


def exec_form(rest: str) -> list[str]:
    try:
        argv = json.loads(rest)
    except json.JSONDecodeError:
        return shlex.split(rest)
    assert isinstance(argv, list)
    return argv


# ---- docker-compose.yml -------------------------------------------------------------

def test_compose_validates_against_the_vendored_compose_spec():
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    declared = schema["$schema"]
    # The schema declares "http://json-schema.org/draft/2019-09/schema#"; jsonschema
    # registers the drafts by their canonical (https, no fragment) ids.
    canonical = urlsplit(declared)._replace(scheme="https", fragment="").geturl()
    validator_cls = jsonschema.validators.validator_for({"$schema": canonical}, default=None)
    assert validator_cls is not None, f"no validator for the declared draft {declared}"
    assert "2019-09" in declared and validator_cls is jsonschema.Draft201909Validator
    validator_cls.check_schema(schema)

    compose = load_compose()
    errors = sorted(validator_cls(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_has_the_expected_services():
    services = load_compose()["services"]
    assert {"postgres", "migrate", *APP_SERVICES} <= set(services)


def test_every_environment_key_is_known():
    for name, service in load_compose()["services"].items():
        keys = set(environment(service))
        if interpolate(str(service.get("image", "")), {}).startswith("postgres"):
            bad = sorted(k for k in keys if not k.startswith("POSTGRES_"))
            assert not bad, f"{name}: not postgres image variables: {bad}"
        else:
            unknown = sorted(keys - set(KNOWN_VARS))
            assert not unknown, f"{name}: not in aos_runtime.config.ENV_VARS: {unknown}"


def test_interpolation_helper():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:?m}/${UNSET:?m}/${EMPTY:-d}/${EMPTY-d}/${UNSET}/$$/$SET", env) == \
        f"x/{PLACEHOLDER}/d//" + "/$/x"


@pytest.mark.parametrize("name", ["migrate", "demo", "cli", *APP_SERVICES])
def test_environment_values_are_accepted_by_settings(name):
    service = load_compose()["services"][name]
    env = interpolated_environment(service)
    assert not [v for v in env.values() if "${" in v], env
    settings = Settings.from_env(env)  # must not raise ConfigError
    if name in ("demo", "cli"):
        assert settings.database_url is None
        holds = {k for k, v in settings.service_database_urls.items() if v}
        assert holds == ({"producer"} if name == "demo" else set()), f"{name} holds the DSNs of {sorted(holds)}"
        return
    if name == "migrate":
        assert settings.database_url, "migrate: DATABASE_URL (the admin DSN) is not set"
        assert urlsplit(settings.database_url).hostname == "postgres"
        # It provisions every login with the password the services will use.
        for login, url in settings.service_database_urls.items():
            assert url and urlsplit(url).username == f"aos_{login}", f"migrate: no {login} DSN to provision"
    else:
        assert settings.database_url is None, f"{name}: holds DATABASE_URL, the admin DSN"
        own = settings.service_database_urls[name]
        assert own and urlsplit(own).hostname == "postgres" and urlsplit(own).username == f"aos_{name}"
        assert [k for k, v in settings.service_database_urls.items() if v] == [name], \
            f"{name}: holds another login's DSN"
    if name in APP_SERVICES:
        assert settings.bind_host == "0.0.0.0", f"{name}: must listen on all interfaces in a container"
        assert settings.migrate_on_start is False, f"{name}: migrate job owns migrations"
        assert settings.jwt_secret or settings.jwt_public_key_file, f"{name}: no JWT key configured"


PASSWORD_VARIABLES = {"admin": "POSTGRES_PASSWORD", "overview": "AOS_OVERVIEW_DB_PASSWORD",
                      "logs": "AOS_LOGS_DB_PASSWORD", "export": "AOS_EXPORT_DB_PASSWORD",
                      "ingest": "AOS_INGEST_DB_PASSWORD", "producer": "AOS_PRODUCER_DB_PASSWORD"}


def test_each_service_holds_only_its_own_database_password():
    """Interpolated with a distinct value per password variable: the admin's password reaches
    only postgres and the migrate job; each service holds its own and no other."""
    marks = {variable: f"mark-{who}-{'x' * 32}" for who, variable in PASSWORD_VARIABLES.items()}
    services = load_compose()["services"]
    for name, service in services.items():
        env = {k: interpolate(v, marks) for k, v in environment(service).items()}
        holds = {who for who, variable in PASSWORD_VARIABLES.items() if any(marks[variable] in v for v in env.values())}
        if name == "migrate":
            assert holds == set(PASSWORD_VARIABLES), holds
        elif name == "postgres":
            assert holds == {"admin"}, holds
        elif name in APP_SERVICES:
            assert holds == {name}, f"{name} holds the passwords of {sorted(holds)}"
            assert "DATABASE_URL" not in env
        elif name == "demo":
            assert holds == {"producer"}, f"the demo loader holds the passwords of {sorted(holds)}"
        else:
            assert holds == set(), f"{name} holds the passwords of {sorted(holds)}"


@pytest.mark.parametrize("variable", sorted(PASSWORD_VARIABLES.values()))
def test_database_passwords_are_required_not_defaulted(variable):
    text = COMPOSE_FILE.read_text()
    uses = re.findall(r"\$\{" + variable + r"([^}]*)\}", text)
    assert uses and all(re.fullmatch(r":?\?.*", u) for u in uses), f"{variable}: {uses} (a default is a known password)"


def test_postgres_trusts_no_connection():
    env = environment(load_compose()["services"]["postgres"])
    assert env.get("POSTGRES_HOST_AUTH_METHOD", "scram-sha-256") not in ("trust", "password", "md5")
    args = env.get("POSTGRES_INITDB_ARGS", "")
    assert "--auth-local=scram-sha-256" in args and "--auth-host=scram-sha-256" in args, args


def test_every_instance_shares_the_page_token_secret_and_the_signing_key():
    """Recreated or scaled (`--scale logs=3`), every instance seals page tokens with the one
    secret and Export signs with the one key: both come from the deployment, never generated."""
    compose = load_compose()
    services = compose["services"]
    for name in APP_SERVICES:
        raw = environment(services[name]).get("AOS_PAGE_TOKEN_SECRET", "")
        assert re.fullmatch(r"\$\{AOS_PAGE_TOKEN_SECRET:?\?[^}]*\}", raw), f"{name}: {raw!r}"
    export = services["export"]
    key_file = environment(export)["AOS_EXPORT_SIGNING_KEY_FILE"]
    mounted = [s if isinstance(s, str) else s["source"] for s in export.get("secrets", [])]
    assert mounted and key_file == f"/run/secrets/{mounted[0]}", (key_file, mounted)
    assert "file" in compose["secrets"][mounted[0]]


def test_dockerignore_keeps_local_state_and_credentials_out_of_the_image():
    patterns = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for needed in (".venv", ".aos", ".git", ".env", "secrets", "**/__pycache__", ".pytest_cache"):
        assert needed in patterns, f".dockerignore does not exclude {needed}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_jwt_secret_comes_from_the_environment_and_is_required(name):
    raw = environment(load_compose()["services"][name]).get("AOS_AUTH_JWT_SECRET", "")
    assert re.fullmatch(r"\$\{AOS_AUTH_JWT_SECRET:?\?[^}]*\}", raw), \
        f"{name}: AOS_AUTH_JWT_SECRET must be ${{AOS_AUTH_JWT_SECRET:?...}}, not {raw!r}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_services_publish_no_host_port_so_they_scale(name):
    """`docker compose up --scale logs=3`: replicas cannot share a host port or a container
    name; each service listens on its documented default port inside the network."""
    service = load_compose()["services"][name]
    assert not service.get("ports"), f"{name}: a published port stops --scale {name}=N"
    assert "container_name" not in service
    default = int(KNOWN_VARS[f"AOS_{name.upper()}_PORT"].default)
    assert [int(p) for p in service.get("expose", [])] == [default]
    configured = Settings.from_env(interpolated_environment(service)).ports[name]
    assert configured == default


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_command_and_image(name):
    compose = load_compose()
    service = compose["services"][name]
    argv = as_argv(service["command"])
    assert argv == ["python", "-m", f"services.{name}"]
    assert_python_command_exists(argv, name)
    assert service.get("image") == compose["services"]["migrate"].get("image"), "one image for the suite"
    assert (service.get("build") or {}).get("context", ".") in (".", "./")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_healthcheck_runs_the_probe(name):
    service = load_compose()["services"][name]
    argv = healthcheck_argv(service)
    assert any(part.endswith("tools/grpc_health_probe.py") for part in argv), argv
    assert_python_command_exists(argv, f"{name} healthcheck")
    addr = argv[argv.index("--addr") + 1]
    host, port = addr.rsplit(":", 1)
    assert host in ("127.0.0.1", "localhost")
    assert int(port) == Settings.from_env(interpolated_environment(service)).ports[name], \
        f"{name}: healthcheck probes another port"
    for key in ("interval", "timeout", "start_period"):
        if key in service["healthcheck"]:
            assert GO_DURATION.match(service["healthcheck"][key]), f"{name}: bad {key}"


def test_postgres_service():
    compose = load_compose()
    pg = compose["services"]["postgres"]
    # The official image unless POSTGRES_IMAGE names another (aos-postgres:local, tools/offline_images.sh).
    assert pg["image"] == "${POSTGRES_IMAGE:-postgres:16}"
    assert interpolate(pg["image"], {}) == "postgres:16"
    assert "pg_isready" in " ".join(healthcheck_argv(pg))
    named = [v.split(":", 1)[0] for v in pg.get("volumes", []) if isinstance(v, str)]
    named += [v["source"] for v in pg.get("volumes", []) if isinstance(v, dict) and v.get("type") == "volume"]
    assert any(n in (compose.get("volumes") or {}) for n in named), "postgres data needs a named volume"
    assert not pg.get("ports"), "postgres is not published to the host"


def test_migrate_job_gates_the_services():
    services = load_compose()["services"]
    migrate = services["migrate"]
    argv = as_argv(migrate["command"])
    assert argv[:3] == ["python", "-m", "aos_runtime.migrate"]
    assert_python_command_exists(argv, "migrate")
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("restart") == "no"  # the string: an unquoted `no` is YAML false
    for name in APP_SERVICES:
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        assert depends["migrate"]["condition"] == "service_completed_successfully", name


# ---- Dockerfile -------------------------------------------------------------------------

def test_dockerfile_is_multi_stage_and_final_stage_is_not_root():
    args, stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build expected"
    final = stages[-1]
    base = final[0][1].split()[0]
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), base)
    assert base == "python:3.11-slim", base
    assert any(i == "COPY" and "--from=" in rest for i, rest in final), "runtime stage copies the venv"
    users = [rest for i, rest in final if i == "USER"]
    assert users, "final stage has no USER line"
    user = users[-1].split(":", 1)[0].strip()
    assert user not in ("root", "0", ""), f"final stage runs as {users[-1]!r}"


def test_base_images_are_build_arguments_defaulting_to_the_official_ones():
    """PYTHON_IMAGE / POSTGRES_IMAGE switch to the images tools/offline_images.sh builds; unset, the
    official ones. pip's index arguments reach the builder stage only, never the final image."""
    compose = load_compose()
    build_args = compose["x-aos-image"]["build"]["args"]
    args, stages = dockerfile_stages()
    assert interpolate(build_args["PYTHON_IMAGE"], {}) == args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert interpolate(build_args["PYTHON_IMAGE"], {"PYTHON_IMAGE": "aos-base:local"}) == "aos-base:local"
    assert interpolate(compose["services"]["postgres"]["image"], {"POSTGRES_IMAGE": "aos-postgres:local"}) \
        == "aos-postgres:local"
    assert all(stage[0][1].split()[0] == "${PYTHON_IMAGE}" for stage in stages)
    builder, final = stages[0], stages[-1]
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        assert interpolate(build_args[name], {}) == ""  # unset: pip's own default index
        assert any(i == "ARG" and rest.split("=")[0] == name for i, rest in builder), name
        assert not any(name in rest for _, rest in final), f"{name} must not reach the final image"
    offline = ROOT / "tools" / "offline_images.sh"
    text = offline.read_text()
    assert "aos-base:local" in text and "aos-postgres:local" in text
    assert subprocess.run(["bash", "-n", str(offline)]).returncode == 0


def test_gateway_host_port_is_configurable():
    gateway = load_compose()["services"]["gateway"]
    [entry] = gateway["ports"]
    assert interpolate(entry, {"GATEWAY_HOST_PORT": "18080"}) == "127.0.0.1:18080:8080"


def test_dockerfile_commands_and_sources_exist():
    _, stages = dockerfile_stages()
    final = stages[-1]
    commands = [exec_form(rest) for i, rest in final if i in ("CMD", "ENTRYPOINT")]
    assert commands, "final stage has no CMD/ENTRYPOINT"
    for argv in commands:
        assert_python_command_exists(argv, "Dockerfile")
    # Every COPY from the build context names something that is in the repo.
    for stage in stages:
        for instruction, rest in stage:
            if instruction not in ("COPY", "ADD"):
                continue
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            if any(p.startswith("--from") for p in shlex.split(rest)):
                continue
            for source in parts[:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repo"
    # The runtime stage carries what compose runs: the probe and the migrations.
    copied = " ".join(rest for i, rest in final if i == "COPY")
    assert "tools/grpc_health_probe.py" in copied or re.search(r"\btools/?\s", copied)
    assert "migrations" in copied


# ---- tools/grpc_health_probe.py ---------------------------------------------------------

def run_probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROBE), *args], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})


def test_health_probe_against_an_in_process_server():
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1.health import aio as health_aio

    SERVING = health_pb2.HealthCheckResponse.SERVING
    NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
    named = "aos.logs.v1.LlmRunsService"

    async def scenario() -> dict[str, subprocess.CompletedProcess]:
        server = grpc.aio.server()
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        addr = f"127.0.0.1:{port}"
        results = {}
        try:
            await health.set("", SERVING)
            await health.set(named, SERVING)
            results["serving"] = await asyncio.to_thread(run_probe, "--addr", addr)
            results["named serving"] = await asyncio.to_thread(run_probe, "--addr", addr, "--service", named)
            results["unknown service"] = await asyncio.to_thread(run_probe, "--addr", addr, "--service", "nope")
            await health.set("", NOT_SERVING)
            await health.set(named, NOT_SERVING)
            results["not serving"] = await asyncio.to_thread(run_probe, "--addr", addr)
            results["named not serving"] = await asyncio.to_thread(
                run_probe, "--addr", addr, "--service", named)
        finally:
            await server.stop(None)
        return results

    results = asyncio.run(scenario())
    assert results["serving"].returncode == 0, results["serving"].stderr
    assert results["named serving"].returncode == 0, results["named serving"].stderr
    assert results["unknown service"].returncode == 1
    assert results["not serving"].returncode == 1, results["not serving"].stdout
    assert "NOT_SERVING" in results["not serving"].stderr
    assert results["named not serving"].returncode == 1


def test_health_probe_against_a_closed_port():
    result = run_probe("--addr", f"127.0.0.1:{free_port()}")
    assert result.returncode != 0
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr, result.stderr


def test_health_probe_gives_up_after_its_timeout():
    # A TCP listener that never speaks HTTP/2: the probe must not hang past its deadline.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        result = run_probe("--addr", f"127.0.0.1:{silent.getsockname()[1]}", "--timeout", "1")
        elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert elapsed < 10, f"probe took {elapsed:.1f}s with --timeout 1"


def test_gateway_reaches_the_services_by_their_compose_names():
    compose = load_compose()
    gateway = compose["services"]["gateway"]
    assert as_argv(gateway["command"]) == ["python", "-m", "gateway"]
    assert_python_command_exists(as_argv(gateway["command"]), "gateway")
    assert gateway.get("image") == compose["services"]["migrate"].get("image")
    settings = Settings.from_env(interpolated_environment(gateway))
    assert settings.addresses == {name: f"dns:///{name}:{settings.ports[name]}" for name in APP_SERVICES}
    assert published_ports(gateway) == [("127.0.0.1", 8080, 8080)] == [("127.0.0.1", settings.ports["gateway"],
                                                                        int(KNOWN_VARS["AOS_GATEWAY_PORT"].default))]
    assert {k: v["condition"] for k, v in gateway["depends_on"].items()} == \
        {name: "service_healthy" for name in APP_SERVICES}


def test_the_image_copies_every_package_the_project_installs():
    """A package added to the repo (aos_evidence) but not COPY'd into the build stage
    would install without it and fail only when a service imports it."""
    import tomllib
    from fnmatch import fnmatch

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()
                and any(fnmatch(p.name, pattern) for pattern in include)}
    _, stages = dockerfile_stages()
    copied = {shlex.split(rest)[0].rstrip("/") for stage in stages for i, rest in stage
              if i == "COPY" and "--from" not in rest}
    assert {"aos_evidence", "aos_runtime", "services"} <= packages
    assert packages <= copied, f"the Dockerfile does not copy {sorted(packages - copied)}"


# ---- the one-shot demo loader and the CLI (a token) -------------------------------------------

def test_demo_loader_and_cli_are_one_shot_tools_on_the_suite_image():
    compose = load_compose()
    services = compose["services"]
    image = services["migrate"].get("image")
    demo, cli = services["demo"], services["cli"]
    assert as_argv(demo["command"]) == ["python", "-m", "services", "load-demo"]
    assert_python_command_exists(as_argv(demo["command"]), "demo")
    assert demo["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert as_argv(cli["entrypoint"]) == ["python", "-m", "aos_cli"]
    assert_python_command_exists(as_argv(cli["entrypoint"]), "cli")
    for name, service in (("demo", demo), ("cli", cli)):
        assert service.get("image") == image and service.get("restart") == "no", name
        # In a profile: `docker compose up` does not start them, `run` does.
        assert service.get("profiles"), f"{name}: not in a profile, `up` would start it"
        assert not service.get("ports"), name
    # The CLI mints tokens with the suite's JWT secret and reaches the services by name.
    settings = Settings.from_env(interpolated_environment(cli))
    assert settings.jwt_secret == PLACEHOLDER
    gateway = Settings.from_env(interpolated_environment(services["gateway"]))
    assert settings.addresses == gateway.addresses


# ---- docker-compose config: Compose itself reads the file -------------------------------------



def compose_command() -> list[str]:
    """Debian's docker-compose (1.29), else the Docker CLI's compose plugin; skipped when neither is here
    (apt-get install docker-compose)."""
    import shutil

    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.skip("neither docker-compose nor `docker compose` is installed (Debian: apt-get install docker-compose)")


def compose_config(compose_file: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in REQUIRED and not k.startswith("AOS_")}
    return subprocess.run([*compose_command(), "-f", str(compose_file), "--project-directory", str(ROOT),
                           *args, "config"], env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_docker_compose_config_accepts_the_file_and_resolves_the_shared_secrets():
    env = {name: f"value-of-{name.lower()}-" + "x" * 32 for name in REQUIRED}
    result = compose_config(COMPOSE_FILE, env, "--profile", "demo", "--profile", "tools")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert {"postgres", "migrate", *APP_SERVICES, "gateway", "demo", "cli"} <= set(resolved["services"])
    for name in APP_SERVICES:
        service = resolved["services"][name]
        # Compose resolved one page-token secret and one JWT secret for every service.
        assert service["environment"]["AOS_PAGE_TOKEN_SECRET"] == env["AOS_PAGE_TOKEN_SECRET"]
        assert service["environment"]["AOS_AUTH_JWT_SECRET"] == env["AOS_AUTH_JWT_SECRET"]
        assert not service.get("ports")
    assert resolved["services"]["export"]["secrets"][0]["source"] == "export_signing_key"
    assert "pgdata" in resolved["volumes"]


@pytest.mark.parametrize("missing", ["POSTGRES_PASSWORD", "AOS_LOGS_DB_PASSWORD", "AOS_PAGE_TOKEN_SECRET"])
def test_docker_compose_config_refuses_a_missing_secret(missing):
    env = {name: "x" * 40 for name in REQUIRED if name != missing}
    result = compose_config(COMPOSE_FILE, env)
    assert result.returncode != 0 and missing in result.stderr, result.stderr


def test_docker_compose_config_catches_a_broken_file(tmp_path):
    """The check above can fail: Compose refuses a file that is not a valid compose file."""
    broken = tmp_path / "docker-compose.yml"
    compose = load_compose()
    compose["services"]["logs"]["healthcheck"]["retries"] = "three"
    broken.write_text(yaml.safe_dump(compose))
    env = {name: "x" * 40 for name in REQUIRED}
    result = compose_config(broken, env)
    assert result.returncode != 0, result.stdout


# ---- for real: tests/deploy/test_compose_up.py, where a Docker engine runs -------------------

