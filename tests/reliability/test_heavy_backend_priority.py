"""The heavy work's database backends yield too (issue #19, aos_runtime.offload): a heavy worker
process runs at nice +AOS_HEAVY_NICE, and so does the PostgreSQL backend serving its connection —
the reads of an export or an integrity walk are much of the database's CPU — while the light
calls' backends keep nice 0. Also a backend the worker connects anew (a cancelled job's connection
is re-made) is reniced. Read from /proc: the tests' embedded Postgres runs on this machine. The
must-fail variant is AOS_HEAVY_BACKEND_NICE=off (``backend_nice=False``): the backends as before.
"""
from __future__ import annotations

import asyncio
import os

import pytest

from aos_runtime.db import Database
from aos_runtime.offload import HeavyProcesses, nice_of
from tests.logins import login_url

pytestmark = pytest.mark.db


def backend_pid(conn) -> tuple[int, int]:
    """A heavy job: (its worker's pid, its backend's pid)."""
    return os.getpid(), conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()


def stuck(conn) -> None:
    conn.exec_driver_sql("SELECT pg_sleep(30)")


def light_backend_pid(conn) -> int:
    return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()


@pytest.mark.parametrize("backend_nice", [True, False], ids=["reniced", "off-must-fail"])
async def test_a_heavy_workers_backend_runs_at_the_workers_nice_and_a_light_calls_backend_does_not(
        database_url, backend_nice):
    url = login_url(database_url, "logs")
    offload = HeavyProcesses(1, service="logs", url=url, log_level="WARNING", pool_timeout_s=30, nice=10,
                             backend_nice=backend_nice,
                             options={"pool_timeout_s": 30, "statement_timeout_ms": 60000, "connect_timeout_s": 10})
    light = Database(url, service="logs", pool_size=1)

    async def job(work, *args):
        return await offload.run(None, work, args, read_write=False, deadline=None, wanted=None)

    try:
        await offload.start()
        worker, first = await job(backend_pid)
        if nice_of(first) is None:
            pytest.skip(f"the database's backend {first} is not a process of this machine (DATABASE_URL elsewhere)")
        niced = [(worker, nice_of(worker), first, nice_of(first))]
        # A cancelled job: its connection is closed (the interrupt may have left it mid-query) and the
        # next job's is a new one, with a new backend.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await job(stuck)
        worker, second = await job(backend_pid)
        niced.append((worker, nice_of(worker), second, nice_of(second)))
        light_pid = await asyncio.to_thread(light.transact, light.pool, None, light_backend_pid, ())
        light_nice = nice_of(light_pid)
        warm = offload.warm_reports()
    finally:
        await offload.close()
        await light.close()
    figures = f"(worker, its nice, backend, its nice): {niced}; a light call's backend {light_pid} at {light_nice}; warm {warm}"
    print(figures)
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)  # the worker's: ours + 10
    assert first != second, f"the cancelled job's connection was not re-made: {figures}"
    assert all(worker_nice == expected for _, worker_nice, _, _ in niced), figures
    assert light_nice is not None and light_nice < expected, figures
    yielded = all(backend_nice_now == worker_nice for _, worker_nice, _, backend_nice_now in niced)
    if backend_nice:
        assert yielded and warm[0] is not None and warm[0]["backend_nice"] == expected, figures
    else:
        assert not yielded and all(n == light_nice for _, _, _, n in niced), figures


def test_a_backend_that_keeps_its_priority_is_said_once_per_service(caplog):
    """Where a worker's backend cannot be reniced (a database elsewhere, another user), each worker
    says why in its warm word; the service logs it once, not once per worker or replacement."""
    from aos_runtime.offload import _tell_backend_priority

    caplog.set_level("INFO", logger="aos.offload")
    for _ in range(3):
        _tell_backend_priority("aos-test-heavy", {"backend_nice": "kept: the database is not on this machine"})
    _tell_backend_priority("aos-test-heavy", {"backend_nice": 10})
    said = [r for r in caplog.records if "keep their priority" in r.getMessage()]
    assert len(said) == 1 and said[0].reason == "the database is not on this machine", said
