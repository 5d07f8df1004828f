"""What every benchmark sets up: a scratch directory, a database, free ports.

Benchmarks run as scripts (``python bench/<name>.py``), so they import this module
by its plain name.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from aos_runtime import migrate
from aos_runtime.embedded import EmbeddedPostgres


@contextlib.contextmanager
def scratch_database(prefix: str = "aos-bench-", revision: str = "head") -> Iterator[tuple[str, Path]]:
    """(database URL migrated to ``revision``, scratch directory): DATABASE_URL when set,
    else an embedded Postgres (non-durable) in the scratch directory; both gone afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    server, url = None, os.environ.get("DATABASE_URL")
    if not url:
        server = EmbeddedPostgres(work / "pg", durable=False)
        server.start()
        url = server.url
    try:
        migrate.upgrade(url, revision)
        yield url, work
    finally:
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
