"""The heap given back after heavy work (aos_runtime.heap; issue #19: memory returns to idle).

The gate says when its last call ended; the trimmer trims once, after a short delay, if the
process is still idle then; a trim gives a fragmented glibc heap's free pages back. The same
behind a real server (a heavy call, then a trim counted in /metrics) is in
tests/reliability/test_heap_trim.py."""
from __future__ import annotations

import asyncio
import ctypes
import platform

import pytest
from prometheus_client import REGISTRY

from aos_runtime import heap
from aos_runtime.admission import Admission, FairGate, Limits
from aos_runtime.config import Settings
from aos_runtime.server import heap_trimmer

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


def gate() -> FairGate:
    return FairGate(Limits("heavy", 2, 2, 8, 5.0, "AOS_HEAVY_CONCURRENCY"))


async def test_a_gate_says_when_its_last_call_ended():
    g, ended = gate(), []
    g.on_idle = lambda: ended.append(g.running)
    a1, a2 = await g.acquire("a", None), await g.acquire("b", None)
    waiting = asyncio.ensure_future(g.acquire("b", None))
    await asyncio.sleep(0)
    a1.release()                       # the waiting call starts: not idle
    a3 = await asyncio.wait_for(waiting, 1)
    a2.release()
    assert ended == [] and not g.idle
    a3.release()
    a3.release()                       # released twice: still one end
    assert ended == [0] and g.idle


@glibc
async def test_the_trimmer_trims_once_after_a_burst_and_only_if_still_idle():
    state = {"idle": True}
    trimmer = heap.Trimmer("unit", lambda: state["idle"], delay_s=0.05)
    for _ in range(3):                 # three calls ending at once: one trim
        trimmer.soon()
    await asyncio.sleep(0.3)
    assert trimmer.trims == 1
    state["idle"] = False              # a heavy call started meanwhile: no trim
    trimmer.soon()
    await asyncio.sleep(0.3)
    assert trimmer.trims == 1


@glibc
async def test_a_trim_that_held_some_back_is_followed_by_one_more_and_no_others():
    # The light pool busy at the trim (release says False): one follow-up trim, not a loop.
    quiet = {"light": False}
    calls = []

    def release() -> bool:
        calls.append(quiet["light"])
        return quiet["light"]

    trimmer = heap.Trimmer("unit", lambda: True, delay_s=0.02, release=release, follow_up_s=0.1)
    trimmer.soon()
    await asyncio.sleep(0.5)
    assert calls == [False, False] and trimmer.trims == 2   # held back twice: then it stops
    quiet["light"] = True
    trimmer.soon()
    await asyncio.sleep(0.5)
    assert calls == [False, False, True] and trimmer.trims == 3   # all released: no follow-up


@glibc
def test_a_trim_gives_back_the_free_pages_inside_the_heap():
    """200 blocks of 64 KiB (below glibc's mmap threshold: from the heap), touched, then freed
    below a block still held: glibc keeps their 12.5 MiB resident (free() only shrinks the top
    of a heap); the trim releases them and counts it."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 * 1024
    blocks = sorted(libc.malloc(size) for _ in range(201))
    pin = blocks.pop()                 # the highest: the freed ones below it are not the heap's top
    try:
        for block in blocks:
            ctypes.memset(block, 1, size)
        for block in blocks:
            libc.free(block)
        trims = REGISTRY.get_sample_value("aos_heap_trims_total", {"service": "unit-trim"}) or 0
        released = heap.Trimmer("unit-trim", lambda: True).trim()
        assert released >= 8 * 2**20, released
        assert REGISTRY.get_sample_value("aos_heap_trims_total", {"service": "unit-trim"}) == trims + 1
        assert REGISTRY.get_sample_value("aos_heap_trim_released_bytes_total", {"service": "unit-trim"}) >= released
    finally:
        libc.free(pin)


def test_aos_heap_trim_off_leaves_the_heap_alone():
    assert Settings.from_env({}).heap_trim and not Settings.from_env({"AOS_HEAP_TRIM": "off"}).heap_trim
    kw = {"max_inflight": 4, "queue_budget_s": 1.0, "heavy_isolation": True, "heavy_concurrency": 2,
          "heavy_per_tenant": 1, "heavy_queue_per_tenant": 2, "heavy_queue_budget_s": 1.0}
    off = Admission.of(**kw, trim_heap=False)
    assert heap_trimmer("unit", off) is None and off.heavy is not None and off.heavy.on_idle is None
    assert heap_trimmer("unit", Admission.of(**{**kw, "heavy_isolation": False})) is None
    on = Admission.of(**kw)
    trimmer = heap_trimmer("unit", on)
    if platform.libc_ver()[0] == "glibc":
        assert trimmer is not None and on.heavy is not None and on.streams is not None
        assert on.heavy.on_idle == trimmer.soon and on.streams.on_idle == trimmer.soon
