"""services.export.dbthread: an audit slice export's statements on one helper thread (issue #22)."""
from __future__ import annotations

import threading
import time

import pytest

from services.export.dbthread import ConnectionThread


class Connection:
    """Stands for the database connection: records which thread ran each statement, in what
    order, and fails the test if two ever run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, object]] = []
        self.threads: set[str] = set()

    def run(self, what: str, value: object = None, pause: float = 0.0) -> object:
        if not self.lock.acquire(blocking=False):
            raise AssertionError("two statements ran at once")
        try:
            self.threads.add(threading.current_thread().name)
            time.sleep(pause)
            self.log.append((what, value))
            return value
        finally:
            self.lock.release()


def test_reads_ahead_writes_behind_and_calls_in_order_on_one_helper_thread():
    conn = Connection()

    def batches():
        for n in range(5):
            yield conn.run("read", n, 0.002)

    seen = []
    with ConnectionThread(behind=2) as thread:
        for batch in thread.read_ahead(batches()):
            seen.append(batch)
            thread.write(conn.run, "write", batch, 0.003)
            assert thread.call(conn.run, "call", batch) == batch
    assert seen == [0, 1, 2, 3, 4]
    assert [v for what, v in conn.log if what == "write"] == [0, 1, 2, 3, 4]  # every write done, in order
    assert [v for what, v in conn.log if what == "read"] == [0, 1, 2, 3, 4]
    assert conn.threads and all(name.startswith("export-db") for name in conn.threads)
    assert threading.current_thread().name not in conn.threads


def test_the_next_batch_is_read_while_the_caller_works_on_this_one():
    started = threading.Event()
    release = threading.Event()

    def batches():
        yield 1
        started.set()  # the second read began before the caller asked for it
        release.wait(5)
        yield 2

    with ConnectionThread() as thread:
        reader = thread.read_ahead(batches())
        assert next(reader) == 1
        assert started.wait(5)
        release.set()
        assert list(reader) == [2]


def test_at_most_behind_writes_wait_then_the_caller_waits():
    gate = threading.Event()
    done: list[int] = []

    def slow(n: int) -> None:
        gate.wait(5)
        done.append(n)

    thread = ConnectionThread(behind=2)
    thread.write(slow, 1)
    thread.write(slow, 2)
    third = threading.Thread(target=thread.write, args=(slow, 3))
    third.start()
    third.join(0.2)
    assert third.is_alive()  # three writes outstanding: the caller waits for the oldest
    gate.set()
    third.join(5)
    thread.close()
    assert done == [1, 2, 3]


def test_a_failed_write_fails_the_next_write_or_the_close():
    def broken(pause: float) -> None:
        time.sleep(pause)
        raise RuntimeError("chunk refused")

    thread = ConnectionThread()
    thread.write(broken, 0.1)  # still running: the close finds it
    with pytest.raises(RuntimeError, match="chunk refused"):
        thread.close()
    thread = ConnectionThread()
    thread.write(broken, 0.0)
    time.sleep(0.1)
    with pytest.raises(RuntimeError, match="chunk refused"):
        thread.write(time.sleep, 0.0)  # the earlier one failed meanwhile
    thread.close()


def test_leaving_on_an_error_waits_for_the_statement_in_flight_and_drops_the_rest():
    conn = Connection()
    with pytest.raises(KeyError):
        with ConnectionThread(behind=10) as thread:
            thread.write(conn.run, "write", 1, 0.2)
            thread.write(conn.run, "write", 2, 0.2)
            time.sleep(0.05)  # the first is in flight
            raise KeyError("render failed")
    # On return nothing runs on the connection any more: the caller may roll back.
    assert conn.log == [("write", 1)]
    assert not conn.lock.locked()
