"""Reads through psycopg directly on a SQLAlchemy connection's own connection and transaction.

Here, not in aos_runtime.db, because the recording core's verifier reads the ledger this way
(``store.iter_ledger_rows``) and the core imports nothing of the server (tests/unit/test_layers.py);
aos_runtime.db builds its hot reads on the same two helpers.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import text

# A text() query's named parameters (":name", not a "::type" cast) as psycopg writes them.
_NAMED = re.compile(r"(?<![:\w]):(\w+)")


@functools.lru_cache(maxsize=512)
def driver_sql(sql: str) -> str:
    """``sql`` in psycopg's placeholder style (``%(name)s``; a literal ``%`` doubled)."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


def observed(conn: Any) -> bool:
    """Something listens to the engine's statements (tracing's SQL spans, a test capturing SQL):
    then reads go through SQLAlchemy, so that it sees them."""
    return bool(conn.engine.dispatch.before_cursor_execute or conn.engine.dispatch.after_cursor_execute)


def fetch_tuples(conn: Any, sql: str, params: Mapping[str, Any], *, binary: bool = False) -> list[tuple[Any, ...]]:
    """The rows as tuples in the statement's column order, through psycopg on ``conn``'s
    connection and transaction (its tenant scope and row-level security apply): for a reader
    that walks many rows by position (the chain verifier), without a dict per row."""
    if observed(conn):
        return [tuple(row) for row in conn.execute(text(sql), params)]
    with conn.connection.driver_connection.cursor(binary=binary) as cursor:
        cursor.execute(driver_sql(sql), params)
        return cursor.fetchall()
