"""A service with heavy RPCs serves as soon as it has started, while its heavy worker processes warm
in the background (aos_runtime.server: ServiceServer.start; aos_runtime.offload: HeavyProcesses), and a
service stopped meanwhile leaves none of them behind (HeavyProcesses.close) and stops at once.
(That a heavy call arriving during the warm-up carries none of it, in the gate or in a job's time:
tests/reliability/test_fairness.py::test_a_heavy_workers_first_job_takes_as_long_as_its_later_ones.)"""
from __future__ import annotations

import asyncio
import threading
import time
from multiprocessing import forkserver

import grpc
import psutil
import pytest

from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_runtime.service_main import build_server
from tests.e2e.support import auth, service_modules, settings
from tests.logins import login_url

pytestmark = pytest.mark.db


def heavy_workers() -> set[int]:
    """This process's heavy worker processes now: the fork server's children."""
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid is None:
        return set()
    try:
        return {child.pid for child in psutil.Process(pid).children() if child.is_running()
                and child.status() != psutil.STATUS_ZOMBIE}
    except psutil.NoSuchProcess:
        return set()


@pytest.mark.parametrize("stop_after_s", [0.0, 0.02, 0.1])
async def test_a_service_stopped_while_its_heavy_workers_start_leaves_none_of_them(database_url, tmp_path,
                                                                                   stop_after_s):
    """Stopped before, while or after its workers fork and warm (the first case also starts this
    process's fork server, if no test did before): every worker it started has ended. (The stop
    waits for a fork under way — the fork server's preload on its first start — and no more.)"""
    before = heavy_workers()
    server = build_server("logs", service_modules()["logs"].servicers, settings(tmp_path),
                          login_url(database_url, "logs"), port=0)
    await server.start()
    await asyncio.sleep(stop_after_s)
    started = time.monotonic()
    await server.stop(grace=0)
    took = time.monotonic() - started
    deadline = time.monotonic() + 5
    while (left := heavy_workers() - before) and time.monotonic() < deadline:  # noqa: ASYNC110 - other processes
        await asyncio.sleep(0.05)
    print(f"stopped {stop_after_s} s after the start in {took:.2f} s")
    assert not left, f"heavy workers left running after the service stopped: {left}"


async def test_light_calls_are_served_whether_or_not_the_heavy_workers_are_warm(database_url, tmp_path):
    """Right after the start (the workers warm or not yet), a light call and a heavy one both answer."""
    server = build_server("logs", service_modules()["logs"].servicers, settings(tmp_path),
                          login_url(database_url, "logs"), port=0)
    address = f"127.0.0.1:{await server.start()}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.AuditLedgerServiceStub(channel)
            light, heavy = await asyncio.gather(
                stub.ListAuditEntries(pb.ListAuditEntriesRequest(page_size=5), metadata=auth("tenant-a"), timeout=30),
                stub.GetIntegrityReport(pb.GetIntegrityReportRequest(max_entries=10), metadata=auth("tenant-a"),
                                        timeout=30))
        assert server.db.offload is not None and server.db.offload.warm()
        assert light is not None and heavy is not None
    finally:
        await server.stop(grace=1)


async def test_a_worker_stopped_from_several_threads_at_once_closes_its_pipe_once(database_url, tmp_path):
    """A worker's stop may come from more than one thread at a time — the service's close in one, the
    answer of a job whose word arrives as the service closes on the loop — while a read of ours still
    waits on its pipe. Its pipe's descriptor is closed once, after that read has returned: closed twice
    (or read after its close), the number may by then be another's. (The suite's run before this: EBADF
    on a pipe's close in a service's stop, and gRPC's epoll failing on a descriptor closed under it.)
    The close is slowed here so that concurrent stops overlap it, as they can at any time."""
    server = build_server("logs", service_modules()["logs"].servicers, settings(tmp_path),
                          login_url(database_url, "logs"), port=0)
    await server.start()
    try:
        offload = server.db.offload
        assert offload is not None
        await offload.start()
        worker = offload._workers[0]
        reading = threading.Event()

        def read_word() -> bytes:
            reading.set()
            return worker.word()

        waiting = asyncio.get_running_loop().run_in_executor(worker.thread, read_word)
        assert await asyncio.to_thread(reading.wait, 5)  # the read under way before the stops
        closes: list[int] = []
        close = worker.pipe._close

        def slow_close() -> None:
            closes.append(worker.pipe._handle)
            time.sleep(0.05)
            close()

        worker.pipe._close = slow_close  # type: ignore[method-assign]
        stops = [asyncio.to_thread(worker.stop) for _ in range(4)]
        results = await asyncio.gather(*stops, return_exceptions=True)
        assert [r for r in results if r is not None] == [], results
        assert len(closes) == 1, f"the pipe was closed {len(closes)} times"
        assert await waiting == b"", "the read waiting on the pipe ended with its hangup"
    finally:
        await server.stop(grace=0)
