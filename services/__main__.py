"""``python -m services`` (what ``make run`` runs): the whole suite on one machine.

Starts the embedded Postgres when DATABASE_URL is unset, migrates and provisions
each service's login role (aos_runtime.provision) as the admin, starts the
three services as child processes (each its own documented entry point, given only
its own login's DSN, forking AOS_WORKERS workers of its own when that is above 1), waits until each reports
SERVING, then starts the REST gateway (``python -m gateway``) and waits until it
answers, then prints the endpoints and a demo token.

Honest start and stop (aos_runtime.launch): every port is checked before anything starts
(one that is taken is named with its variable, exit code 2); "running" is printed only
once each child answers from a socket that child (or its forked workers) holds, never on
another process's answer; a child that fails to start is reported and everything started
so far is stopped (exit code 1). Ctrl-C (SIGINT to the foreground process group, as
``make run`` gets it), SIGTERM or SIGHUP stop the gateway, then drain the services, then
stop the embedded Postgres if this process started it (one already running is left as it
was), at any point of the start too; a child that does not exit within the grace period
is killed with its process group.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from aos_recording import retention
from aos_runtime import auth, launch, migrate
from aos_runtime.config import SERVICES, ConfigError, Settings, check_dev_key_allowed
from aos_runtime.db import libpq_url
from aos_runtime.embedded import database_url_for
from aos_runtime.local_state import dev_secret
from aos_runtime.observability import configure_logging
from aos_runtime.pagination import DEV_SECRET_NAME as PAGE_TOKEN_DEV_SECRET
from aos_runtime.provision import LOGINS, provision_from_settings

STARTUP_TIMEOUT_S = 60
GATEWAY = "gateway"


class Stop(Exception):
    """Ctrl-C or SIGTERM arrived: unwind from wherever the start had got to."""


def main() -> int:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    # Every missing key is refused here, before anything starts, when DATABASE_URL is set
    # (unless AOS_DEV_KEYS): a generated key would be this machine's alone. Checked before the
    # ports (a configuration that can never start is said first, whatever holds the ports) but
    # generated after them (a refused start leaves nothing behind).
    generate_jwt_secret = not settings.jwt_secret and not settings.jwt_public_key_file
    if generate_jwt_secret:
        check_dev_key_allowed(settings, "AOS_AUTH_JWT_SECRET")
    if not settings.page_token_secret:
        check_dev_key_allowed(settings, "AOS_PAGE_TOKEN_SECRET")
    if not settings.export_signing_key_file:
        check_dev_key_allowed(settings, "AOS_EXPORT_SIGNING_KEY_FILE")
    # Every port next, before anything starts: one held by another process is named with the
    # variable that moves it (a second `make run`, another program), instead of a child failing
    # to bind later, or the other process answering the health checks in its place.
    busy = launch.busy_ports(settings.bind_host, launch.suite_ports(os.environ))
    if busy:
        print("cannot start: " + "\n  ".join(["a port the suite needs is taken", *busy]), file=sys.stderr)
        return 2
    secret = dev_secret(settings.data_dir, auth.DEV_SECRET_NAME) if generate_jwt_secret else settings.jwt_secret
    page_token_secret = settings.page_token_secret or dev_secret(settings.data_dir, PAGE_TOKEN_DEV_SECRET)

    # The first Ctrl-C/SIGTERM unwinds the start wherever it is (migrating, waiting for a child):
    # the finally blocks below stop what has started. Later ones only note it, so a second
    # Ctrl-C does not cut the draining short; while the embedded Postgres starts the signal
    # waits (interrupted there, pg_ctl would leave a server that nobody stops).
    state = {"stopping": False, "defer": False}

    def request_stop(signum, frame):
        if state["stopping"]:
            return
        state["stopping"] = True
        if not state["defer"]:
            raise Stop

    # `make run`: Ctrl-C sends SIGINT to the terminal's foreground process group (make and
    # this process; the children have sessions of their own and hear it from us, in order).
    # SIGTERM to make reaches this process as SIGTERM; SIGHUP (the terminal closed) too.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, request_stop)

    code = 0
    children: dict[str, subprocess.Popen] = {}
    try:
        with contextlib.ExitStack() as stack:
            # The embedded Postgres (DATABASE_URL unset) is stopped on the way out when this process
            # started it; one that was already running (another suite's, a test's) is left running.
            state["defer"] = True
            url = stack.enter_context(database_url_for(settings))
            state["defer"] = False
            if state["stopping"]:
                raise Stop
            try:
                # The migration step, as the admin (DATABASE_URL or the embedded superuser): the
                # schema, then every service's own login role. The children never see the admin DSN.
                if settings.migrate_on_start:
                    migrate.upgrade(url)
                logins = provision_from_settings(settings, url)
                _load_demo(logins["producer"])
                env = _child_environment(settings)
                if secret:
                    env["AOS_AUTH_JWT_SECRET"] = secret
                # One page-token key for all three services, so a token survives their restarts.
                env["AOS_PAGE_TOKEN_SECRET"] = page_token_secret
                if settings.database_url is None:
                    # The children log in to the embedded Postgres; the development signing key stays allowed.
                    env["AOS_DEV_KEYS"] = "true"
                _start(settings, env, logins, children, state)
                _announce(settings, secret)
                # Retention rounds as the admin, in this process (the children have no owner rights).
                schedule = retention.Schedule(libpq_url(url), settings.retention_interval_s)
                if schedule.start():
                    stack.callback(schedule.stop)
                code = _watch(children)
            except launch.StartFailure as exc:
                print(f"cannot start: {exc}", file=sys.stderr)
                code = 1
            finally:
                state["stopping"] = True  # no Stop from here on: every child is waited for
                # The gateway first, so no REST call reaches a service that is already draining.
                failed = _stop({n: c for n, c in children.items() if n == GATEWAY}, settings.grace_period_s + 5)
                failed += _stop({n: c for n, c in children.items() if n != GATEWAY}, settings.grace_period_s + 5)
                if failed:
                    code = 1
    except Stop:
        pass
    if code == 0:
        print("stopped: every process of the suite has exited.", file=sys.stderr, flush=True)
    return code


def _watch(children: dict[str, subprocess.Popen]) -> int:
    """Until a child exits (1) or a stop signal (Stop) arrives."""
    while True:
        for name, child in children.items():
            if child.poll() is not None:
                print(f"{name} exited with code {child.returncode}; stopping the suite", file=sys.stderr)
                return 1
        time.sleep(0.5)


def _spawn(argv: list[str], env: dict[str, str], state: dict[str, bool]) -> subprocess.Popen:
    """A child in its own session (the terminal's Ctrl-C reaches the suite, which then drains
    each child itself, in order). A stop requested meanwhile waits until Popen has returned:
    raised inside it, after the fork, it would lose the child's pid — and leave the child running."""
    state["defer"] = True
    try:
        return subprocess.Popen(argv, env=env, start_new_session=True)
    finally:
        state["defer"] = False


