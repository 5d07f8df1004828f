"""A heavy worker process a job grew gives its memory back (issue #19: "returns after";
aos_runtime.offload, AOS_HEAVY_WORKER_RECYCLE_MIB).

A worker trims glibc's heap after each job, but what a large job grew and a few survivors keep —
pymalloc's arenas — stays resident. Here a job builds ~100 MiB of small Python objects and keeps one
in 200 of them alive (as a cache or a logger's record would): the arenas they sit in cannot go
back. With the bound, that worker ends once the call has its answer and a fresh one serves the next
job, so the workers' private memory is back near where it was; without it (0), it is not.
"""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from aos_runtime.offload import HeavyProcesses, private_kib
from tests.logins import login_url

pytestmark = pytest.mark.db

_KEPT: list[object] = []


def grow(_conn, objects: int) -> int:
    """A job whose objects mostly die but whose survivors pin their arenas."""
    made = [(i, str(i)) for i in range(objects)]
    _KEPT.extend(made[::200])
    return len(_KEPT)


def small(_conn) -> int:
    return len(_KEPT)


def private_mib(offload: HeavyProcesses) -> float:
    return sum(private_kib(pid) for pid in offload.pids()) / 1024


async def settled(offload: HeavyProcesses, seconds: float = 30) -> None:
    """Until the worker is idle again (its word after the job read; a replacement started)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while offload.idle_count() < offload.size:
        assert loop.time() < deadline, "the worker never came back"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("recycle_mib", [32, 0], ids=["recycled", "off-must-fail"])
async def test_a_worker_a_job_grew_past_the_bound_is_replaced_and_its_memory_returns(database_url, recycle_mib):
    offload = HeavyProcesses(1, service="logs", url=login_url(database_url, "logs"), log_level="WARNING",
                             pool_timeout_s=30, recycle_mib=recycle_mib,
                             options={"pool_timeout_s": 30, "statement_timeout_ms": 60000, "connect_timeout_s": 10})

    async def job(work, *args):
        return await offload.run(None, work, args, read_write=False, deadline=None, wanted=None)

    def recycles() -> float:
        return REGISTRY.get_sample_value("aos_heavy_worker_recycles_total", {"service": "logs"}) or 0.0

    counted = recycles()
    try:
        # Two small jobs: the worker is as it serves (imports, connection, first query), its size the
        # baseline it measured at its first.
        await job(small)
        await job(small)
        await settled(offload)
        (first,) = offload.pids()
        before = private_mib(offload)

        assert await job(grow, 1_000_000) == 5_000  # the caller has its answer either way
        await settled(offload)
        # The next job runs (in a new worker, if the last one was replaced), and the worker's own
        # state is what it says: a fresh one has kept nothing.
        kept = await job(small)
        await settled(offload)
        after = private_mib(offload)
        (now,) = offload.pids()
        counted = recycles() - counted
    finally:
        await offload.close()
    figures = (f"workers' private memory {before:.1f} MiB before the large job, {after:.1f} MiB after it "
               f"(pid {first} -> {now}, recycled {offload.recycled}, aos_heavy_worker_recycles_total +{counted:g}, kept {kept})")
    print(figures)
    returned = after - before < 16 and now != first and kept == 0 and offload.recycled == counted == 1
    if recycle_mib:
        assert returned, figures
    else:
        assert not returned and after - before > recycle_mib + 32, figures


@pytest.mark.parametrize("recycle_mib", [32, 0], ids=["recycled", "off-must-fail"])
async def test_a_worker_whose_first_job_is_large_is_recycled_and_so_is_its_replacement(database_url, recycle_mib):
    """The baseline is the worker warm, before any job: a worker whose very first job is large — a
    replacement's, typically, when the calls that follow a large export are large too — is judged
    against it and replaced as well. (Taken after the first job, as it was, that job's residue was
    the baseline: the worker and each replacement kept it for ever.)"""
    offload = HeavyProcesses(1, service="logs", url=login_url(database_url, "logs"), log_level="WARNING",
                             pool_timeout_s=30, recycle_mib=recycle_mib,
                             options={"pool_timeout_s": 30, "statement_timeout_ms": 60000, "connect_timeout_s": 10})

    async def job(work, *args):
        return await offload.run(None, work, args, read_write=False, deadline=None, wanted=None)

    try:
        await offload.start()
        warm = private_mib(offload)
        seen = list(offload.pids())
        kept = []
        for _ in range(2):  # the first worker's first job, then its replacement's first job
            kept.append(await job(grow, 1_000_000))
            await settled(offload)
            seen.extend(p for p in offload.pids() if p not in seen)
        after = private_mib(offload)
    finally:
        await offload.close()
    figures = (f"workers' private memory {warm:.1f} MiB warm, {after:.1f} MiB after two large first jobs "
               f"(pids {seen}, recycled {offload.recycled}, each job saw {kept} kept)")
    print(figures)
    # Each large job ran in a fresh worker (nothing kept from the one before) and each worker went.
    recycled = offload.recycled == 2 and len(seen) == 3 and kept == [5_000, 5_000] and after - warm < 16
    if recycle_mib:
        assert recycled, figures
    else:
        assert not recycled and offload.recycled == 0 and after - warm > recycle_mib + 32, figures
