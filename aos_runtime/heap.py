"""Memory back to the system after heavy work (issue #19: a service's resident memory returns
to about idle after its exports, verifications and integrity walks).

What an export frees, Python hands back to the C allocator, glibc's malloc. glibc returns
memory to the system only from the top of a heap, or in whole mmap'd blocks; the free
pages in the middle of its arenas — where a large render's buffers and objects were — stay
resident until something calls ``malloc_trim``, which gives every free page of every arena
back (madvise). MALLOC_ARENA_MAX=2 and the 128 KiB mmap/trim thresholds the services start
with (services/__main__.py) shrink that, not remove it: bench/export_memory.py measured
+30…+56 MiB still resident after four concurrent exports of each format.

What else an export leaves resident (measured in the Export service after four concurrent
exports of each format with sys._debugmallocstats, mallinfo2 and /proc/self/smaps; BENCHMARKS.md):
libpq's connection buffers. libpq grows a connection's input and output buffers to its largest
message and never shrinks them: an export writes its artifact in 1 MiB chunks (the output buffer
doubles to 2 MiB) and a download reads them back hex-encoded (an input buffer of 4 MiB), so the
pooled connections that carried chunks held ~28 MiB of mmap'd blocks (~14 MiB resident) until
they closed. So the trim first closes the connections no call holds (``release``:
Database.release_idle_connections; the light pool's only once no light call has run for 2 s: a new
connection costs its next call the login); the pools open new ones as calls need them. What stays after
both is mostly pymalloc's: its 1 MiB arenas go back only when wholly empty, and a few objects
that outlive the export (a cache entry, a logger's record) keep each of them.

So: when a process's last heavy call ends (no heavy call running or waiting, no download
streaming), the idle connections are closed and ``malloc_trim(0)`` runs, once, shortly after
(TRIM_DELAY_S, so a burst of calls trims once), in a thread (ctypes lets go of the GIL: the
event loop runs on). Only on glibc (musl and others have no malloc_trim, and nothing to do);
AOS_HEAP_TRIM=off turns both off.
Each trim is counted in ``aos_heap_trims_total`` with the resident bytes it released
(``aos_heap_trim_released_bytes_total``) and its time (``aos_heap_trim_seconds_total``).

Why not a library: the call is one line of ctypes (glibc's documented malloc_trim(3)); what
is ours is when to call it. A different allocator (jemalloc, mimalloc preloaded) would be a
deployment change of every image and process; this is not.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import platform
import threading
import time
from collections.abc import Callable

from aos_runtime import metrics

log = logging.getLogger("aos.heap")

TRIM_DELAY_S = 0.2
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def resident_bytes() -> int:
    """This process's resident memory (/proc/self/statm)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


class Trimmer:
    """Trims the heap of this process when its heavy work is done (``soon``, from the event
    loop, when a gate empties: it trims once ``idle()`` still holds TRIM_DELAY_S later)."""

    def __init__(self, service: str, idle: Callable[[], bool], *, delay_s: float = TRIM_DELAY_S,
                 release: Callable[[], bool] | None = None, follow_up_s: float = 0.0) -> None:
        self.service = service
        self.idle = idle
        # Run first in each trim: what holds memory that only closing it gives back (the idle
        # database connections' libpq buffers). False: it held some back for now (the light
        # pool, busy), and one more trim follows ``follow_up_s`` later.
        self.release = release
        self.delay_s = delay_s
        self.follow_up_s = follow_up_s
        self._held_back = False
        self._trim = _malloc_trim()
        self._scheduled = False
        self._running = threading.Lock()
        self.trims = 0  # trims done since the start (tests, logs)

    @property
    def available(self) -> bool:
        return self._trim is not None

    def soon(self) -> None:
        """Called on the event loop when a heavy call, or a download, ends."""
        if self._trim is None or self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a gate released outside the loop: no trim rather than a failed release
            return
        self._scheduled = True
        loop.call_later(self.delay_s, self._due)

    def _due(self, follow_up: bool = False) -> None:
        self._scheduled = False
        if self.idle():
            loop = asyncio.get_running_loop()
            done = loop.run_in_executor(None, self.trim)
            if not follow_up and self.follow_up_s > 0:
                done.add_done_callback(lambda _: self._follow_up(loop))

    def _follow_up(self, loop: asyncio.AbstractEventLoop) -> None:
        # Once per heavy episode: a process whose light calls go on keeps those connections.
        if self._held_back and not self._scheduled:
            self._scheduled = True
            loop.call_later(self.follow_up_s, self._due, True)

    def trim(self) -> int:
        """``release`` then malloc_trim(0), now; the resident bytes they released (0 where there
        is no glibc, or another trim is running)."""
        if self._trim is None or not self._running.acquire(blocking=False):
            return 0
        try:
            before, started = resident_bytes(), time.perf_counter()
            self._held_back = False
            if self.release is not None:
                try:
                    self._held_back = not self.release()
                except Exception:  # a connection that fails to close is no reason to skip the trim
                    log.warning("releasing idle connections before the heap trim failed", exc_info=True)
            self._trim(0)
            seconds, released = time.perf_counter() - started, max(0, before - resident_bytes())
            self.trims += 1
        finally:
            self._running.release()
        metrics.heap_trims.labels(service=self.service).inc()
        metrics.heap_trim_released.labels(service=self.service).inc(released)
        metrics.heap_trim_seconds.labels(service=self.service).inc(seconds)
        log.debug("heap trimmed: %.1f MiB released in %.1f ms", released / 2**20, seconds * 1000)
        return released
