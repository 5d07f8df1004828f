"""Prometheus metrics: RPCs with the grpc-ecosystem names and the code each call ended with, the
gateway's requests by route template, pools, health, exports, the ledger — scraped over HTTP from
real servers (the in-process suite, and ``python -m services.logs`` with two workers)."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import psycopg
import pytest

from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb, audit_ledger_service_pb2_grpc as audit_grpc
from aos_runtime import metrics
from aos_runtime.config import ConfigError, Settings
from aos_runtime.service_main import build_server
from tests.e2e.support import DEMO, SECRET, auth, free_port, service_modules, settings
from tests.logins import login_url
from tests.ops.support import OPS, names, scrape, value

pytestmark = pytest.mark.db

AUDIT = {"grpc_service": "aos.logs.v1.AuditLedgerService", "grpc_method": "ListAuditEntries", "grpc_type": "unary"}


async def test_each_rpc_is_counted_and_timed_with_the_code_it_ended_with(rest, metrics_port):
    before = scrape(metrics_port)
    assert (await rest.get("/api/v1/logs/audit")).status_code == 200
    assert (await rest.get("/api/v1/logs/audit", params={"page_token": "forged"})).status_code == 400
    assert (await rest.get("/api/v1/logs/audit", headers={"Authorization": "Bearer nope"})).status_code == 401
    after = scrape(metrics_port)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("grpc_server_started_total", **AUDIT) == 3
    assert delta("grpc_server_handled_total", **AUDIT, grpc_code="OK") == 1
    assert delta("grpc_server_handled_total", **AUDIT, grpc_code="InvalidArgument") == 1
    assert delta("grpc_server_handled_total", **AUDIT, grpc_code="Unauthenticated") == 1
    assert delta("grpc_server_handling_seconds_count", **AUDIT) == 3
    assert delta("grpc_server_handling_seconds_sum", **AUDIT) > 0


async def test_gateway_requests_are_labelled_by_route_template_never_by_path(rest, metrics_port):
    before = scrape(metrics_port)
    assert (await rest.get("/api/v1/logs/audit/no-such-entry-1")).status_code == 404
    assert (await rest.get("/api/v1/logs/audit/no-such-entry-2")).status_code == 404
    assert (await rest.get("/no/such/route")).status_code == 404
    assert (await rest.get("/healthz")).status_code == 200
    after = scrape(metrics_port)
    template = "/api/v1/logs/audit/{entry_id}"
    assert value(after, "aos_http_requests_total", route=template, status="404", method="GET") - \
        value(before, "aos_http_requests_total", route=template, status="404", method="GET") == 2
    assert value(after, "aos_http_requests_total", route="unmatched", status="404") - \
        value(before, "aos_http_requests_total", route="unmatched", status="404") == 1
    assert value(after, "aos_http_requests_total", route="/healthz", status="200") - \
        value(before, "aos_http_requests_total", route="/healthz", status="200") == 1
    routes = {dict(labels).get("route") for name, labels in after if name == "aos_http_requests_total"}
    assert not any("no-such" in route or "/no/" in route for route in routes), routes
    assert value(after, "aos_http_request_duration_seconds_count", route=template) >= 2


async def test_pools_and_health_are_read_live(rest, metrics_port, suite):
    samples = scrape(metrics_port)
    for service in ("overview", "logs", "export"):
        # (its value, 1 or 0, is tried with servers of their own below: other tests of this session
        # leave servers of the same name behind, some of them NOT_SERVING on purpose)
        assert ("aos_service_serving", (("service", service),)) in samples
        assert value(samples, "aos_db_pool_size", service=service) >= 10  # AOS_DB_POOL_SIZE per pool
        assert value(samples, "aos_db_pool_in_use", service=service) >= 0
    assert (await rest.get("/api/v1/logs/audit")).status_code == 200
    assert value(scrape(metrics_port), "aos_db_pool_wait_seconds_count", service="logs") > \
        value(samples, "aos_db_pool_wait_seconds_count", service="logs")


async def test_a_committed_export_counts_its_bytes_and_its_duration(rest, metrics_port):
    before = scrape(metrics_port)
    created = await rest.post("/api/v1/logs/exports", json={
        "run_id": f"{OPS}.run-support-103", "bundle_type": "BUNDLE_TYPE_EVIDENCE", "format": "EXPORT_FORMAT_JSON"})
    assert created.status_code == 200, created.text
    size = int(created.json()["export"]["size_bytes"])
    after = scrape(metrics_port)
    labels = {"scope": "LLM_RUN", "format": "JSON"}
    assert value(after, "aos_exports_created_total", **labels) - value(before, "aos_exports_created_total", **labels) == 1
    assert value(after, "aos_export_bytes_total", **labels) - value(before, "aos_export_bytes_total", **labels) == size
    assert value(after, "aos_export_duration_seconds_count", **labels) - \
        value(before, "aos_export_duration_seconds_count", **labels) == 1


async def test_ledger_appends_are_one_total_and_the_checkpoint_age_comes_from_the_database(
        rest, metrics_port, database_url, monkeypatch, tmp_path):
    monkeypatch.setattr(metrics.ledger, "CACHE_S", 0)
    # A Logs server started here: the registry is this process's, and the ledger's reader is the
    # last started Logs server's (one per process in production; here other tests start theirs,
    # on databases of their own, after the session's suite).
    server = build_server("logs", service_modules()["logs"].servicers, settings(tmp_path),
                          login_url(database_url, "logs"), port=0)
    await server.start()
    try:
        with psycopg.connect(database_url) as admin:  # the owner's view: every tenant's head
            heads = admin.execute("SELECT coalesce(sum(m), 0) FROM (SELECT max(seq) AS m FROM audit_ledger "
                                  "GROUP BY tenant_id) h").fetchone()[0]
        samples = scrape(metrics_port)
        assert value(samples, "aos_ledger_entries_total") == heads
        assert not [labels for name, labels in samples if name == "aos_ledger_entries_total" and labels], \
            "one series, not one per tenant"
        assert (await rest.get("/api/v1/logs/audit/checkpoint")).status_code == 200
        age = value(scrape(metrics_port), "aos_ledger_checkpoint_age_seconds")
        assert 0 <= age < 60
    finally:
        await server.stop(grace=1)


def test_a_service_session_cannot_read_the_ledger_stats_of_the_owner_except_through_the_function(database_url):
    with psycopg.connect(login_url(database_url, "logs")) as logs:
        assert logs.execute("SELECT count(*) FROM audit_ledger").fetchone()[0] == 0  # no tenant: no rows
        entries, _ = logs.execute("SELECT * FROM aos_ledger_stats()").fetchone()
        assert entries > 0
    with psycopg.connect(login_url(database_url, "overview")) as overview, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        overview.execute("SELECT * FROM aos_ledger_stats()")


def test_the_heavy_queue_depth_is_the_admission_gates(metrics_port, suite):
    """A server with a heavy gate exports its queue's depth (read at scrape time: 0 when idle);
    its refusals are counted by reason (tests/reliability/test_fairness.py makes some). The
    refusal counter is exported only once a refusal happens: an empty series would look like a
    working zero."""
    samples = scrape(metrics_port)
    assert ("aos_heavy_queue_depth", (("service", "export"),)) in samples
    assert value(samples, "aos_heavy_queue_depth", service="export") == 0
    if "aos_heavy_refused_total" in names(samples):  # another test of this session was refused
        assert {dict(labels)["reason"] for name, labels in samples if name == "aos_heavy_refused_total"} <= \
            {"TENANT_HEAVY_LIMIT", "SERVER_OVERLOADED"}


def test_metrics_ports_that_would_overlap_between_workers_are_refused():
    ok = Settings.from_env({"AOS_WORKERS": "2", "AOS_LOGS_METRICS_PORT": "9471", "AOS_EXPORT_METRICS_PORT": "9481"})
    assert ok.metrics_ports == {"overview": 0, "logs": 9471, "export": 9481, "ingest": 0, "gateway": 0}
    assert Settings.from_env({}).metrics_ports == {"overview": 0, "logs": 0, "export": 0, "ingest": 0, "gateway": 0}
    with pytest.raises(ConfigError, match="AOS_EXPORT_METRICS_PORT=9472 and AOS_LOGS_METRICS_PORT"):
        Settings.from_env({"AOS_WORKERS": "2", "AOS_LOGS_METRICS_PORT": "9471", "AOS_EXPORT_METRICS_PORT": "9472"})


def _free_pair() -> int:
    """A port p such that p and p + 1 are both free right now."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise AssertionError("no two consecutive free ports")


