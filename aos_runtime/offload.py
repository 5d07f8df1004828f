"""Heavy work in processes of its own (issue #19: "heavy work apart from light work").

A heavy call's CPU-bound transaction — an export's render, a verification's re-render, an
integrity walk's hashing, each marked ``@db.cpu_bound`` — is mostly Python holding the GIL.
Run in a thread of the service's process, it took the interpreter from the light calls of
the same process: the event loop and the light pool's threads waited for the GIL (up to the
switch interval each time), and its garbage collections and heap trims paused them, whatever
the thread's OS priority. So, with ``AOS_HEAVY_PROCESSES=on`` (the default with the heavy
isolation), ``Database.run`` hands such work, in a heavy call, to one of
``AOS_HEAVY_CONCURRENCY`` worker processes of the service — each with one database
connection in the service's own login, at ``nice`` +``HEAVY_NICE`` (the kernel gives the
light calls' process the CPU first) — and awaits its answer. The transaction is the same
(``Database.transact``: tenant scope, statement timeout from the call's deadline, row-level
security); so are its faults (re-raised in the service as the worker raised them) and its
cancellation: a call that goes away interrupts the worker (SIGINT: psycopg cancels the
running query, the transaction rolls back) and the worker takes the next job afterwards.

Crash safety (tests/e2e/test_export_crash.py): a job's transaction commits only on the service's
word. The worker does the work in its transaction, then asks over the job's pipe (``p``) and waits:
the service's thread for that worker answers ``y`` (commit) unless the call went away meanwhile
(``n``: roll back); a pipe that closes instead (the service ended, however) rolls back. The decision
is taken in the service's process while it is alive, as a heavy thread's own COMMIT was — so a
service killed before it said ``y`` leaves nothing, whatever the worker is doing at that moment.
And a worker does not outlive its service: a thread of the worker waits for the service's end of
the pipe to close (its hangup) and ends the worker there and then (``_exit``: the database rolls
the open transaction back when its connection drops). The fork server then ends too, its last
client gone. (Not the parent-death signal, tried before: a worker's parent is the fork server,
which ends only once every worker has ended — each holds the write end of its "alive" pipe — so
a worker killed "with its parent" was killed only after it had finished, and committed, its job.)

Memory (issue #19: a service's resident memory returns to about idle after its exports): after
each job a worker gives its freed heap back (glibc's ``malloc_trim``), but what a large job grew
stays — pymalloc's 1 MiB arenas go back only when wholly empty, and a few survivors keep each of
them. So a worker whose anonymous memory (its heap) is more than ``recycle_mib`` above what it
held warm, before its first job (its imports, its frozen objects, its connection, the residents),
ends after the job and is replaced (``AOS_HEAVY_WORKER_RECYCLE_MIB``): every job is judged
against that, the first included, so a replacement whose first job is a large export goes too.
After every answer the worker says whether it stays (``k``) or ends (``x``); the caller has its
answer before that, and a replacement starts from the fork server as a worker lost would.

Priority (issue #19): a worker runs at nice +``nice`` (``AOS_HEAVY_NICE``), and so does the
PostgreSQL backend that serves its connection — an export's or an integrity walk's reads are
much of the database's CPU, and a backend at nice 0 competes with the light calls' backends as
the worker no longer does. A process may lower the priority of its own user's processes without
privilege; so when the database runs on this machine (a Unix socket or a loopback address, its
backend's process title naming this connection: never another process that happens to have the
backend's pid), each new connection of the worker's — at its warm-up, and again after a cancel
re-made it — has its backend reniced to the worker's nice (``_BackendPriority``). Where that is
not possible (a database elsewhere, a server of another user: EPERM) the backend keeps its
priority and the service says so once in its log.

What crosses: the work function and its arguments by pickle — module-level functions and
plain values — except the service's long-lived objects that hold secrets (the export signing
key ring), which never leave the process: the service registers them (``Database.share``)
with how to build them from the settings, each worker builds its own once, and a job names
them (pickle's persistent ids). Workers come from a fork server, which imports what they need
once; they start with the service (``HeavyProcesses.start``, called by the server's start for a
service that serves heavy RPCs; else on the first heavy job), each lives as long as the service's
Database, and one that dies is replaced.

Warm before the first job (issue #19): a worker imports, opens its database connection and checks
it with one empty transaction (``_warm``), then says so (``w``); the service hands it jobs only
after that word (``_Worker.prepare``), sends it the residents then, and its start waits for it
(at most WARM_WAIT_S). So a job's time — what the heavy gate learns its service times from — is
the job's alone; a replacement worker is warmed the same way before it is given back.
"""
from __future__ import annotations

