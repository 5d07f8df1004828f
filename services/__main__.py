"""``python -m services`` (what ``make run`` runs): the whole suite on one machine.

Starts the embedded Postgres when DATABASE_URL is unset, migrates and provisions
each service's login role (aos_runtime.provision) as the admin, starts the
three services as child processes (each its own documented entry point, given only
its own login's DSN, forking AOS_WORKERS workers of its own when that is above 1), waits until each reports
SERVING, then starts the REST gateway (``python -m gateway``) and waits until it
answers, then prints the endpoints and a demo token. Ctrl-C or SIGTERM stops the
gateway, drains the services and stops the embedded Postgres.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from aos_runtime import auth, migrate
from aos_runtime.config import SERVICES, ConfigError, Settings, check_dev_key_allowed
from aos_runtime.embedded import database_url_for
from aos_runtime.local_state import dev_secret
from aos_runtime.observability import configure_logging
from aos_runtime.pagination import DEV_SECRET_NAME as PAGE_TOKEN_DEV_SECRET
from aos_runtime.provision import LOGINS, provision_from_settings

STARTUP_TIMEOUT_S = 60
GATEWAY = "gateway"


def _wait_serving(address: str, deadline: float, child: subprocess.Popen) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"service at {address} exited with code {child.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"service at {address} did not report SERVING in {STARTUP_TIMEOUT_S}s")
            time.sleep(0.2)


def _wait_answering(url: str, deadline: float, child: subprocess.Popen) -> None:
    while True:
        if child.poll() is not None:
            raise RuntimeError(f"the gateway exited with code {child.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:  # not listening yet
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer in {STARTUP_TIMEOUT_S}s")
        time.sleep(0.2)


def main() -> int:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    # Every missing key is refused here, before anything starts, when DATABASE_URL is set
    # (unless AOS_DEV_KEYS): a generated key would be this machine's alone.
    secret = settings.jwt_secret
    if not secret and not settings.jwt_public_key_file:
        check_dev_key_allowed(settings, "AOS_AUTH_JWT_SECRET")
        secret = dev_secret(settings.data_dir, auth.DEV_SECRET_NAME)
    page_token_secret = settings.page_token_secret
    if not page_token_secret:
        check_dev_key_allowed(settings, "AOS_PAGE_TOKEN_SECRET")
        page_token_secret = dev_secret(settings.data_dir, PAGE_TOKEN_DEV_SECRET)
    if not settings.export_signing_key_file:
        check_dev_key_allowed(settings, "AOS_EXPORT_SIGNING_KEY_FILE")

    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    with database_url_for(settings) as url:
        # The migration step, as the admin (DATABASE_URL or the embedded superuser): the schema,
        # then every service's own login role. The children never see the admin DSN.
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
        children: dict[str, subprocess.Popen] = {}
        try:
            for name in SERVICES:
                # Own process group: the terminal's Ctrl-C reaches the suite, which then
                # drains each child itself in order, instead of all at once.
                own = {f"AOS_{name.upper()}_DATABASE_URL": logins[name]}  # its own login, nobody else's
                children[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env={**env, **own},
                                                  start_new_session=True)
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            for name, child in children.items():
                _wait_serving(f"{settings.bind_host}:{settings.ports[name]}", deadline, child)
            # The gateway last: it forwards to the services, so they are SERVING first.
            children[GATEWAY] = subprocess.Popen([sys.executable, "-m", GATEWAY], env=env, start_new_session=True)
            _wait_answering(f"http://{settings.bind_host}:{settings.ports[GATEWAY]}/healthz", deadline,
                            children[GATEWAY])
            _announce(settings, secret)
            while not stopping:
                for name, child in children.items():
                    if child.poll() is not None:
                        print(f"service {name} exited with code {child.returncode}; stopping the suite",
                              file=sys.stderr)
                        return 1
                time.sleep(0.5)
        finally:
            # The gateway first, so no REST call reaches a service that is already draining.
            failed = _stop({n: c for n, c in children.items() if n == GATEWAY}, settings.grace_period_s + 5)
            failed += _stop({n: c for n, c in children.items() if n != GATEWAY}, settings.grace_period_s + 5)
        return 1 if failed else 0


def _child_environment(settings: Settings) -> dict[str, str]:
    """The environment every child starts from: no database credential at all (each service
    gets its own login on top), and the services do not migrate (this process did)."""
    credentials = {"DATABASE_URL", "AOS_READ_DATABASE_URL", "PGPASSWORD", "PGPASSFILE",
                   *(f"AOS_{login.upper()}_DATABASE_URL" for login in LOGINS)}
    env = {k: v for k, v in os.environ.items() if k not in credentials}
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
            child.kill()
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
    lines += [f"  {GATEWAY:<9} {gateway}  (REST; OpenAPI at {gateway}/openapi.json)", ""]
    if secret:
        from aos_recording.scenarios import DEMO_TENANTS

        tenant = next(iter(DEMO_TENANTS))
        ttl_s = min(24 * 3600, settings.max_token_lifetime_s)  # never longer than the services accept
        token = auth.mint_token(secret=secret, tenant_id=tenant, subject="user-demo", ttl_s=ttl_s,
                                audience=settings.audience, issuer=settings.issuer)
        lifetime = f"{ttl_s // 3600} h" if ttl_s % 3600 == 0 else f"{ttl_s} s"
        lines += [f"Demo token (tenant {tenant}, all scopes, {lifetime}):", "", f"  {token}", "",
                  "Try:", f"  curl -H 'Authorization: Bearer {token}' {gateway}/api/v1/runtime/overview/highlights",
                  (f"  {Path(sys.executable).with_name('buf')} curl --protocol grpc --http2-prior-knowledge "
                   f"http://{host}:{settings.ports['logs']}/grpc.health.v1.Health/Check")]
    else:
        lines.append("Tokens: sign EdDSA JWTs with the key matching AOS_AUTH_JWT_PUBLIC_KEY_FILE.")
    lines += ["", "Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as exc:  # a clear line naming the variable, not a traceback
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
