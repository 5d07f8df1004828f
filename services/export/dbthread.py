"""An export's statements on one helper thread while it renders (issue #22).

Rendering an audit slice holds the GIL; each of its statements — the next batch of ledger rows,
the next 1 MiB chunk of the artifact — mostly waits for the database (psycopg releases the GIL
while it waits, and the database works on the other core: the rows' output, the chunk's TOAST
compression and writes). Run by the rendering thread, the two add up; run by a helper, they
overlap. The transaction stays one (the same connection), so a crash still leaves nothing.
"""
from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class ConnectionThread:
    """The only user of a connection while it is open: every statement goes through it, one at a
    time, in the order given — so the connection is never used by two threads at once.

    - ``read_ahead(batches)``: each next batch is read while the caller works on the current one;
    - ``write(fn, ...)``: runs behind the caller; at most ``behind`` writes wait (the caller waits
      for the oldest beyond that: memory stays bounded when the database is the slower side);
    - ``call(fn, ...)``: anything else, waited for.

    Closing waits for every write and raises the first one's failure. Leaving on an error waits
    only for the statement in flight (the rest are dropped): the connection is idle again before
    the caller's transaction rolls back. The caller's context (tracing, deadlines) goes with each
    statement."""

    def __init__(self, *, behind: int = 2) -> None:
        self._context = contextvars.copy_context()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-db")
        self._writes: deque[Future[Any]] = deque()
        self._behind = behind

    def _submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._pool.submit(self._context.run, fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self._submit(fn, *args).result()

    def write(self, fn: Callable[..., Any], *args: Any) -> None:
        self._writes.append(self._submit(fn, *args))
        while self._writes and (len(self._writes) > self._behind or self._writes[0].done()):
            self._writes.popleft().result()  # a failed write fails the caller at its next write

    def read_ahead(self, batches: Iterator[T]) -> Iterator[T]:
        """``batches``, each next one read on the helper while the caller has the current one."""
        pending = self._submit(next, batches, None)
        while True:
            batch = pending.result()
            if batch is None:
                return
            pending = self._submit(next, batches, None)
            yield batch

    def drain(self) -> None:
        """Waits for every write so far; raises the first failure."""
        while self._writes:
            self._writes.popleft().result()

    def close(self) -> None:
        """Waits for every write; raises the first failure."""
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ConnectionThread:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:  # the statement in flight ends (shutdown waits for it); the others never start
            self._writes.clear()
            self._pool.shutdown(wait=True, cancel_futures=True)