import asyncio
import gc
import importlib
import io
import ipaddress
import logging
import multiprocessing
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection as Pipe
from typing import Any

from aos_runtime.faults import PoolExhausted

log = logging.getLogger("aos.offload")

# How much a heavy worker process (and its database backend) is niced by default
# (AOS_HEAVY_NICE; the heavy threads too, aos_runtime.db).
HEAVY_NICE = 10
# How long a service's start waits for its heavy workers to be warm (their imports, their
# connection: ~0.1-0.3 s with the fork server's preload, more on a loaded machine) before it
# serves anyway; a worker warm later takes its first job then.
WARM_WAIT_S = 10.0
# How long a worker told to end (its pipe shut down: it exits on the hangup, in milliseconds)
# is waited for before it is killed.
STOP_WAIT_S = 5.0


class WorkerLost(RuntimeError):
    """A heavy worker process ended while it ran a job (killed, out of memory)."""


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, names: dict[int, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._names = names

    def persistent_id(self, obj: Any) -> str | None:  # pickle's hook
        return self._names.get(id(obj))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, residents: dict[str, Any]) -> None:
        super().__init__(file)
        self._residents = residents

    def persistent_load(self, pid: Any) -> Any:  # pickle's hook
        return self._residents[pid]


def dumps(value: Any, names: dict[int, str]) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, names).dump(value)
    return buffer.getvalue()


def loads(data: bytes, residents: dict[str, Any]) -> Any:
    return _Unpickler(io.BytesIO(data), residents).load()


def _exception_state(exc: BaseException) -> tuple[type[BaseException], tuple[Any, ...], dict[str, Any], str]:
    """An exception as (class, args, attributes, traceback text): rebuilt without calling its
    ``__init__`` (the domain faults take keyword arguments that default pickling would lose)."""
    return type(exc), exc.args, dict(vars(exc)), "".join(traceback.format_exception(exc))


def _rebuild_exception(cls: type[BaseException], args: tuple[Any, ...], attributes: dict[str, Any],
                       text: str) -> BaseException:
    exc = cls.__new__(cls)
    exc.args = args
    vars(exc).update(attributes)
    exc.add_note(f"raised in a heavy worker process:\n{text}")
    return exc


# --- the worker process ------------------------------------------------------------------
_running = False


def _interrupt(_signum: int, _frame: Any) -> None:
    # Only a job is interrupted: a SIGINT that arrives between jobs (its job ended meanwhile) is moot.
    if _running:
        raise KeyboardInterrupt


class _Withdrawn(Exception):
    """The service answered "no" before the commit: the call went away; the transaction rolls back."""


class _RequesterGone(Exception):
    """The job's pipe closed before the service's answer: the transaction rolls back, the worker ends."""


def _end_with_requester(pipe: Pipe) -> None:
    """Ends this worker the moment the service's end of ``pipe`` closes — the service exited,
    was killed (SIGKILL, the OOM killer) or stopped this worker — whatever the worker is doing
    then (a render, a query, waiting for the go-ahead): a thread waits for the socket's hangup
    (poll: no data is read, the main thread's protocol is untouched) and ``_exit``s. The database
    sees the connection drop and rolls back the open transaction; no COMMIT can have been sent
    without the service's ``y`` (``_go_ahead``). Waiting for the requester itself, not for a
    parent: the fork server that forked us outlives the service until its last worker ends."""
    poller = select.poll()
    # POLLRDHUP (Linux): the peer closed its end, even with unread data; POLLHUP and POLLERR are
    # always reported.
    poller.register(pipe.fileno(), getattr(select, "POLLRDHUP", 0) | select.POLLHUP)

    def watch() -> None:
        while not poller.poll():
            pass
        os._exit(0)

    threading.Thread(target=watch, name="requester-watch", daemon=True).start()


def _go_ahead(pipe: Pipe) -> None:
    """Before the job's COMMIT: asks the service (``p``) and waits for its word; returns on ``y``,
    raises (the transaction rolls back) on ``n`` or a closed pipe. From here the job is no longer
    interrupted by a SIGINT: a call that went away is answered ``n`` here (the service sets its
    flag before it signals), and its interrupt then finds no job running."""
    global _running
    _running = False
    pipe.send_bytes(b"p")
    try:
        answer = pipe.recv_bytes()
    except (EOFError, OSError):
        raise _RequesterGone() from None
    if answer != b"y":
        raise _Withdrawn()