def _start(settings: Settings, env: dict[str, str], logins: dict[str, str],
           children: dict[str, subprocess.Popen], state: dict[str, bool]) -> None:
    """The four services, then the gateway; each counts as started only when it answers from
    its own socket (aos_runtime.launch). ``children`` is filled as they start, for the caller to stop."""
    host = settings.bind_host
    for name in SERVICES:
        own = {f"AOS_{name.upper()}_DATABASE_URL": logins[name]}  # its own login, nobody else's
        children[name] = _spawn([sys.executable, "-m", f"services.{name}"], {**env, **own}, state)
        if state["stopping"]:
            raise Stop
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for name in SERVICES:
        launch.wait_serving(f"the {name} service", host, _port(settings, name), deadline, children[name])
    # The gateway last: it forwards to the services, so they are SERVING first.
    children[GATEWAY] = _spawn([sys.executable, "-m", GATEWAY], env, state)
    if state["stopping"]:
        raise Stop
    launch.wait_answering("the gateway", f"http://{host}:{settings.ports[GATEWAY]}/healthz",
                          _port(settings, GATEWAY), deadline, children[GATEWAY])


def _port(settings: Settings, name: str) -> launch.Port:
    return launch.Port(f"AOS_{name.upper()}_PORT", settings.ports[name])


# glibc's allocator for the children, unless the environment sets its own (issue #19): at most two
# arenas, and every block of 128 KiB or more mapped apart and unmapped when freed (a fixed
# threshold: glibc otherwise raises it after the first large free, and then an export's 1 MiB
# chunk and buffers stay in the heap, fragmented, after the export). Four concurrent
# 200,000-entry exports of each format: peak idle +75…+109 MiB and +65…+96 MiB kept after,
# without; +46…+63 MiB and +30…+56 MiB after, with (bench/export_memory.py, BENCHMARKS.md).
# The Dockerfile sets the same.
MALLOC_DEFAULTS = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def _child_environment(settings: Settings) -> dict[str, str]:
    """The environment every child starts from: no database credential at all (each service
    gets its own login on top), the services do not migrate (this process did), and glibc's
    allocator returns what an export freed (MALLOC_DEFAULTS, where not set)."""
    credentials = {"DATABASE_URL", "AOS_READ_DATABASE_URL", "PGPASSWORD", "PGPASSFILE",
                   *(f"AOS_{login.upper()}_DATABASE_URL" for login in LOGINS)}
    env = {**MALLOC_DEFAULTS, **{k: v for k, v in os.environ.items() if k not in credentials}}
    env["AOS_MIGRATE_ON_START"] = "false"
    if settings.read_database_url:
        # Where the replica is, without whoever's credentials the variable carried:
        # each read service logs in there as itself.
        env["AOS_READ_DATABASE_URL"] = make_url(settings.read_database_url).set(username=None, password=None) \
            .render_as_string(hide_password=False)
    return env


