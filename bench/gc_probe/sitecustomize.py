"""bench/soak.py --gc-probe DIR: every process of the suite times its own garbage collections.

Put on PYTHONPATH (the soak does it for the suite it starts), Python imports this module at
start in each process. With SOAK_GC_PROBE_DIR set it times every collection (gc.callbacks, CPU
time of the collecting thread), and every 2 s writes DIR/<pid>.json: collections and seconds
per generation, each full collection's (time, CPU ms, objects collected), and every 10 s the
number of GC-tracked objects (len(gc.get_objects()): what a full collection walks). Without the
variable it does nothing. A diagnosis aid, not part of the services.
"""
import os

if os.environ.get("SOAK_GC_PROBE_DIR"):
    import gc
    import json
    import sys
    import threading
    import time

    _DIR = os.environ["SOAK_GC_PROBE_DIR"]
    _state: dict = {"count": [0, 0, 0], "seconds": [0.0, 0.0, 0.0], "full": [], "sizes": []}
    _started = [0.0]

    def _timed(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.thread_time()
            return
        generation, took = info["generation"], time.thread_time() - _started[0]
        _state["count"][generation] += 1
        _state["seconds"][generation] += took
        if generation == 2:
            _state["full"].append((round(time.time(), 3), round(took * 1000, 2), info.get("collected", 0)))

    def _dump() -> None:
        ticks = 0
        while True:
            time.sleep(2)
            ticks += 1
            try:
                if ticks % 5 == 0:
                    _state["sizes"].append((round(time.time(), 1), len(gc.get_objects())))
                path = os.path.join(_DIR, f"{os.getpid()}.json")
                with open(path + ".tmp", "w") as out:
                    json.dump({**_state, "pid": os.getpid(), "argv": sys.argv, "at": time.time()}, out)
                os.replace(path + ".tmp", path)
            except Exception:  # noqa: BLE001 - a diagnosis aid never takes its process down
                pass

    gc.callbacks.append(_timed)
    threading.Thread(target=_dump, name="gc-probe", daemon=True).start()
