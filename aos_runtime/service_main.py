"""The entry point every service shares: ``python -m services.<name>`` ends here.

With AOS_WORKERS > 1 the process started becomes a supervisor of that many worker
processes, so that one service uses every core (one Python process serves on one).
gRPC forbids fork once its threads run, and a grpc.aio server belongs to the process
and loop that made it; so the supervisor does only what is safe before fork
(settings, migrations, the database URL, the port), then forks, and each worker builds
its own database pool and gRPC server on the shared port (SO_REUSEPORT: the kernel
spreads incoming connections over the workers' listening sockets).
"""
from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from aos_runtime import auth, metrics, provision, tracing
from aos_runtime.access import AccessRecorder, access_rules, parse_networks
from aos_runtime.admission import Admission
from aos_runtime.config import ConfigError, Settings, check_dev_key_allowed
from aos_runtime.db import READ_ONLY, ROLES, Database, check_login, libpq_url
from aos_runtime.embedded import DATABASE, embedded_port, stop_embedded
from aos_runtime.local_state import dev_secret
from aos_runtime.observability import configure_logging
from aos_runtime.pagination import PageTokens
from aos_runtime.server import PendingCalls, ServiceContext, Servicer, ServiceServer, run_until_signalled

log = logging.getLogger("aos.service")

# The GIL switch interval of a service process with heavy isolation on (see build_server).
HEAVY_SWITCH_INTERVAL_S = 0.001
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def token_verifier(settings: Settings) -> auth.TokenVerifier:
    """The configured keys; with none configured, the development secret under AOS_DATA_DIR
    (with DATABASE_URL set only when AOS_DEV_KEYS allows it)."""
    if not settings.jwt_secret and not settings.jwt_public_key_file:
        check_dev_key_allowed(settings, "AOS_AUTH_JWT_SECRET")
        log.warning("no JWT key configured: using the development secret under AOS_DATA_DIR")
        return auth.TokenVerifier.from_settings(settings,
                                                secret=dev_secret(settings.data_dir, auth.DEV_SECRET_NAME))
    return auth.TokenVerifier.from_settings(settings)


def build_server(name: str, servicers: Callable[[ServiceContext], list[Servicer]], settings: Settings,
                 database_url: str, *, port: int | None = None, reuse_port: bool = False) -> ServiceServer:
    """``database_url``: the service's own login DSN. An admin, owner or other role's DSN is
    refused here (UnsafeDatabaseLogin), before the server can start."""
    db = Database(database_url, service=name, pool_size=settings.pool_size,
                  pool_timeout_s=settings.pool_timeout_s, statement_timeout_ms=settings.statement_timeout_ms,
                  connect_timeout_s=settings.connect_timeout_s,
                  heavy_pool_size=settings.heavy_concurrency if settings.heavy_isolation else 0,
                  heavy_processes=settings.heavy_processes, log_level=settings.log_level,
                  trim_heap=settings.heap_trim, worker_recycle_mib=settings.heavy_worker_recycle_mib,
                  heavy_nice=settings.heavy_nice, heavy_backend_nice=settings.heavy_backend_nice)
    try:
        db.check_login()
    except BaseException:
        db.engine.dispose()
        raise
    if settings.heavy_isolation:
        # A heavy call's pool thread is mostly Python (hashing, rendering) holding the GIL; a
        # light call waiting for it gets it after the switch interval. 1 ms instead of 5 ms:
        # B's p50 under A's integrity flood 30 → 25 ms, its calls done +35 %
        # (tests/reliability/test_fairness.py on the shared machine; the report of #19).
        sys.setswitchinterval(HEAVY_SWITCH_INTERVAL_S)
    context = ServiceContext(db=db, page_tokens=PageTokens.from_settings(settings), settings=settings)
    implementations = servicers(context)
    return ServiceServer(name, implementations, db, token_verifier(settings), host=settings.bind_host,
                         port=settings.ports[name] if port is None else port,
                         max_message_bytes=settings.max_message_bytes, grace_period_s=settings.grace_period_s,
                         health_probe_interval_s=settings.health_probe_interval_s, reuse_port=reuse_port,
                         admission=admission_of(settings), access=access_recorder(name, implementations, settings, db),
                         pending=PendingCalls(settings.max_pending_calls, settings.pending_calls_early_drop,
                                              settings.max_unrequested_s))