def private_kib(pid: int | str = "self") -> int:
    """A process's private memory (KiB): its pages no other process maps (smaps_rollup's
    Private_Clean + Private_Dirty) — what ending it gives back. 0 where /proc has no smaps_rollup."""
    return sum(_proc_kib(f"/proc/{pid}/smaps_rollup", ("Private_Clean:", "Private_Dirty:")))


def anonymous_kib(pid: int | str = "self") -> int:
    """A process's resident anonymous memory (KiB, /proc/PID/status RssAnon): its heap, shared
    with the fork server or not. What a worker's jobs grew, without the fork server's pages it
    merely copied by writing to them (running the preloaded modules' code writes their objects'
    reference counts: the page becomes private, not new). 0 where /proc has no status."""
    return sum(_proc_kib(f"/proc/{pid}/status", ("RssAnon:",)))


def _proc_kib(path: str, fields: tuple[str, ...]) -> list[int]:
    try:
        with open(path) as lines:
            return [int(line.split()[1]) for line in lines if line.startswith(fields)]
    except OSError:
        return []


def nice_of(pid: int | str = "self") -> int | None:
    """A process's nice value (/proc/PID/stat), None if there is no such process here."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # After the command's closing parenthesis: state is field 3, nice field 19.
            return int(stat.read().rsplit(b")", 1)[1].split()[16])
    except (OSError, IndexError, ValueError):
        return None


def _local_backend(dbapi_conn: Any) -> tuple[int | None, str]:
    """(pid, "") of the PostgreSQL backend serving ``dbapi_conn`` (psycopg's) when it is a process
    of this machine; else (None, why not). A backend's pid is the server's: a database elsewhere
    (or in another pid namespace, a container's) may have a backend whose pid is that of some
    unrelated process here. So only a Unix socket or a loopback address counts, and only a process
    whose title (PostgreSQL's ``update_process_title``, on by default) names this connection: its
    client's port (TCP), ``[local]`` (a Unix socket)."""
    info = dbapi_conn.info
    pid, host = info.backend_pid, info.host or ""
    if host.startswith("/"):  # the directory of a Unix socket: a server on this machine
        mark = b"[local]"
    else:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return None, f"the database is not on this machine (host {host})"
        with socket.socket(fileno=os.dup(dbapi_conn.fileno())) as sock:
            mark = f"({sock.getsockname()[1]})".encode()
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            title = cmdline.read()
    except OSError:
        return None, f"no process {pid} on this machine (the database runs in another pid namespace)"
    if not title.startswith(b"postgres") or mark not in title:
        return None, (f"process {pid} is not this connection's backend by its title (another pid namespace, "
                      "or update_process_title off)")
    return pid, ""


class _BackendPriority:
    """A heavy worker's ``connect`` listener: renices each new connection's backend to ``nice``
    (never raising its priority); ``outcome`` is the last result: the backend's nice, or why it
    kept its own (for the warm word and the log)."""

    def __init__(self, nice: int, service: str) -> None:
        self.nice = nice
        self.service = service
        self.outcome: int | str | None = None

    def __call__(self, dbapi_conn: Any, _record: Any) -> None:
        try:
            pid, why = _local_backend(dbapi_conn)
            if pid is not None:
                if os.getpriority(os.PRIO_PROCESS, pid) < self.nice:
                    os.setpriority(os.PRIO_PROCESS, pid, self.nice)
                self.outcome = os.getpriority(os.PRIO_PROCESS, pid)
                return
        except PermissionError:
            why = "not permitted (the database server runs as another user)"
        except OSError as exc:  # ESRCH: the backend ended meanwhile; the connection fails on its own
            why = f"{type(exc).__name__}: {exc}"
        self.outcome = f"kept: {why}"
        log.debug("heavy worker's database backend keeps its priority",
                  extra={"service": self.service, "reason": why})


# Services whose log said already that their heavy workers' backends keep their priority.
_told_backend_priority: set[str] = set()


def _tell_backend_priority(name: str, warm: Mapping[str, Any]) -> None:
    """Once per service (process name) in this process's log: the first worker's warm word that
    says its backend could not be reniced (``_BackendPriority``)."""
    outcome = warm.get("backend_nice")
    if isinstance(outcome, str) and name not in _told_backend_priority:
        _told_backend_priority.add(name)
        log.info("heavy workers' database backends keep their priority (AOS_HEAVY_NICE applies to the "
                 "workers only)", extra={"worker": name, "reason": outcome.removeprefix("kept: ")})


# What every worker imports besides the service's modules (_worker).
_WORKER_MODULES = ("aos_runtime.db", "aos_runtime.heap", "aos_runtime.observability")


def _worker(pipe: Pipe, service: str, url: str, options: dict[str, Any], log_level: str, trim_heap: bool,
            modules: list[str], recycle_kib: int = 0, nice: int = HEAVY_NICE, backend_nice: bool = True) -> None:
    """A heavy worker's life: import what the service imported, build the residents, then run
    jobs until the pipe closes, or until a job left it ``recycle_kib`` larger than it was warm,
    before its first job (0: never). It runs at nice +``nice``, and with ``backend_nice`` its
    database backends too (``_BackendPriority``)."""
    global _running
    started = time.monotonic()
    _end_with_requester(pipe)
    # Before the priority drops: on a busy machine a niced import of the export stack took seconds.
    for module in modules:
        importlib.import_module(module)
    from aos_runtime.db import Database  # here: the parent imported it already, a fresh child not yet
    from aos_runtime.heap import _malloc_trim
    from aos_runtime.observability import configure_logging

    # What the fork server imported stays shared with it only while nothing writes to its pages;
    # the collector writes to every object it walks (its GC header), and a large job's collections
    # walk them all — copying the modules' pages into this worker (four export workers after
    # 200,000-entry JSON exports, unfrozen: +95 MiB of PSS over idle where their RSS was +29). Frozen, the collector
    # leaves them alone (gc.freeze: the objects there now are never collected; they live as long as
    # the worker anyway).
    gc.freeze()
    configure_logging(log_level)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    db = Database(url, service=service, pool_size=1, **options)
    # The nice the worker takes after its warm-up; each of its connections' backends (the warm-up's
    # first: it is the one its jobs use) gets the same as it connects.
    niced = min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice)
    backends = _BackendPriority(niced, service) if backend_nice and nice > 0 else None
    if backends is not None:
        from sqlalchemy import event

        event.listen(db.engine, "connect", backends)
    imported = time.monotonic()
    connected = _warm(db, service)
    # The jobs run niced; the warm-up not: the service's start waits for it, and niced on a
    # busy machine it took a second where it costs some 20-50 ms of CPU.
    try:
        os.nice(nice)
    except OSError:
        pass
    # Warm: the service hands this worker jobs from now on (``_Worker.prepare``). What it took
    # goes back with the word, for the service's log.
    pipe.send_bytes(b"w" + dumps({"import_ms": round((imported - started) * 1000, 1),
                                  "connect_ms": round((time.monotonic() - imported) * 1000, 1),
                                  "cpu_ms": round(time.process_time() * 1000, 1), "connected": connected,
                                  "nice": os.getpriority(os.PRIO_PROCESS, 0),
                                  "backend_nice": backends.outcome if backends is not None else None}, {}))
    # After each job, the freed heap back to the system (glibc; aos_runtime.heap): a worker idles
    # at about its size before the job, as the service's process does after its heavy calls.
    trim = _malloc_trim() if trim_heap else None
    residents: dict[str, Any] = {}
    # Anonymous memory of the worker warm, taken as its first job arrives (its imports, its frozen
    # objects, its connection, the residents built), after a heap trim: what any job, the first
    # included, leaves above it beyond recycle_kib ends the worker.
    baseline_kib: int | None = None
    while True:
        try:
            message = pipe.recv_bytes()
        except (EOFError, OSError):
            break
        kind, payload = message[:1], message[1:]
        if kind == b"r":  # a resident: (name, factory, args)
            name, factory, args = loads(payload, residents)
            residents[name] = factory(*args)
            continue
        if recycle_kib and baseline_kib is None:
            if trim is not None:
                trim(0)
            baseline_kib = anonymous_kib()
        try:
            tenant_id, work, args, read_write, deadline, wanted = loads(payload, residents)
            _running = True
            try:
                result = db.transact(db.pool, tenant_id, work, args, read_write=read_write, deadline=deadline,
                                     wanted=wanted, before_commit=lambda: _go_ahead(pipe))
            finally:
                _running = False
            reply = b"o" + dumps(_plain(result), {})
        except _RequesterGone:
            break
        except _Withdrawn:
            reply = b"c"
        except KeyboardInterrupt:
            # Cancelled: whatever state the interrupt left the connection in, the next job gets a new one.
            db.engine.dispose()
            reply = b"c"
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the call
            try:
                reply = b"e" + dumps(_exception_state(exc), {})
            except Exception:  # noqa: BLE001 - an attribute that does not pickle
                reply = b"e" + dumps((RuntimeError, (f"{type(exc).__name__}: {exc}",), {},
                                      "".join(traceback.format_exception(exc))), {})
        try:
            pipe.send_bytes(reply)
        except (BrokenPipeError, OSError):
            break
        del reply
        if trim is not None:
            trim(0)
        # Stay (k) or end (x): the service reads this once it has answered the call.
        grown = baseline_kib is not None and anonymous_kib() - baseline_kib > recycle_kib
        try:
            pipe.send_bytes(b"x" if grown else b"k")
        except (BrokenPipeError, OSError):
            break
        if grown:
            break
    db.engine.dispose()


def _nothing(_conn: Any) -> None:
    """The warm-up's transaction: the tenant scope and a COMMIT, as every job's transaction has."""


def _warm(db: Any, service: str) -> bool:
    """Opens the worker's one connection and checks it — the login's check on connect
    (``check_login``), SQLAlchemy's first-connect queries, then one empty transaction through
    ``Database.transact`` (the scope statement every job runs first) — so that its first job
    pays none of that (a worker's first job took ~1.0-1.25 s against ~0.2 s after: its start-up
    and its connection, issue #19). A database that does not answer now is no reason to hold the
    worker back: its first job connects, as the service's own pools do (False)."""
    try:
        db.transact(db.pool, None, _nothing, ())
        return True
    except Exception as exc:  # noqa: BLE001 - any failure: connect on the first job instead
        log.warning("heavy worker process could not open its database connection at start",
                    extra={"service": service, "error": type(exc).__name__})
        db.engine.dispose()
        return False


def _plain(value: Any) -> Any:
    """A result as it pickles: a row mapping (SQLAlchemy's RowMapping) as a dict, in a tuple too."""
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if isinstance(value, Mapping) and not isinstance(value, dict):
        return dict(value)
    return value


class _Worker:
    """One worker process, its pipe, and the thread that waits for its answers."""

    def __init__(self, process: multiprocessing.process.BaseProcess, pipe: Pipe, residents: list[bytes]) -> None:
        self.process = process
        self.pipe = pipe
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offload")
        self.residents = residents  # the service's (HeavyProcesses._residents): only ever appended to
        self.sent_residents = 0
        self.warm: dict[str, Any] | None = None  # the worker's word that it is warm (``_worker``), once read
        self.started = time.monotonic()
        self._stopping = threading.Lock()
        self._stopped = False

    def prepare(self) -> dict[str, Any]:
        """Waits for the worker's word that it is warm (its imports done, its connection open and
        checked: ``_warm``), then sends it the residents it has not had yet. In the worker's
        thread, before its first job and before each job after (``exchange``); the word is read
        once. Its start-up is thus never inside a job's time — the time the heavy gate learns
        its service times from (aos_runtime.admission)."""
        try:
            if self.warm is None:
                message = self.pipe.recv_bytes()
                if message[:1] != b"w":
                    raise WorkerLost(f"heavy worker process {self.process.pid} said {message[:1]!r} "
                                     "before it was warm")
                self.warm = {**loads(message[1:], {}), "ms": round((time.monotonic() - self.started) * 1000, 1)}
                _tell_backend_priority(self.process.name, self.warm)
            while self.sent_residents < len(self.residents):
                self.pipe.send_bytes(self.residents[self.sent_residents])
                self.sent_residents += 1
        except (EOFError, OSError) as exc:
            raise WorkerLost(f"heavy worker process {self.process.pid} ended before it was warm "
                             f"(exit code {self.process.exitcode})") from exc
        return self.warm

    def exchange(self, message: bytes, withdrawn: threading.Event) -> bytes:
        """Sends a job, returns its answer (in the worker's thread: the pipe blocks). Before the
        job's COMMIT the worker asks (``p``): yes, unless the call went away (``withdrawn``)."""
        self.prepare()
        try:
            self.pipe.send_bytes(message)
            reply = self.pipe.recv_bytes()
            if reply == b"p":
                self.pipe.send_bytes(b"n" if withdrawn.is_set() else b"y")
                reply = self.pipe.recv_bytes()
            return reply
        except (EOFError, OSError) as exc:
            raise WorkerLost(f"heavy worker process {self.process.pid} ended "
                             f"(exit code {self.process.exitcode})") from exc

    def word(self) -> bytes:
        """After a job's answer, the worker's word: it stays (``k``), or the job grew it past the
        bound and it ends (``x``); empty if the pipe closed meanwhile (the worker was lost)."""
        try:
            return self.pipe.recv_bytes()
        except (EOFError, OSError):
            return b""

    def stop(self) -> None:
        """Ends the worker, once whoever calls (the service's close, a replacement, the answer of
        a job whose word comes as the service closes: from more than one thread at a time): its
        pipe shut down (the worker's watch sees the hangup and exits; a read of ours still waiting
        on it — a warm-up, a job's word — ends at once), then, once this worker's thread has left
        it, closed (killed if it is still there after STOP_WAIT_S). Closed only once and only when
        no read of ours is on it: a descriptor closed twice, or read after its close, may by then
        be another's — gRPC's event engine's (EBADF in its epoll, in the suite's run before this)."""
        with self._stopping:
            if self._stopped:
                return
            self._stopped = True
        try:
            _shut_down(self.pipe)
            self.thread.shutdown(wait=False, cancel_futures=True)
            self.process.join(timeout=STOP_WAIT_S)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout=STOP_WAIT_S)
            # The worker gone, its end of the pipe is closed: a read of ours has returned by now.
            self.thread.shutdown(wait=True)
        finally:
            self.pipe.close()


def _shut_down(pipe: Pipe) -> None:
    """Shuts the socket under ``pipe`` down both ways (a duplicate of its descriptor: the shutdown
    is the socket's, whoever holds it), so that the worker sees its hangup now and any read of
    ours on it returns; a pipe closed already is left as it is."""
    try:
        with socket.socket(fileno=os.dup(pipe.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()


class HeavyProcesses:
    """``size`` worker processes for a service's CPU-bound heavy work (module docstring).
    Started on first use; ``close()`` stops them."""

    def __init__(self, size: int, *, service: str, url: str, options: dict[str, Any], log_level: str,
                 pool_timeout_s: float, trim_heap: bool = True, recycle_mib: int = 0, nice: int = HEAVY_NICE,
                 backend_nice: bool = True) -> None:
        self.size = size
        self.recycle_mib = recycle_mib
        # The workers' nice increment (AOS_HEAVY_NICE), and whether their database backends take it
        # too (AOS_HEAVY_BACKEND_NICE; False: they keep the server's priority).
        self.nice = nice
        self.backend_nice = backend_nice
        self.recycled = 0  # workers replaced because a job grew them past recycle_mib
        self.service = service
        self._url = url
        self._options = options
        self._log_level = log_level
        self._trim_heap = trim_heap
        self._pool_timeout_s = pool_timeout_s
        self._names: dict[int, str] = {}
        self._residents: list[bytes] = []
        self._workers: list[_Worker] = []
        self._idle: asyncio.Queue[_Worker] | None = None
        self._starting: asyncio.Lock | None = None
        self._closed = False
        self._tasks: set[asyncio.Future[None]] = set()
        self.durations: list[float] = []

    # --- residents ---------------------------------------------------------------------
    def share(self, obj: Any, name: str, factory: Callable[..., Any], *args: Any) -> None:
        """``obj`` is named ``name`` in jobs; a worker builds its own as ``factory(*args)``
        (``args`` may name residents shared before)."""
        self._residents.append(b"r" + dumps((name, factory, args), self._names))
        self._names[id(obj)] = name

    # --- workers ---------------------------------------------------------------------
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def warm_reports(self) -> list[dict[str, Any] | None]:
        """What each worker said when it was warm (its imports, its connection: ms, CPU ms,
        whether it connected), None for one not warm yet; for logs and tests."""
        return [w.warm for w in self._workers]

    def idle_count(self) -> int:
        """Workers waiting for a job (none before the first job started them)."""
        return self._idle.qsize() if self._idle is not None else 0

    def _start_one(self) -> _Worker:
        # A fork server (one clean process forks the workers; never a fork of this one, whose
        # gRPC threads forbid it), else a fresh interpreter per worker.
        methods = multiprocessing.get_all_start_methods()
        context: Any = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        modules = sorted(name for name in sys.modules if name.startswith("services."))
        if "forkserver" in methods:
            # The fork server imports the service's modules once, when it starts (this process's
            # first worker): each worker is then a fork that shares those pages with it and starts
            # without importing for seconds — what makes replacing a worker that grew (recycle_mib)
            # cheap. Four warmed export workers: 137.7 MiB of PSS (+35 the fork server's) where
            # each importing on its own held 290.6 (bench/export_memory.py, RELIABILITY.md). Only
            # the first call counts (one fork server per process); a worker imports what it lacks.
            context.set_forkserver_preload([*_WORKER_MODULES, *modules])
        parent, child = context.Pipe()
        process = context.Process(target=_worker, name=f"aos-{self.service}-heavy", daemon=True, args=(
            child, self.service, self._url, self._options, self._log_level, self._trim_heap, modules,
            self.recycle_mib * 1024, self.nice, self.backend_nice))
        process.start()
        child.close()
        return _Worker(process, parent, self._residents)

    async def _warmed(self, workers: list[_Worker]) -> list[dict[str, Any]]:
        """Waits until each of ``workers`` is warm (``_Worker.prepare``), at most WARM_WAIT_S;
        what each reported (a worker not warm by then: its first job waits for it, in its
        thread, as before; one that ended: its first job replaces it)."""
        loop = asyncio.get_running_loop()
        warming = [loop.run_in_executor(worker.thread, worker.prepare) for worker in workers]
        _, late = await asyncio.wait(warming, timeout=WARM_WAIT_S)
        reports: list[dict[str, Any]] = []
        for worker, future in zip(workers, warming, strict=True):
            if future in late:
                future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, not logged twice
                reports.append({"pid": worker.process.pid, "warm": False})
            elif future.exception() is not None:
                reports.append({"pid": worker.process.pid, "warm": False, "error": str(future.exception())})
            else:
                reports.append({"pid": worker.process.pid, "warm": True, **future.result()})
        if (late or any(not r["warm"] for r in reports)) and not self._closed:
            log.warning("heavy worker processes not warm in time", extra={
                "service": self.service, "workers": reports, "wait_s": WARM_WAIT_S})
        return reports

    async def _ready(self) -> asyncio.Queue[_Worker]:
        if self._idle is None:
            if self._starting is None:
                self._starting = asyncio.Lock()
            async with self._starting:
                if self._idle is None:
                    started = time.monotonic()
                    workers = await asyncio.to_thread(lambda: [self._start_one() for _ in range(self.size)])
                    self._workers.extend(workers)
                    # Jobs only once the workers are warm: a job waiting here (the lock) is not
                    # timed by the worker's start-up, and neither is any job after. A close()
                    # meanwhile (a service stopped while its workers start) shuts them down:
                    # their warm-up ends at once, and close() stops what it did not see yet.
                    reports = await self._warmed(workers) if not self._closed else []
                    idle: asyncio.Queue[_Worker] = asyncio.Queue()
                    for worker in workers:
                        if not self._closed:
                            idle.put_nowait(worker)
                    self._idle = idle
                    log.info("heavy worker processes started", extra={
                        "service": self.service, "pids": self.pids(), "workers": reports,
                        "ms": round((time.monotonic() - started) * 1000, 1)})
        return self._idle

    async def start(self) -> None:
        """Starts the worker processes now and returns once they are warm (``_warmed``). The
        service's start runs it in the background (aos_runtime.server): the service serves its
        light calls meanwhile, and a heavy call waits for it before its turn in the heavy gate,
        so that no heavy call's time, as the gate or ``durations`` learn it, holds their start-up."""
        await self._ready()

    def warm(self) -> bool:
        """Whether the workers have started and are warm (or were given up waiting for: ``_warmed``)."""
        return self._idle is not None

    def _replace(self, lost: _Worker, grown: bool = False) -> _Worker:
        lost.stop()
        if lost in self._workers:  # not if close() took the list meanwhile
            self._workers.remove(lost)
        worker = self._start_one()
        self._workers.append(worker)
        if grown:
            self.recycled += 1
            # Imported here: aos_runtime.metrics imports grpc, which the database layer (aos_runtime.db,
            # and this module with it) must not load (tests/unit/test_layers.py).
            from aos_runtime import metrics

            metrics.heavy_worker_recycles.labels(service=self.service).inc()
            log.info("heavy worker process recycled: a job grew it past AOS_HEAVY_WORKER_RECYCLE_MIB", extra={
                "service": self.service, "ended": lost.process.pid, "pid": worker.process.pid,
                "recycle_mib": self.recycle_mib})
        else:
            log.warning("heavy worker process replaced", extra={"service": self.service, "lost": lost.process.pid,
                                                                 "exit_code": lost.process.exitcode,
                                                                 "pid": worker.process.pid})
        return worker

    def _give_back(self, worker: _Worker) -> None:
        if self._closed:
            worker.stop()
        elif self._idle is not None:
            self._idle.put_nowait(worker)

    def _settle(self, worker: _Worker) -> None:
        """After a job's answer (the caller has it): the worker's word, read in its thread, then
        idle again, or replaced if the job grew it past the bound (or it ended)."""
        word = asyncio.get_running_loop().run_in_executor(worker.thread, worker.word)
        word.add_done_callback(lambda done: self._after_word(worker, done))

    def _after_word(self, worker: _Worker, done: asyncio.Future[bytes]) -> None:
        said = b"" if done.cancelled() or done.exception() is not None else done.result()
        if said == b"k":
            self._give_back(worker)
        elif self._closed:
            worker.stop()
        else:
            self._in_background(self._replace_and_give_back(worker, grown=said == b"x"))

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def retry_after_s(self) -> float | None:
        if not self.durations:
            return None
        recent = self.durations[-50:]
        return round(sum(recent) / len(recent), 3)

    async def run(self, tenant_id: str | None, work: Callable[..., Any], args: tuple[Any, ...], *,
                  read_write: bool, deadline: float | None, wanted: str | None) -> Any:
        """``work(conn, *args)`` in one transaction of a worker's (``Database.transact``)."""
        job = b"j" + dumps((tenant_id, work, args, read_write, deadline, wanted), self._names)
        idle = await self._ready()
        try:
            worker = await asyncio.wait_for(idle.get(), self._pool_timeout_s)
        except TimeoutError:
            raise PoolExhausted(retry_after_s=self.retry_after_s()) from None
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            withdrawn = threading.Event()
            answer = loop.run_in_executor(worker.thread, worker.exchange, job, withdrawn)
        except BaseException:
            self._give_back(worker)
            raise
        try:
            reply = await asyncio.shield(answer)
        except asyncio.CancelledError:
            # The call went away: interrupt the job (its query is cancelled, its transaction rolls
            # back), or, if it is done, refuse its commit (``exchange``: the flag first, then the
            # signal); the worker is free again once it has answered.
            withdrawn.set()
            if worker.process.pid is not None and worker.process.is_alive():
                try:
                    os.kill(worker.process.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
            answer.add_done_callback(lambda done: self._after_cancel(worker, done))
            raise
        except WorkerLost:
            # The call fails now; its worker's replacement joins the others once warm.
            self._in_background(self._replace_and_give_back(worker))
            raise
        self.durations.append(time.monotonic() - started)
        del self.durations[:-50]
        self._settle(worker)
        kind, payload = reply[:1], reply[1:]
        if kind == b"o":
            return loads(payload, {})
        if kind == b"e":
            raise _rebuild_exception(*loads(payload, {}))
        raise asyncio.CancelledError()  # b"c": interrupted, yet this caller waited: it is gone too

    def _after_cancel(self, worker: _Worker, done: asyncio.Future[bytes]) -> None:
        """A cancelled job's worker, once it answered: idle again, or replaced if it was lost."""
        if not done.cancelled() and done.exception() is None:
            self._settle(worker)
        elif self._closed:
            worker.stop()
        else:
            self._in_background(self._replace_and_give_back(worker))

    async def _replace_and_give_back(self, worker: _Worker, grown: bool = False) -> None:
        # Warm before its first job, as the first workers were (``_warmed``).
        replacement = await asyncio.to_thread(self._replace, worker, grown)
        await self._warmed([replacement])
        self._give_back(replacement)

    async def close(self) -> None:
        self._closed = True
        # A replacement under way is stopped as it is given back (``_give_back``, closed).
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while True:
            workers, self._workers = self._workers, []
            if workers:
                await asyncio.to_thread(_stop_all, workers)
            # The first workers still starting (``_ready``, the service stopped during its start):
            # their warm-up fails at once with their pipes shut down; those started after the list
            # was taken are stopped on the next turn.
            if self._starting is None or not self._starting.locked():
                break
            async with self._starting:
                pass
