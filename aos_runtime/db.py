"""Database engine, pool and tenant-scoped transactions.

Access model — chosen by measurement (bench/db_access_choice.py; the figures and the
run they came from are in BENCHMARKS.md): store functions are plain synchronous
SQLAlchemy Core over psycopg 3, run by ``Database.run`` in a thread pool exactly as
large as the connection pool. Against the async engine the throughput was the same,
but under overload the thread pool kept the tail bounded (callers queue in FIFO order
for a connection instead of being scheduled unevenly); we take that, and synchronous
store code that reads as plain SQL.

What the async model gave for free is kept explicitly:
- a call's deadline bounds its SQL: ``SET LOCAL statement_timeout`` is the time the
  call has left, and a cancelled call cancels its running query (psycopg's
  ``cancel()`` is safe from another thread);
- a call never waits forever for a connection: after ``pool_timeout_s`` in the
  queue it is refused (PoolExhausted: RESOURCE_EXHAUSTED), and the deadline bounds it too.

Every transaction carries the caller's tenant (``SET LOCAL aos.tenant_id``; row-level
security reads it). Each service logs in as its own LOGIN role (SPEC §6; made by
``aos_runtime.provision``), and every new connection checks that its login is that
role and can be nothing else (``check_login``): no superuser, no BYPASSRLS, CREATEROLE,
CREATEDB or REPLICATION, owner of nothing (large objects included), member of no role
— so ``SET ROLE`` to another role and ``SET SESSION AUTHORIZATION`` fail from the session
itself — and no stored role setting (``ALTER ROLE … SET``, which every later session of
the role would inherit). A
service handed an admin or owner DSN refuses to start. Overview and logs sessions
are read-only.
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
import psycopg
import sqlalchemy.exc
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import set_json_loads
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from aos_recording.driver import driver_sql as _driver_sql, observed as _observed
from aos_recording.hashing import json_plain
from aos_recording.logins import login_problems
from aos_runtime.config import ConfigError
from aos_runtime.faults import DeadlinePassed, PoolExhausted, ReplicaBehind
from aos_runtime.offload import HEAVY_NICE as OFFLOAD_NICE, HeavyProcesses

T = TypeVar("T")
log = logging.getLogger("aos.db")

ROLES = {
    "overview": "aos_overview",
    "logs": "aos_logs",
    "export": "aos_export",
    "ingest": "aos_ingest",
    "producer": "aos_producer",
}
READ_ONLY = frozenset({"overview", "logs"})

# Absolute time.monotonic() by which the current call must answer; set by the
# server's call wrapper from the gRPC deadline, read when a transaction opens.
call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("call_deadline", default=None)

# Read-your-writes on a replica (docs/SERVING.md): a write answers with the WAL position
# after its commit (aos_runtime.headers.WAL_POSITION_HEADER); a read that passes it back
# (MIN_WAL_POSITION_HEADER, set here by the server's call wrapper) waits until its database
# has replayed that far.
min_wal_position: contextvars.ContextVar[str | None] = contextvars.ContextVar("min_wal_position", default=None)
# The longest a read waits for its replica (less when the call's deadline is nearer).
REPLAY_WAIT_S = 5.0
# On a primary pg_last_wal_replay_lsn() is NULL: it holds every write it answered.
_REPLAYED = text("SELECT coalesce(pg_last_wal_replay_lsn() >= CAST(:wanted AS pg_lsn), true), "
                 "pg_last_wal_replay_lsn()::text")

_SCOPE = "SELECT set_config('aos.tenant_id', :tenant, true), set_config('statement_timeout', :timeout, true)"
# A hot read's scope (``pipelined``) also keeps the generic plan of its prepared statements
# (issue #22). Under "auto", PostgreSQL plans the ledger's page anew on every execution (a
# custom plan over every monthly partition: ~2.6 ms of the server's CPU per page, measured,
# BENCHMARKS.md) because the generic plan's estimate looks dearer; the generic plan, pruning
# partitions when it runs, read the same page for ~0.57 ms. SET LOCAL: it ends with the
# transaction, and no other statement of the session is planned differently.
_HOT_SCOPE = _SCOPE + ", set_config('plan_cache_mode', 'force_generic_plan', true)"


def fetch_rows(conn: Any, sql: str, params: Mapping[str, Any], *, binary: bool = False,
               prepare: bool | None = None) -> list[dict[str, Any]]:
    """The rows of a hot read (issue #22) as dicts, through psycopg directly: the same
    connection and transaction as ``conn`` (so the tenant scope and statement timeout that
    ``Database.run`` set, and row-level security, apply), without SQLAlchemy's per-statement
    work (compiling the text() clause, its result machinery, RowMapping): ~25 % of a list call's
    CPU in bench/profile_audit.py. psycopg prepares a statement run 5 times in a session, as
    under SQLAlchemy. When anything listens to the engine's statements (tracing's SQL spans; a
    test or benchmark capturing the SQL it sends), through SQLAlchemy, so that it sees them.

    ``binary``: the rows in PostgreSQL's binary format, the same values (tests/db/test_pipelined.py)
    for less of the client's CPU — the ledger's page of 51 rows, 0.63 → 0.55 ms per transaction
    (bench/driver_floor.py, issue #22): no text to parse for times, integers and bytea. Only for a
    statement whose every result column is of a type psycopg loads from binary (text, integers,
    timestamptz, bytea, json/jsonb, boolean): a column of another type (an enum, a composite)
    would come back as bytes.

    ``prepare``: True prepares the statement on the connection at its first execution (psycopg's
    ``prepare``), not its fifth: for a statement whose generic plan is wanted from the start."""
    if _observed(conn):
        return [dict(row) for row in conn.execute(text(sql), params).mappings()]
    with conn.connection.driver_connection.cursor(row_factory=dict_row, binary=binary) as cursor:
        cursor.execute(_driver_sql(sql), params, prepare=prepare)
        return cursor.fetchall()


_STREAMS = itertools.count()


def json_loads(data: bytes | str) -> Any:
    """``json.loads(data)``, the same value, mostly by orjson (C, several times faster: issue #22,
    an export reads a jsonb state per ledger row). The two differ only on numbers: orjson reads an
    integer past 64 bits as a float, and its float parsing is not the standard library's — so a
    value holding any float is read again by ``json.loads``. Integers within 64 bits, strings,
    and structure come out the same (tests/unit/test_json_loads.py)."""
    try:
        value = orjson.loads(data)
        if json_plain(value):  # what orjson gives is plain JSON (hashing.json_plain) but for floats
            return value
    except (orjson.JSONDecodeError, RecursionError):  # deep nesting, a number past a double's range
        pass
    return json.loads(data)


def stream_tuples(conn: Any, sql: str, params: Mapping[str, Any], *, batch: int,
                  binary: bool = False, fast_json: bool = False) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of a long read (an export's records) as tuples in the statement's column order,
    a list of ``batch`` at a time (the last may be shorter, or empty), through a server-side cursor
    on ``conn``'s connection and transaction, through psycopg directly (``fetch_rows``' reasons: no
    SQLAlchemy result machinery or RowMapping per row; and no dict per row: issue #22); through
    SQLAlchemy's streamed result when anything listens to the engine's statements. ``binary`` as
    for ``fetch_rows``. Statements on ``conn`` between the batches are fine: the cursor is a named
    one, fetched ``batch`` rows at a time. ``fast_json``: json and jsonb columns read by
    ``json_loads`` (the same values as psycopg's default, json.loads)."""
    if _observed(conn):
        result = conn.execute(text(sql), params, execution_options={"stream_results": True, "yield_per": batch})
        for part in result.partitions():
            yield [tuple(row) for row in part]
        return
    driver = conn.connection.driver_connection
    with driver.cursor(name=f"aos_stream_{next(_STREAMS)}", row_factory=tuple_row, binary=binary) as cursor:
        if fast_json:
            set_json_loads(json_loads, cursor)
        cursor.execute(_driver_sql(sql), params)
        while True:  # fetchmany: the cursor's own iterator runs Python per row
            rows = cursor.fetchmany(batch)
            yield rows
            if len(rows) < batch:
                return


def fetch_value(conn: Any, sql: str, params: Mapping[str, Any]) -> Any:
    """The first column of the one row a hot read returns (``fetch_rows``' path)."""
    if _observed(conn):
        return conn.execute(text(sql), params).scalar_one()
    with conn.connection.driver_connection.cursor() as cursor:
        cursor.execute(_driver_sql(sql), params)
        row = cursor.fetchone()
        if row is None or cursor.fetchone() is not None:
            raise sqlalchemy.exc.NoResultFound("expected exactly one row")  # as scalar_one() would
        return row[0]


def fetch_rows_and_value(conn: Any, sql: str, params: Mapping[str, Any], value_sql: str,
                         value_params: Mapping[str, Any], *, binary: bool = False
                         ) -> tuple[list[dict[str, Any]], Any]:
    """``fetch_rows(sql, binary=binary)`` and ``fetch_value(value_sql)`` (e.g. a page and its
    total), both sent before either is read: in a ``pipelined`` transaction they reach the
    database in the same round trip as its BEGIN and tenant scope (issue #22)."""
    if _observed(conn):
        return fetch_rows(conn, sql, params), fetch_value(conn, value_sql, value_params)
    driver = conn.connection.driver_connection
    with driver.cursor(row_factory=dict_row, binary=binary) as rows, driver.cursor() as value:
        rows.execute(_driver_sql(sql), params)
        value.execute(_driver_sql(value_sql), value_params)
        found = rows.fetchall()
        one = value.fetchone()
        if one is None or value.fetchone() is not None:
            raise sqlalchemy.exc.NoResultFound("expected exactly one row")
        return found, one[0]


def pipelined(work: Callable[..., T]) -> Callable[..., T]:
    """Marks a hot read's work (issue #22) whose statements all go through ``fetch_rows`` /
    ``fetch_value`` / ``fetch_rows_and_value``: ``Database.run`` then runs its transaction in
    psycopg's pipeline mode, so that BEGIN, the tenant scope and the work's first statements
    travel to the database together (one round trip instead of one each) and COMMIT needs no
    wait of its own. The same statements, transaction and row-level security as without it.
    Its scope also keeps its prepared statements' generic plans (``_HOT_SCOPE``), pipelined
    or not (with SQL tracing on, a hot read runs one statement at a time, planned alike)."""
    work.pipelined = True  # type: ignore[attr-defined]
    return work


def cpu_bound(work: Callable[..., T]) -> Callable[..., T]:
    """Marks work that is mostly the process's own CPU (hashing, rendering: an export, a
    verification's re-render, an integrity walk). In a heavy call, with heavy worker
    processes (AOS_HEAVY_PROCESSES), ``Database.run`` runs it in one of those
    (aos_runtime.offload), apart from the light calls' interpreter: a module-level function
    whose arguments and result pickle, or are objects the service shared (``Database.share``)."""
    work.cpu_bound = True  # type: ignore[attr-defined]
    return work


class UnsafeDatabaseLogin(ConfigError):
    """A service's database login could do more than its role: raised at start, never served."""


def check_login(dbapi_conn, service: str) -> None:
    """Raises UnsafeDatabaseLogin unless the session is ``service``'s login role and nothing more."""
    role = ROLES[service]
    problems = login_problems(dbapi_conn, role)
    if problems:
        raise UnsafeDatabaseLogin(
            f"the {service} service refuses its database login: it {'; '.join(problems)}. Give it "
            f"AOS_{service.upper()}_DATABASE_URL, the DSN of its own login role {role} (made by "
            "`python -m aos_runtime.migrate upgrade`; docs/DATABASE.md, 'Database logins')")


def sync_url(url: str) -> str:
    """The SQLAlchemy URL for psycopg 3 (``postgresql://`` → ``postgresql+psycopg://``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {parsed.drivername!r}")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The plain ``postgresql://`` form psycopg itself takes."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class _Pool:
    """One SQLAlchemy pool and the thread pool exactly as large that runs its transactions,
    with the recent transaction times (for a refusal's retry delay)."""

    def __init__(self, engine: Any, size: int, name: str, *, nice: int = 0) -> None:
        self.engine = engine
        self.size = size
        lower = functools.partial(_lower_thread_priority, nice) if nice else None
        self.executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name, initializer=lower)
        self.durations: deque[float] = deque(maxlen=50)

    def retry_after_s(self) -> float | None:
        """About when a connection frees: the mean recent transaction time (None: none yet)."""
        if not self.durations:
            return None
        return round(sum(self.durations) / len(self.durations), 3)


def _lower_thread_priority(nice: int = OFFLOAD_NICE) -> None:
    """A heavy pool's thread runs at nice +``nice`` (AOS_HEAVY_NICE; Linux: a thread's own priority),
    so that on a busy machine the kernel gives light work (other threads, other services) the CPU
    first. Raising one's niceness needs no privilege; where it is not possible, nothing changes."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (OSError, AttributeError):
        pass


# Whether the current call is heavy work (set by the server's call wrapper for the RPCs whose
# proto declares ``(aos.evidence.v1.heavy) = true``): its transactions then run on the heavy
# pool, whose connections and threads light reads never wait behind.
heavy_call: contextvars.ContextVar[bool] = contextvars.ContextVar("heavy_call", default=False)


class Database:
    """One pool per service process, every session in the service's role; with
    ``heavy_pool_size`` a second pool (its own connections and threads) for heavy calls."""

    def __init__(self, url: str, *, service: str, pool_size: int = 10, pool_timeout_s: float = 5,
                 statement_timeout_ms: int = 30000, connect_timeout_s: int = 3, heavy_pool_size: int = 0,
                 heavy_processes: bool = False, log_level: str = "INFO", trim_heap: bool = True,
                 worker_recycle_mib: int = 0, heavy_nice: int = OFFLOAD_NICE, heavy_backend_nice: bool = True) -> None:
        self.service = service
        self.url = url
        self.pool_timeout_s = pool_timeout_s
        self.statement_timeout_ms = statement_timeout_ms
        self.connect_timeout_s = connect_timeout_s
        self._light = _Pool(self._engine(pool_size, "light"), pool_size, f"db-{service}")
        self.engine = self._light.engine
        # Heavy calls wait for a heavy connection only as long as admission let them: the
        # heavy pool is as large as the number of heavy calls admitted at once, each holding
        # at most one connection at a time.
        self._heavy = _Pool(self._engine(heavy_pool_size, "heavy"), heavy_pool_size, f"db-{service}-heavy",
                            nice=heavy_nice) if heavy_pool_size else None
        # Told how long each call waited for a connection (a database thread): the metrics set it.
        self.observe_wait: Callable[[float], None] | None = None
        # A heavy call's ``cpu_bound`` work runs in processes of its own (aos_runtime.offload), as
        # many as heavy calls run at once, each with one connection of this login.
        self.offload: HeavyProcesses | None = None
        if heavy_pool_size and heavy_processes:
            self.offload = HeavyProcesses(heavy_pool_size, service=service, url=url, log_level=log_level,
                                          pool_timeout_s=pool_timeout_s, trim_heap=trim_heap,
                                          recycle_mib=worker_recycle_mib, nice=heavy_nice,
                                          backend_nice=heavy_backend_nice, options={
                                              "pool_timeout_s": pool_timeout_s,
                                              "statement_timeout_ms": statement_timeout_ms,
                                              "connect_timeout_s": connect_timeout_s})

    @property
    def pool(self) -> _Pool:
        """The light calls' pool (a heavy worker process's only one)."""
        return self._light

    def share(self, obj: T, name: str, factory: Callable[..., T], *args: Any) -> T:
        """``obj``, a long-lived object of the service that ``cpu_bound`` work takes as an
        argument and that must not be pickled (it holds a secret: the signing key ring), named
        ``name``: a heavy worker process builds its own as ``factory(*args)`` (from the
        settings), and a job refers to it by name. Returns ``obj``."""
        if self.offload is not None:
            self.offload.share(obj, name, factory, *args)
        return obj

    def _engine(self, size: int, kind: str) -> Any:
        service = self.service
        # The login is the role (SPEC §6): no "-c role=" here, a login that needed one would
        # be one that can switch roles, and check_login refuses it.
        options = "-c default_transaction_read_only=on" if service in READ_ONLY else ""
        engine = create_engine(
            sync_url(self.url), pool_size=size, max_overflow=0, pool_timeout=self.pool_timeout_s,
            # hide_parameters: bound values (artifact bytes, evidence) never enter an exception's text.
            pool_recycle=1800, hide_parameters=True,
            connect_args={"options": options, "connect_timeout": self.connect_timeout_s,
                          "application_name": f"aos-{service}" if kind == "light" else f"aos-{service}-{kind}"})

        @event.listens_for(engine, "connect")
        def _check(dbapi_conn, _record) -> None:
            # Every new connection, not only the first: a password changed to another role's
            # or a role altered meanwhile is caught before the connection serves a call.
            try:
                check_login(dbapi_conn, service)
            finally:
                dbapi_conn.rollback()

        # And before SQLAlchemy's own first queries (dialect initialize runs on first_connect,
        # ahead of "connect"): a stored ``search_path = pg_temp, …`` would fail those with a
        # bare "permission denied to create temporary tables" instead of check_login's reason.
        event.listen(engine, "first_connect", _check, insert=True)
        return engine

    def engines(self) -> list[Any]:
        """The light calls' engine, and the heavy calls' when there is one."""
        return [pool.engine for pool in (self._light, self._heavy) if pool is not None]

    def check_login(self) -> None:
        """Connect once now: an unsafe login raises UnsafeDatabaseLogin at start, not at the first call.

        A database that does not answer yet is no reason to refuse: the service starts
        NOT_SERVING (its health follows the database) and every connection it makes
        later runs the same check before serving anything."""
        try:
            with self.engine.connect():
                pass
        except sqlalchemy.exc.OperationalError as exc:
            log.warning("database not reachable at start; the login is checked on its first connection",
                        extra={"service": self.service, "error": type(exc.orig).__name__})

    def _timeout_ms(self, deadline: float | None) -> int:
        """The statement timeout for a transaction starting now: what the call has left."""
        if deadline is None:
            return self.statement_timeout_ms
        remaining = int((deadline - time.monotonic()) * 1000)
        if remaining <= 0:
            # Waited in the queue past its deadline: the caller has its answer
            # (DEADLINE_EXCEEDED) already; do not spend a connection on it.
            raise DeadlinePassed()
        return min(self.statement_timeout_ms, remaining)

    def transact(self, pool: _Pool, tenant_id: str | None, work: Callable[..., T], args: tuple[Any, ...], *,
                 read_write: bool = False, deadline: float | None = None, wanted: str | None = None,
                 running: dict[str, Any] | None = None, before_commit: Callable[[], None] | None = None) -> T:
        """``work(conn, *args)`` in one transaction of ``pool``'s, scoped to ``tenant_id``, its
        statement timeout what is left until ``deadline`` (``run``'s job, in its pool thread or
        a heavy worker process). ``running`` is told the connection while it runs (to cancel it).
        ``before_commit`` is called once the work has returned, before the COMMIT; what it raises
        rolls the transaction back (a heavy worker asks its service there: aos_runtime.offload)."""
        # Timed when the job starts, not when it was queued: time spent waiting
        # for a connection is time the call no longer has.
        timeout_ms = str(self._timeout_ms(deadline))
        started = time.monotonic()
        try:
            with pool.engine.begin() as conn:
                if running is not None:
                    running["dbapi"] = conn.connection.dbapi_connection
                try:
                    if read_write:  # before any query: PostgreSQL sets the mode only then
                        conn.exec_driver_sql("SET TRANSACTION READ WRITE")
                    scope = {"tenant": tenant_id or "", "timeout": timeout_ms}
                    hot = getattr(work, "pipelined", False)
                    if hot and wanted is None and not read_write and not _observed(conn):
                        return _pipelined(conn, scope, work, args, before_commit)
                    # The tenant scope: through psycopg as the hot reads are (fetch_rows).
                    fetch_rows(conn, _HOT_SCOPE if hot else _SCOPE, scope)
                    if wanted is not None:
                        _await_replay(conn, wanted, deadline)
                    result = work(conn, *args)
                    if before_commit is not None:
                        before_commit()
                    return result
                finally:
                    if running is not None:
                        running.pop("dbapi", None)
        finally:
            pool.durations.append(time.monotonic() - started)

    async def run(self, tenant_id: str | None, work: Callable[..., T], *args: Any, read_write: bool = False) -> T:
        """Run ``work(conn, *args)`` in one transaction scoped to ``tenant_id`` (None: no tenant rows).
        ``read_write``: the transaction may write even in a read-only service's session (its
        access entries, aos_runtime.access); what it may write is its role's grants' business."""
        deadline, wanted = call_deadline.get(), min_wal_position.get()
        heavy = heavy_call.get()
        if heavy and self.offload is not None and getattr(work, "cpu_bound", False):
            return await self.offload.run(tenant_id, work, args, read_write=read_write, deadline=deadline,
                                          wanted=wanted)
        pool = self._heavy if heavy and self._heavy is not None else self._light
        running: dict[str, Any] = {}

        def job() -> T:
            if self.observe_wait is not None:
                self.observe_wait(time.monotonic() - submitted)
            return self.transact(pool, tenant_id, work, args, read_write=read_write, deadline=deadline,
                                 wanted=wanted, running=running)

        submitted = time.monotonic()
        # In the call's context (its trace span, request id): the statements' spans are its children.
        queued = pool.executor.submit(contextvars.copy_context().run, job)
        future = asyncio.wrap_future(queued)
        refused = []

        def give_up() -> None:
            # cancel() succeeds only for a job that has not started: never for one that may have
            # written. The wrapped future is then cancelled too, which ends the await below.
            if queued.cancel():
                refused.append(True)

        # A timer rather than asyncio.wait(timeout=): the same bound for a fraction of its work per call.
        timer = asyncio.get_running_loop().call_later(self.pool_timeout_s, give_up)
        try:
            return await future
        except asyncio.CancelledError:
            if refused:
                raise PoolExhausted(retry_after_s=pool.retry_after_s()) from None
            # The caller went away (cancel or deadline): stop its query, not just our wait.
            queued.cancel()
            dbapi = running.get("dbapi")
            if dbapi is not None:
                dbapi.cancel()
            raise
        finally:
            timer.cancel()

    async def stream(self, tenant_id: str | None, work: Callable[..., Iterable[T]], *args: Any
                     ) -> AsyncGenerator[T, None]:
        """Yield the items of ``work(conn, *args)`` (e.g. rows of a server-side cursor) as
        ``run`` would return them: one transaction scoped to ``tenant_id``, the same pool
        timeout, deadline and cancellation (a caller that leaves cancels the running query).

        One item in flight at a time: the pool thread makes the next one only when the
        previous one was taken, so memory stays at one item however long the stream. A
        consumer that stops early (closes the iterator, or is cancelled) frees the thread and
        the connection: the thread is never left waiting to hand over an item nobody takes."""
        loop = asyncio.get_running_loop()
        handoff: asyncio.Queue[tuple[bool, T | None]] = asyncio.Queue(maxsize=1)
        stopped = threading.Event()

        def hand(last: bool, item: T | None) -> None:
            if stopped.is_set():
                raise _StreamAbandoned()
            asyncio.run_coroutine_threadsafe(handoff.put((last, item)), loop).result()

        def pump(conn: Any) -> None:
            for item in work(conn, *args):
                hand(False, item)
            hand(True, None)

        producer = asyncio.ensure_future(self.run(tenant_id, pump))
        try:
            while True:
                getter = asyncio.ensure_future(handoff.get())
                done, _ = await asyncio.wait({getter, producer}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    producer.result()  # raises what the work raised
                    raise RuntimeError("the stream's work ended without its end mark")
                last, item = getter.result()
                if last:
                    break
                yield item  # type: ignore[misc]  # only the end mark carries None
            await producer
        finally:
            if not producer.done():
                # Stop the thread at its next hand-over, and free a hand-over already waiting
                # (the queue holds one item): the transaction then rolls back and the
                # connection goes back to the pool. A query running now is cancelled by run().
                stopped.set()
                while not handoff.empty():
                    handoff.get_nowait()
                producer.cancel()

    def release_idle_connections(self, *, light: bool = True) -> int:
        """Closes every pooled connection no call holds now — the heavy pool's, and the light
        pool's too with ``light`` — the pools open new ones as calls need them. The number closed.

        Why (issue #19): libpq grows a connection's input and output buffers to its largest
        message and never shrinks them — after an export wrote its 1 MiB artifact chunks and a
        download read them back, each connection that carried one holds 2–4 MiB until it closes
        (aos_runtime.heap runs this before its trim, when no heavy call or download runs). A new
        connection costs its next call the login and its check (~70 ms measured on a loaded
        machine, ~15 ms warm): nothing to a heavy call, so the light pool is left alone while
        light calls run (``light``). A connection checked out meanwhile is not touched; it goes
        back to the pool when its transaction ends (QueuePool.dispose: until the pool next fills,
        it may hold that many connections more than its size)."""
        closed = 0
        for pool in (self._heavy, self._light if light else None):
            if pool is not None:
                closed += pool.engine.pool.checkedin()
                pool.engine.pool.dispose()
        return closed

    def pool_status(self) -> tuple[int, int, int]:
        """(connections the pool holds at most, in use now, calls waiting for one) — for the metrics."""
        pool = self.engine.pool  # the light calls' pool (the heavy calls' is bounded by admission)
        return (pool.size(), pool.checkedout(),  # the engine is typed Any here: QueuePool has both
                self._light.executor._work_queue.qsize())  # jobs submitted that no pool thread has taken yet

    async def wal_position(self) -> str:
        """Where this database's WAL insert position stands now: at or past the end of every
        commit that has returned (with synchronous_commit off, past the flushed position too)."""
        return await self.run(None, lambda conn: conn.execute(text("SELECT pg_current_wal_insert_lsn()::text"))
                              .scalar_one())

    async def ping(self) -> None:
        """Raises unless a fresh connection answers ``SELECT 1`` in time.

        A fresh connection, not a pooled one: the probe must neither queue behind
        busy calls (a loaded service is not a dead one) nor trust a stale socket.
        """
        conn = await psycopg.AsyncConnection.connect(libpq_url(self.url), connect_timeout=self.connect_timeout_s,
                                                     autocommit=True)
        async with conn:
            await conn.execute("SELECT 1")

    async def close(self) -> None:
        if self.offload is not None:
            await self.offload.close()
        for pool in (self._light, self._heavy):
            if pool is not None:
                pool.executor.shutdown(wait=False, cancel_futures=True)
                await asyncio.to_thread(pool.engine.dispose)


def _pipelined(conn: Any, scope: Mapping[str, str], work: Callable[..., T], args: tuple[Any, ...],
               before_commit: Callable[[], None] | None = None) -> T:
    """``work`` in pipeline mode (``pipelined``): BEGIN and the scope are queued, not awaited;
    the work's first read sends them with its own statements; the COMMIT is sent and the pipeline
    synced before the connection goes back (SQLAlchemy's own commit then finds the
    transaction ended). An error in any statement aborts the rest and is raised here.
    ``before_commit`` as in ``Database.transact``, before the COMMIT is queued."""
    driver = conn.connection.driver_connection
    with driver.pipeline(), driver.cursor() as cursor:
        cursor.execute(_driver_sql(_HOT_SCOPE), scope)
        result = work(conn, *args)
        if before_commit is not None:
            before_commit()
        driver.commit()
    return result


class _StreamAbandoned(Exception):
    """Ends a stream's work in its pool thread once the consumer has stopped taking items."""


def _await_replay(conn, wanted: str, deadline: float | None) -> None:
    """Returns once the session's database has replayed up to ``wanted`` (at once on a
    primary); ReplicaBehind (another instance may be further) after REPLAY_WAIT_S, or the
    call's deadline if sooner: a waiting call holds a pooled connection. Each poll is a
    statement of its own, so the work that follows (READ COMMITTED) sees what was replayed."""
    give_up = min(deadline if deadline is not None else float("inf"), time.monotonic() + REPLAY_WAIT_S)
    while True:
        caught_up, replayed = conn.execute(_REPLAYED, {"wanted": wanted}).one()
        if caught_up:
            return
        if time.monotonic() >= give_up:
            raise ReplicaBehind(replayed, wanted)
        time.sleep(0.005)