def access_recorder(name: str, implementations: list[Servicer], settings: Settings,
                    db: Database) -> AccessRecorder | None:
    """The service's access evidence (aos_runtime.access), None when it serves no evidence read
    or AOS_ACCESS_RECORDING is off. A read-only service reading from a replica
    (AOS_READ_DATABASE_URL) writes its entries through one connection of its own login on
    the primary (its AOS_<NAME>_DATABASE_URL, which run_service sets to the primary's DSN)."""
    rules = access_rules([s.descriptor for s in implementations])
    if not rules or not settings.access_recording:
        return None
    writer = db
    primary = settings.service_database_urls.get(name)
    if name in READ_ONLY and settings.read_database_url and primary:
        writer = Database(primary, service=name, pool_size=1, pool_timeout_s=settings.pool_timeout_s,
                          statement_timeout_ms=settings.statement_timeout_ms,
                          connect_timeout_s=settings.connect_timeout_s)
    return AccessRecorder(writer, rules, record_lists=settings.access_record_lists,
                          trusted_proxies=parse_networks(" ".join(settings.trusted_proxies)),
                          flush_interval_s=settings.access_flush_ms / 1000, service=name)


def admission_of(settings: Settings) -> Admission:
    """The server's admission gates from AOS_MAX_INFLIGHT, AOS_QUEUE_BUDGET_S, AOS_SHED_LAG_S,
    AOS_ACCEPTED_TARGET_S, AOS_ADAPTIVE_INFLIGHT_MIN, AOS_DOWNLOADS_PER_TENANT,
    AOS_INGEST_INFLIGHT_BYTES*, AOS_HEAVY_* and AOS_HEAP_TRIM."""
    return Admission.of(max_inflight=settings.max_inflight, queue_budget_s=settings.queue_budget_s,
                        heavy_isolation=settings.heavy_isolation, heavy_concurrency=settings.heavy_concurrency,
                        heavy_per_tenant=settings.heavy_per_tenant,
                        heavy_queue_per_tenant=settings.heavy_queue_per_tenant,
                        heavy_queue_budget_s=settings.heavy_queue_budget_s, shed_lag_s=settings.shed_lag_s,
                        streams_per_tenant=settings.downloads_per_tenant,
                        inflight_bytes=settings.ingest_inflight_bytes,
                        inflight_bytes_per_tenant=settings.ingest_inflight_bytes_per_tenant,
                        trim_heap=settings.heap_trim,
                        accepted_target_s=settings.accepted_target_s,
                        adaptive_inflight_min=settings.adaptive_inflight_min)


def run_service(name: str, servicers: Callable[[ServiceContext], list[Servicer]]) -> None:
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        # Keys first: a missing or unusable one stops the service before it migrates or forks.
        token_verifier(settings)
        page_tokens = PageTokens.from_settings(settings)
        # A servicer reads the keys only it needs (the export signing keys) when it is built:
        # built once here, with no database (no call reaches it), so they are checked here too.
        servicers(ServiceContext(db=None, page_tokens=page_tokens,  # type: ignore[arg-type]  # no call, no db
                                 settings=settings))
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")
    started_embedded = False
    try:
        url, started_embedded = _own_database_url(name, settings)
        # From here on the process holds no admin credential, not even in its environment
        # (forked workers and anything they spawn inherit it).
        os.environ.pop("DATABASE_URL", None)
        settings = dataclasses.replace(settings, database_url=None)
        replica = settings.read_database_url
        if name in READ_ONLY and replica:
            # The primary's DSN stays known for the one thing such a service writes: its access
            # entries (access_recorder).
            settings = dataclasses.replace(settings, service_database_urls={**settings.service_database_urls,
                                                                            name: url})
            url = provision.read_url(url, replica)
        _check_before_fork(name, url)
    except ConfigError as exc:
        if started_embedded:
            stop_embedded(settings.data_dir)
        sys.exit(f"configuration error: {exc}")
    try:
        if settings.workers == 1:
            asyncio.run(_serve(name, servicers, settings, url))
            return
        code = _supervise(name, servicers, settings, url)
    finally:
        if started_embedded:
            stop_embedded(settings.data_dir)
    if code:
        sys.exit(code)