def _wait_scrape(port: int, deadline: float):
    while True:
        try:
            return scrape(port)
        except OSError:
            assert time.monotonic() < deadline, f"no /metrics on port {port}"
            time.sleep(0.1)


def test_each_worker_of_a_service_serves_its_own_metrics_port(database_url):
    first, grpc_port = _free_pair(), free_port()
    data_dir = tempfile.mkdtemp(prefix="aos-metrics-workers-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AOS_", "OTEL_")) and k != "DATABASE_URL"}
    env.update(AOS_LOGS_DATABASE_URL=login_url(database_url, "logs"), AOS_WORKERS="2", AOS_LOGS_PORT=str(grpc_port),
               AOS_LOGS_METRICS_PORT=str(first), AOS_DATA_DIR=data_dir,
               AOS_AUTH_JWT_SECRET=SECRET, AOS_DEV_KEYS="true", AOS_MIGRATE_ON_START="false")
    process = subprocess.Popen([sys.executable, "-m", "services.logs"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        workers = [_wait_scrape(first, deadline), _wait_scrape(first + 1, deadline)]
        while not all(value(w, "aos_service_serving", service="logs") == 1 for w in workers):
            assert time.monotonic() < deadline
            time.sleep(0.2)
            workers = [scrape(first), scrape(first + 1)]
        calls = 6
        for _ in range(calls):  # a channel each: the kernel spreads connections over the workers
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                audit_grpc.AuditLedgerServiceStub(channel).ListAuditEntries(
                    audit_pb.ListAuditEntriesRequest(page_size=1), metadata=auth(DEMO), timeout=20)
        counted = [value(scrape(port), "grpc_server_handled_total", **AUDIT, grpc_code="OK")
                   for port in (first, first + 1)]
        assert sum(counted) == calls, counted  # each call counted once, by the worker that served it
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_the_health_gauge_follows_the_database_and_the_drain(database_url, metrics_port):
    """A server whose database does not answer is NOT_SERVING on grpc.health.v1 and 0 on /metrics;
    one whose database answers is 1; a stopped server's series is gone."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from aos_runtime import auth as runtime_auth
    from aos_runtime.db import Database
    from aos_runtime.server import ServiceServer
    from services.overview import server as overview

    verifier = runtime_auth.TokenVerifier(secret=SECRET, public_key_pem=None, audience="aos-evidence", issuer=None)
    nowhere = Database(f"postgresql://aos_overview:x@127.0.0.1:{free_port()}/aos", service="overview",
                       connect_timeout_s=1)
    down = ServiceServer("gauge-down", [], nowhere, verifier, port=0, health_probe_interval_s=1)
    up_db = Database(login_url(database_url, "overview"), service="overview")
    up = ServiceServer("gauge-up", overview.servicers(_context(up_db)), up_db, verifier, port=0,
                       health_probe_interval_s=1)
    try:
        down_port, _ = await down.start(), await up.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{down_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        samples = scrape(metrics_port)
        assert value(samples, "aos_service_serving", service="gauge-down") == 0
        assert value(samples, "aos_service_serving", service="gauge-up") == 1
    finally:
        await up.stop(grace=0)
        await down.stop(grace=0)
    left = {dict(labels).get("service") for name, labels in scrape(metrics_port) if name == "aos_service_serving"}
    assert not left & {"gauge-up", "gauge-down"}, left


def _context(db):
    from aos_runtime.pagination import PageTokens
    from aos_runtime.server import ServiceContext

    return ServiceContext(db=db, page_tokens=PageTokens(SECRET.encode()))


async def test_the_pool_gauges_see_a_held_connection_and_a_waiting_call(database_url, metrics_port):
    from sqlalchemy import text

    from aos_runtime.db import Database

    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
    before = scrape(metrics_port)
    metrics.watch_database(db)
    try:
        sleeps = [asyncio.ensure_future(db.run(None, lambda conn: conn.execute(text("SELECT pg_sleep(1.5)"))))
                  for _ in range(2)]
        await asyncio.sleep(0.7)  # the first holds the one connection, the second waits for it
        during = scrape(metrics_port)
        await asyncio.gather(*sleeps)
        after = scrape(metrics_port)
    finally:
        metrics.forget_database(db)
        await db.close()

    def delta(samples, name):
        return value(samples, name, service="logs") - value(before, name, service="logs")

    assert delta(during, "aos_db_pool_size") == 1
    assert delta(during, "aos_db_pool_in_use") == 1
    assert delta(during, "aos_db_pool_waiting") == 1
    assert delta(after, "aos_db_pool_wait_seconds_count") == 2
    assert delta(after, "aos_db_pool_wait_seconds_sum") > 1.0  # the second waited for the first's 1.5 s
    assert delta(after, "aos_db_pool_in_use") == 0 and delta(after, "aos_db_pool_waiting") == 0
    assert delta(scrape(metrics_port), "aos_db_pool_size") == 0  # forgotten once closed
