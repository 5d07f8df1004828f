"""bench/soak.py --loop-probe DIR: every process of the suite records what holds its event loop.

Put on PYTHONPATH (the soak does it for the suite it starts), Python imports this module at start
in each process. With SOAK_LOOP_PROBE_DIR set it times every asyncio callback (``Handle._run``:
each task step, each I/O and timer callback) by the wall clock and by the thread's CPU clock, and
every garbage collection, and every 2 s writes DIR/<pid>.json (and appends to DIR/<pid>.jsonl
the callbacks and collections below found since, one JSON list a line, so a dump stays short):
- ``seconds``: per second (Unix time), the loop's callbacks' wall ms, their CPU ms, their count
  and the collections' ms — a callback whose wall time is far above its CPU time was off the CPU
  (the process waited for one), one whose CPU is its wall time was working;
- each callback of 5 ms or more: ["slow", Unix start, wall ms, CPU ms, what it ran — a task's
  coroutine, or the callback's name];
- each collection of 2 ms or more: ["gc", Unix start, generation, wall ms].
What gRPC's core and its poller thread do before a call reaches the loop is not in it: a refusal
late with its loop idle was late before the loop. Without the variable it does nothing. A
diagnosis aid, not part of the services (about 2 µs per callback when on).
"""
import os

if os.environ.get("SOAK_LOOP_PROBE_DIR"):
    import asyncio.events
    import gc
    import json
    import sys
    import threading
    import time

    _DIR = os.environ["SOAK_LOOP_PROBE_DIR"]
    _SLOW_S, _GC_S, _KEEP = 0.005, 0.002, 200_000
    _seconds: dict[int, list[float]] = {}
    _slow: list = []
    _gcs: list = []
    _original = asyncio.events.Handle._run
    _wall, _cpu = time.time, time.thread_time

    def _name(handle) -> str:
        callback = handle._callback
        task = getattr(callback, "__self__", None)
        coro = getattr(task, "get_coro", None)
        if coro is not None:
            inner = coro()
            return getattr(inner, "__qualname__", type(inner).__name__)
        return getattr(callback, "__qualname__", type(callback).__name__)

    def _run(self) -> None:
        w0, c0 = _wall(), _cpu()
        try:
            _original(self)
        finally:
            wall, cpu = _wall() - w0, _cpu() - c0
            bucket = _seconds.get(int(w0))
            if bucket is None:
                bucket = _seconds[int(w0)] = [0.0, 0.0, 0, 0.0]
            bucket[0] += wall * 1000
            bucket[1] += cpu * 1000
            bucket[2] += 1
            if wall >= _SLOW_S and len(_slow) < _KEEP:
                _slow.append(("slow", round(w0, 4), round(wall * 1000, 2), round(cpu * 1000, 2), _name(self)))

    asyncio.events.Handle._run = _run
    _gc_start = [0.0]

    def _timed(phase: str, info: dict) -> None:
        if phase == "start":
            _gc_start[0] = _wall()
            return
        took = _wall() - _gc_start[0]
        bucket = _seconds.get(int(_gc_start[0]))
        if bucket is not None:
            bucket[3] += took * 1000
        if took >= _GC_S and len(_gcs) < _KEEP:
            _gcs.append(("gc", round(_gc_start[0], 4), info["generation"], round(took * 1000, 2)))

    def _dump() -> None:
        written = [0, 0]
        while True:
            time.sleep(2)
            try:
                path = os.path.join(_DIR, f"{os.getpid()}.json")
                seconds = {str(k): [round(v[0], 1), round(v[1], 1), v[2], round(v[3], 1)]
                           for k, v in list(_seconds.items())}
                with open(path + ".tmp", "w") as out:
                    json.dump({"pid": os.getpid(), "argv": sys.argv, "seconds": seconds}, out)
                os.replace(path + ".tmp", path)
                slow_now, gcs_now = len(_slow), len(_gcs)
                new = _slow[written[0]:slow_now] + _gcs[written[1]:gcs_now]
                written[:] = [slow_now, gcs_now]
                with open(os.path.join(_DIR, f"{os.getpid()}.jsonl"), "a") as out:
                    out.writelines(json.dumps(item) + "\n" for item in new)
            except Exception:  # noqa: BLE001 - a diagnosis aid never takes its process down
                pass

    gc.callbacks.append(_timed)
    threading.Thread(target=_dump, name="loop-probe", daemon=True).start()