def _own_database_url(name: str, settings: Settings) -> tuple[str, bool]:
    """(this service's login DSN, whether this process caused the embedded Postgres to start).

    AOS_<NAME>_DATABASE_URL when set. Else, with DATABASE_URL (an admin DSN) set: refused, a
    service never logs in as the admin. Else the embedded default: the migration step runs
    as a child process (it alone reads the superuser's password), then the service logs in
    as its role with the password that step generated under AOS_DATA_DIR.
    """
    own = settings.service_database_urls.get(name)
    if own:
        if settings.migrate_on_start and settings.database_url:
            _migration_step(settings, keep_running=False)
        return own, False
    variable = f"AOS_{name.upper()}_DATABASE_URL"
    if settings.database_url:
        raise ConfigError(f"DATABASE_URL is the admin's DSN, for the migration step only; the {name} service "
                          f"logs in as its own role {ROLES[name]}: set {variable} "
                          "(docs/DATABASE.md, 'Database logins')")
    was_running = embedded_port(settings.data_dir) is not None
    _migration_step(settings, keep_running=True)
    port = embedded_port(settings.data_dir)
    if port is None:
        raise ConfigError(f"the embedded Postgres under {settings.data_dir} is not running after the migration step")
    password = dev_secret(settings.data_dir, provision.password_secret(ROLES[name]))
    return provision.login_url(f"postgresql://127.0.0.1:{port}/{DATABASE}", name, password), not was_running


def _migration_step(settings: Settings, *, keep_running: bool) -> None:
    """``python -m aos_runtime.migrate`` in a child process: the admin's credentials stay in it.
    With AOS_MIGRATE_ON_START false, only the login roles are provisioned."""
    action = "upgrade" if settings.migrate_on_start else "provision"
    argv = [sys.executable, "-m", "aos_runtime.migrate", action, *(["--keep-running"] if keep_running else [])]
    result = subprocess.run(argv, env=dict(os.environ), stdout=subprocess.DEVNULL)
    if result.returncode != 0:
        raise ConfigError(f"the migration step ({' '.join(argv[1:])}) failed with exit code {result.returncode}")


def _check_before_fork(name: str, url: str) -> None:
    """The login checked once by the process that forks the workers: a refused DSN is one clear
    error, not one per worker (psycopg alone here, no thread starts before the fork)."""
    import psycopg

    try:
        conn = psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError:
        # Not reachable yet: start NOT_SERVING, as before; each worker's connections are checked.
        log.warning("database not reachable at start; the login is checked on its first connection",
                    extra={"service": name})
        return
    with conn:
        check_login(conn, name)


