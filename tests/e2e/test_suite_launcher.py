"""`make run`'s program (python -m services) from the outside: starts the services and the
gateway, serves gRPC and REST, stops cleanly."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.support import free_port

pytestmark = pytest.mark.db


@pytest.fixture
def tmp_path():
    """Not under pytest's basetemp: a pytest session starting meanwhile re-chmods
    /tmp/pytest-of-<user> to 0700, and the embedded Postgres' own system user (when the
    suite runs as root) could then no longer reach its data directory to stop it."""
    path = Path(tempfile.mkdtemp(prefix="aos-suite-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# A program instrumented with the OpenTelemetry SDK and its OTLP/HTTP exporter, configured
# only by the environment (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS).
OTEL_PROGRAM = """
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

class Told(OTLPSpanExporter):
    def export(self, spans):
        result = super().export(spans)
        print(result.name)
        return result

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(Told()))
with provider.get_tracer("launcher").start_as_current_span("chat gpt-4o", attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.agent.id": "agent-launcher", "gen_ai.usage.input_tokens": 42, "gen_ai.usage.output_tokens": 7,
        "aos.usage.cost_cents": 3}):
    pass
provider.shutdown()
"""


def _spend(gateway: str, token: str) -> int:
    costs = httpx.get(f"{gateway}/api/v1/runtime/overview/costs", headers={"Authorization": f"Bearer {token}"},
                      timeout=10).json()
    return int(costs["actuals"]["llm_run_cost"].get("amount_cents", 0))



def rest_of(make: subprocess.Popen, timeout_s: float = 30) -> str:
    """The rest of make's output once it has exited. Bounded: a child of the suite left running
    holds the pipe open, and a plain read would wait for it forever (the test must fail, not hang)."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(make.stdout.read()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    assert got, "make has exited but a process of the suite still holds its output: one was left running"
    return got[0]

def test_suite_starts_serves_and_stops_everything(tmp_path):
    ports = {name: free_port() for name in ("OVERVIEW", "LOGS", "EXPORT", "INGEST", "GATEWAY")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AOS_", "OTEL_")) and k != "DATABASE_URL"}
    env.update({f"AOS_{name}_PORT": str(port) for name, port in ports.items()})
    env.update(AOS_DATA_DIR=str(tmp_path / "aos"), AOS_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    suite = subprocess.Popen([sys.executable, "-m", "services"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    output = []
    try:
        deadline = time.monotonic() + 90
        while not any("Ctrl-C stops everything" in line for line in output):
            assert time.monotonic() < deadline and suite.poll() is None, "".join(output)
            output.append(suite.stdout.readline())
        text = "".join(output)
        assert re.search(r"Loaded \d+ demo scenarios", text)
        for port in ports.values():
            assert f"127.0.0.1:{port}" in text
        gateway = f"http://127.0.0.1:{ports['GATEWAY']}"
        assert gateway in text
        token = re.search(r"^\s+(eyJ[\w-]+\.[\w-]+\.[\w-]+)\s*$", text, re.M).group(1)

        # The gateway answers REST with the printed token, and refuses a call without one.
        highlights = httpx.get(f"{gateway}/api/v1/runtime/overview/highlights",
                               headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert highlights.status_code == 200, highlights.text
        assert highlights.json()["pulse"]["status"].startswith("PULSE_STATUS_")
        refused = httpx.get(f"{gateway}/api/v1/logs/audit", timeout=10)
        assert refused.status_code == 401 and refused.json()["code"] == 16

        with grpc.insecure_channel(f"127.0.0.1:{ports['LOGS']}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            # The printed demo token is accepted: the call gets past authentication.
            call = channel.unary_unary("/aos.logs.v1.AuditLedgerService/ListAuditEntries",
                                       request_serializer=lambda m: b"", response_deserializer=lambda b: b)
            try:
                call(None, metadata=(("authorization", f"Bearer {token}"),), timeout=5)
            except grpc.RpcError as err:
                assert err.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                                          grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), err
            with pytest.raises(grpc.RpcError) as err:
                call(None, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # An OpenTelemetry-instrumented program, configured with the printed OTLP settings, shows
        # up as a run with its trace, and in the costs.
        otel = dict(re.findall(r"^\s+export (OTEL_EXPORTER_OTLP_\w+)='?([^'\n]+)'?$", text, re.M))
        assert otel["OTEL_EXPORTER_OTLP_ENDPOINT"] == gateway and f"{gateway}/v1/traces" in text
        assert f"grpc://127.0.0.1:{ports['INGEST']}" in text
        before = _spend(gateway, token)
        program = subprocess.run([sys.executable, "-c", OTEL_PROGRAM], env={**env, **otel}, capture_output=True,
                                 text=True, timeout=60)
        assert program.returncode == 0 and "SUCCESS" in program.stdout, program.stdout + program.stderr
        runs = httpx.get(f"{gateway}/api/v1/logs/llm-runs", params={"agent_id": "agent-launcher"},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10).json()["runs"]
        assert [(r["model"], int(r["input_tokens"]), int(r["cost"]["amount_cents"])) for r in runs] == [("gpt-4o", 42, 3)]
        trace = httpx.get(f"{gateway}/api/v1/logs/llm-runs/{runs[0]['run_id']}/trace",
                          headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        assert [s["step_type"] for s in trace["steps"]] == ["STEP_TYPE_LLM_CALL"]
        assert _spend(gateway, token) - before == 3

        suite.send_signal(signal.SIGINT)  # what Ctrl-C does
        assert suite.wait(timeout=60) == 0, "".join(output) + suite.stdout.read()
    finally:
        if suite.poll() is None:
            suite.kill()
    # The embedded Postgres stopped with it.
    assert not (tmp_path / "aos" / "pgdata" / "postmaster.pid").exists()


# ---- honest start and stop ------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def suite_env(data_dir: Path, **extra: str) -> tuple[dict[str, str], dict[str, int]]:
    ports = {name: free_port() for name in ("OVERVIEW", "LOGS", "EXPORT", "INGEST", "GATEWAY")}
    # Not MAKEFLAGS either: under `make test-db DATABASE_URL=…` it carries that command-line
    # variable into the `make run` these tests start, which would then need production keys.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AOS_") and k not in ("DATABASE_URL", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update({f"AOS_{name}_PORT": str(port) for name, port in ports.items()})
    env.update(AOS_DATA_DIR=str(data_dir), AOS_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1", **extra)
    return env, ports


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its parent."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_port_held_by_another_process_stops_the_start_naming_its_variable(tmp_path):
    env, ports = suite_env(tmp_path / "aos")
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", ports["LOGS"]))
        foreign.listen()
        result = subprocess.run([sys.executable, "-m", "services"], env=env, capture_output=True, text=True,
                                timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "AOS_LOGS_PORT" in result.stderr and str(ports["LOGS"]) in result.stderr, out
    assert f"pid {os.getpid()}" in result.stderr, out  # who holds it, read from /proc
    assert "running" not in out
    # Checked before anything started: no database was even initialised.
    assert not (tmp_path / "aos" / "pgdata").exists()


def test_an_answer_from_another_process_is_not_taken_for_ours():
    """The health check answers SERVING, but from a socket the test holds, not the child:
    the launcher says so, naming the variable, instead of announcing "running"."""
    from grpc_health.v1 import health as health_sync

    from aos_runtime import launch

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health = health_sync.HealthServicer()
    health.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(launch.StartFailure) as failure:
            launch.wait_serving("the logs service", "127.0.0.1", launch.Port("AOS_LOGS_PORT", port),
                                time.monotonic() + 20, child)
        assert "another process" in str(failure.value) and "AOS_LOGS_PORT" in str(failure.value)
        assert f"pid {os.getpid()}" in str(failure.value)
    finally:
        child.kill()
        child.wait()
        server.stop(None)


def test_an_answer_from_the_child_itself_is_taken():
    from aos_runtime import launch

    port = free_port()
    serve = ("import grpc, time; from concurrent import futures; "
             "from grpc_health.v1 import health, health_pb2, health_pb2_grpc; "
             "s = grpc.server(futures.ThreadPoolExecutor(2)); h = health.HealthServicer(); "
             "h.set('', health_pb2.HealthCheckResponse.SERVING); "
             "health_pb2_grpc.add_HealthServicer_to_server(h, s); "
             f"s.add_insecure_port('127.0.0.1:{port}'); s.start(); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", serve])
    try:
        launch.wait_serving("the child", "127.0.0.1", launch.Port("AOS_LOGS_PORT", port),
                            time.monotonic() + 30, child)
        assert launch.owned_by(child, port) is True
    finally:
        child.kill()
        child.wait()


def test_a_child_that_fails_to_start_is_reported_with_the_variable_of_its_port():
    """The port was free when checked, then taken before the child bound it: the child exits,
    and the launcher reports that child's failure rather than waiting or announcing."""
    from aos_runtime import launch

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit('Failed to bind to address')"])
    with pytest.raises(launch.StartFailure) as failure:
        launch.wait_serving("the export service", "127.0.0.1", launch.Port("AOS_EXPORT_PORT", free_port()),
                            time.monotonic() + 30, child)
    message = str(failure.value)
    assert "the export service exited with code 1" in message and "AOS_EXPORT_PORT" in message


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_make_run_stops_every_process_it_started(tmp_path, how):
    """`make run`, then Ctrl-C (SIGINT to the whole process group, make included) or SIGTERM
    to make alone: the launcher, every service (with AOS_WORKERS=2: every forked worker), the
    gateway and the embedded Postgres are gone afterwards."""
    env, ports = suite_env(tmp_path / "aos", AOS_WORKERS="2")
    make = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not any("Ctrl-C stops everything" in line for line in output):
            assert time.monotonic() < deadline and make.poll() is None, "".join(output)
            output.append(make.stdout.readline())
        assert "is running" in "".join(output)
        from aos_runtime import launch

        started = launch.process_tree(make.pid) - {make.pid}
        postmaster = int((tmp_path / "aos" / "pgdata" / "postmaster.pid").read_text().split()[0])
        # make, the launcher, 3 services each with 2 workers, the gateway.
        assert len(started) >= 1 + 3 * 3 + 1, started
        for port in ports.values():
            assert launch.listener_pids(port) and launch.listener_pids(port) <= started
        if how == "ctrl-c":
            os.killpg(make.pid, signal.SIGINT)
        else:
            make.send_signal(signal.SIGTERM)
        make.wait(timeout=90)
        output.append(rest_of(make))
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    text = "".join(output)
    assert "stopped: every process of the suite has exited" in text, text
    left = sorted(pid for pid in (*started, postmaster) if alive(pid))
    assert not left, f"still running after {how}: {[launch.describe(pid) for pid in left]}\n{text}"
    assert not (tmp_path / "aos" / "pgdata" / "postmaster.pid").exists()


def test_the_first_install_says_what_it_is_doing():
    """The venv step prints a line before pip's quiet install (make -n: what it would run)."""
    plan = subprocess.run(["make", "-n", "-B", ".venv/.installed"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    lines = plan.stdout.splitlines()
    pip = next(i for i, line in enumerate(lines) if "pip install" in line)
    assert any("installing the pinned dependencies" in line for line in lines[:pip]), plan.stdout


def test_ctrl_c_while_the_suite_is_starting_stops_it_at_once(tmp_path):
    """Ctrl-C as soon as the first service process exists (the launcher is waiting for it to
    answer): the start is abandoned — no "running" — and nothing is left behind."""
    from aos_runtime import launch

    env, _ = suite_env(tmp_path / "aos")
    make = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        seen: set[int] = set()
        while not any("services.overview" in launch.describe(pid) for pid in seen):
            assert time.monotonic() < deadline and make.poll() is None, make.stdout.read()
            time.sleep(0.05)
            seen = launch.process_tree(make.pid)
        pgdata = tmp_path / "aos" / "pgdata" / "postmaster.pid"
        postmaster = int(pgdata.read_text().split()[0])
        os.killpg(make.pid, signal.SIGINT)
        interrupted = time.monotonic()
        make.wait(timeout=60)
        took = time.monotonic() - interrupted
        text = rest_of(make)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    assert "is running" not in text, text
    left = sorted(pid for pid in (*seen, postmaster) if alive(pid))
    assert not left, f"still running: {[launch.describe(pid) for pid in left]}\n{text}"
    assert not pgdata.exists()
    assert took < 30, f"{took:.1f} s to stop"


def test_load_demo_loads_as_the_producer_login_once(database_url):
    """`python -m services load-demo` (the compose file's one-shot demo job)."""
    from tests.logins import login_url

    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_") and k != "DATABASE_URL"}
    missing = subprocess.run([sys.executable, "-m", "services", "load-demo"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2 and "AOS_PRODUCER_DATABASE_URL" in missing.stderr, missing.stderr
    env["AOS_PRODUCER_DATABASE_URL"] = login_url(database_url, "producer")
    for _ in range(2):  # the second run finds the data there and loads nothing more
        loaded = subprocess.run([sys.executable, "-m", "services", "load-demo"], env=env, capture_output=True,
                                text=True, timeout=120)
        assert loaded.returncode == 0, loaded.stderr
        assert "demo data present" in loaded.stdout
    assert "Loaded" not in loaded.stdout
    # The admin's DSN is refused: the loader is the producers' login, nothing more.
    env["AOS_PRODUCER_DATABASE_URL"] = database_url
    refused = subprocess.run([sys.executable, "-m", "services", "load-demo"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0