def _stop(children: dict[str, subprocess.Popen], timeout_s: float) -> list[str]:
    """SIGTERM every child (each drains its calls); the names of those that did not exit cleanly."""
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    failed = []
    for name, child in children.items():
        try:
            if child.wait(timeout=timeout_s) != 0:
                failed.append(name)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)  # its own session: its workers too
            child.wait()
            failed.append(name)
    if failed:
        print(f"services that did not stop cleanly: {', '.join(failed)}", file=sys.stderr)
    return failed


def _load_demo(url: str) -> None:
    """The demo scenarios, for two tenants, into an empty database (never twice)."""
    from aos_recording import scenarios
    from aos_recording.writers import Producer

    producer = Producer(url, pool_size=1)
    try:
        loaded = scenarios.load_demo(producer)
    finally:
        producer.close()
    if loaded:
        print(f"Loaded {loaded} demo scenarios for tenants {', '.join(scenarios.DEMO_TENANTS)}.", flush=True)


def _announce(settings: Settings, secret: str | None) -> None:
    host = settings.bind_host
    lines = ["", "AOS Evidence Plane is running.", ""]
    workers = f"  ({settings.workers} worker processes each)" if settings.workers > 1 else ""
    for name in SERVICES:
        lines.append(f"  {name:<9} grpc://{host}:{settings.ports[name]}{workers}")
    gateway = f"http://{host}:{settings.ports[GATEWAY]}"
    lines += [f"  {GATEWAY:<9} {gateway}  (REST; OpenAPI at {gateway}/openapi.json, API docs at {gateway}/docs)",
              # SPEC §7: the OTLP endpoint, both transports (docs/INGEST.md maps the spans).
              f"  {'otlp':<9} {gateway}/v1/traces  (OTLP/HTTP; OTLP/gRPC at grpc://{host}:{settings.ports['ingest']})",
              ""]
    if secret:
        from aos_recording.scenarios import DEMO_TENANTS

        tenant = next(iter(DEMO_TENANTS))
        ttl_s = min(24 * 3600, settings.max_token_lifetime_s)  # never longer than the services accept
        token = auth.mint_token(secret=secret, tenant_id=tenant, subject="user-demo", ttl_s=ttl_s,
                                audience=settings.audience, issuer=settings.issuer)
        lifetime = f"{ttl_s // 3600} h" if ttl_s % 3600 == 0 else f"{ttl_s} s"
        # The token rides in the fragment, which browsers never send: the console reads it once,
        # keeps it in the tab's sessionStorage and takes it out of the address bar.
        lines += [f"Console, signed in as tenant {tenant} ({lifetime}):", "", f"  {gateway}/#token={token}", "",
                  f"Demo token (tenant {tenant}, all scopes, {lifetime}):", "", f"  {token}", "",
                  "Try:", f"  curl -H 'Authorization: Bearer {token}' {gateway}/api/v1/runtime/overview/highlights",
                  (f"  {Path(sys.executable).with_name('buf')} curl --protocol grpc --http2-prior-knowledge "
                   f"http://{host}:{settings.ports['logs']}/grpc.health.v1.Health/Check")]
        # Producers write with evidence.write as an AGENT or SYSTEM, never a person's token (SPEC §6).
        producer = auth.mint_token(secret=secret, tenant_id=tenant, subject="agent-demo", actor_type="AGENT",
                                   scopes=("evidence.write",), ttl_s=ttl_s, audience=settings.audience,
                                   issuer=settings.issuer)
        lines += ["", f"OpenTelemetry producer (tenant {tenant}, evidence.write as AGENT, {lifetime}):",
                  f"  export OTEL_EXPORTER_OTLP_ENDPOINT={gateway}",
                  f"  export OTEL_EXPORTER_OTLP_HEADERS='authorization=Bearer%20{producer}'"]
    else:
        lines.append("Tokens: sign EdDSA JWTs with the key matching AOS_AUTH_JWT_PUBLIC_KEY_FILE.")
    lines += ["", "Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)


def load_demo_only() -> int:
    """``python -m services load-demo``: the demo scenarios into the database of
    AOS_PRODUCER_DATABASE_URL (the producers' login: no admin credential), then exit. The compose
    file's one-shot ``demo`` job; loading twice loads nothing the second time."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    url = settings.service_database_urls.get("producer")
    if not url:
        raise ConfigError("AOS_PRODUCER_DATABASE_URL is not set: the demo is loaded as the producers' login")
    _load_demo(url)
    print("demo data present.", flush=True)
    return 0


if __name__ == "__main__":
    try:
        if sys.argv[1:] not in ([], ["load-demo"]):
            sys.exit("usage: python -m services            (the whole suite: make run)\n"
                     "       python -m services load-demo  (the demo data, as AOS_PRODUCER_DATABASE_URL)")
        sys.exit(load_demo_only() if sys.argv[1:] else main())
    except ConfigError as exc:  # a clear line naming the variable, not a traceback
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