async def _serve(name: str, servicers: Callable[[ServiceContext], list[Servicer]], settings: Settings, url: str,
                 *, port: int | None = None, reuse_port: bool = False, worker: int = 0) -> None:
    # In this process (a worker: after the fork): both start threads.
    tracing.configure(name)
    exposed = None
    if settings.metrics_ports[name]:
        exposed = metrics.serve(settings.bind_host, settings.metrics_ports[name] + worker,
                                f"AOS_{name.upper()}_METRICS_PORT")
    # Built inside the running loop: a grpc.aio server belongs to the loop that creates it.
    server = build_server(name, servicers, settings, url, port=port, reuse_port=reuse_port)
    if reuse_port:
        # A worker is forked with the stop signals blocked (see _supervise). Unblock them on
        # the loop's first turn: run_until_signalled has installed its handlers by then, so a
        # signal that arrived meanwhile is delivered to them rather than lost or fatal.
        asyncio.get_running_loop().call_soon(signal.pthread_sigmask, signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        await run_until_signalled(server)
    finally:
        tracing.stop()  # the spans still buffered go out
        if exposed:
            exposed.close()


def _supervise(name: str, servicers: Callable[[ServiceContext], list[Servicer]], settings: Settings,
               url: str) -> int:
    """Fork ``settings.workers`` workers on one port and wait for them; the exit code.

    SIGTERM/SIGINT are forwarded to every worker, each drains as a single process does.
    A worker that exits while no stop was asked for is not restarted: the others are
    stopped and the supervisor exits 1. Whatever runs the service (make run, compose's
    restart policy, Kubernetes) then sees the failure and restarts the whole service
    with a fresh state, rather than a crash loop hidden behind a port that still answers.
    """
    _require_single_thread()
    reservation = _reserve_port(settings.bind_host, settings.ports[name])
    port = reservation.getsockname()[1]
    address = f"{settings.bind_host}:{port}"
    workers: dict[int, int] = {}      # pid → worker index
    stopping = False

    def stop(signum: int | None = None, frame=None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            os.kill(pid, signal.SIGTERM)

    # Blocked across the forks: a signal arriving meanwhile waits for the handler that
    # should see it (the supervisor's below, or a worker's once its loop runs).
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        for sig in STOP_SIGNALS:
            signal.signal(sig, stop)
        supervisor = os.getpid()
        for index in range(settings.workers):
            pid = os.fork()
            if pid == 0:
                _die_with(supervisor)
                _worker(index, name, servicers, settings, url, port, reservation)
            workers[pid] = index
    except BaseException:
        stop()  # e.g. fork failed: the workers already started go too
        for pid in workers:
            os.waitpid(pid, 0)
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    log.info("workers started", extra={"service": name, "address": address, "pids": sorted(workers)})
    failed = False
    while workers:
        pid, status = os.wait()  # after a signal's handler has run, Python resumes the wait
        if pid not in workers:
            continue  # an orphan reparented to us (we may be PID 1 in a container): reaped, nothing more
        index = workers.pop(pid)
        code = os.waitstatus_to_exitcode(status)  # negative: killed by that signal
        if stopping and code == 0:
            continue
        log.error("worker exited unexpectedly" if not stopping else "worker did not stop cleanly",
                  extra={"service": name, "worker": index, "pid": pid, "exit_code": code})
        failed = True
        if not stopping:
            stop()
    reservation.close()
    log.info("workers stopped", extra={"service": name, "address": address, "clean": not failed})
    return 1 if failed else 0


def _die_with(supervisor: int) -> None:
    """Linux: a worker gets SIGTERM (and drains) when its supervisor dies, even by SIGKILL,
    so that no worker goes on serving the port with nothing supervising it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the supervisor's own stop() is all there is
        return
    if os.getppid() != supervisor:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(index: int, name: str, servicers: Callable[[ServiceContext], list[Servicer]], settings: Settings,
            url: str, port: int, reservation: socket.socket) -> NoReturn:
    """A forked worker: its own pool and server on ``port``; never returns."""
    code = 1
    try:
        reservation.close()  # the supervisor's; this process listens on its own socket
        for sig in STOP_SIGNALS:  # not the supervisor's forwarding handler
            signal.signal(sig, signal.SIG_DFL)
        _tag_logs(index)
        asyncio.run(_serve(name, servicers, settings, url, port=port, reuse_port=True, worker=index))
        code = 0
    except BaseException:  # whatever it was, the supervisor sees the exit code
        log.exception("worker failed", extra={"service": name})
    finally:
        # os._exit: the supervisor's context (the embedded Postgres it may have started,
        # its open reservation) is not this process's to clean up.
        os._exit(code)


class _WorkerTag(logging.Filter):
    """Marks every log line of a worker with its index and pid: which process served a call."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index, self.pid = index, os.getpid()

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker, record.pid = self.index, self.pid
        return True


def _tag_logs(index: int) -> None:
    tag = _WorkerTag(index)
    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)


def _require_single_thread() -> None:
    """Refuse to fork with other threads running (gRPC's, a pool's): their locks and state
    would be copied half-way into the workers."""
    try:
        threads = len(os.listdir("/proc/self/task"))  # native threads too, not only Python's
    except OSError:
        threads = threading.active_count()
    if threads != 1:
        raise RuntimeError(f"AOS_WORKERS > 1: {threads} threads run before fork; nothing may start "
                           "threads (gRPC, a database pool) before the workers are forked")


def _reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT and never listening.

    It settles the port every worker binds (with port 0 each worker would get a port of
    its own) and holds it while workers come and go. The kernel hands connections only
    to listening sockets, so this one never takes a caller's connection.
    """
    family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock
