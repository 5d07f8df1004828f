"""What closing idle connections gives back (issue #19: memory returns after heavy work).

libpq grows a connection's buffers to its largest message and never shrinks them: after one
large value (an artifact chunk: 1 MiB, 2 MiB hex-encoded as a download reads it) the
connection holds that much C heap for as long as it lives, long after the result is gone.
Database.release_idle_connections (run before each heap trim, aos_runtime.heap) closes the
connections no call holds; that memory then goes back. Measured with glibc's mallinfo2 (bytes in
use, heap and mmap'd blocks): the C heap, where libpq's buffers are, not Python's objects."""
from __future__ import annotations

import ctypes
import platform

import pytest

from aos_runtime.db import Database, fetch_value
from tests.logins import login_url

pytestmark = [pytest.mark.db,
              pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallinfo2 is glibc's")]
MIB = 2**20


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def c_heap_in_use() -> int:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def _large_value(conn) -> int:
    """A 4 MiB text value read and dropped: only its length leaves the function."""
    return len(fetch_value(conn, "SELECT repeat('x', 4 * 1024 * 1024)", {}))


async def test_a_connection_keeps_its_largest_message_until_it_is_closed(database_url):
    db = Database(login_url(database_url, "export"), service="export", pool_size=1, heavy_pool_size=1)
    try:
        assert await db.run(None, lambda conn: 1) == 1   # the connection is open: its start is not counted
        before = c_heap_in_use()
        assert await db.run(None, _large_value) == 4 * MIB
        held = c_heap_in_use() - before
        # The value is gone; libpq's input buffer, grown to hold its message, is not.
        assert held >= 4 * MIB, held / MIB
        assert db.release_idle_connections() == 1
        assert c_heap_in_use() - before < held - 4 * MIB + MIB, (c_heap_in_use() - before) / MIB
        # The pool opens a new connection for the next call, as it would after a restart.
        assert await db.run(None, lambda conn: 2) == 2
    finally:
        await db.close()
