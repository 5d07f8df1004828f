"""The recording library's reads: chains and traces, streamed in order for the verifier."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import text
from sqlalchemy.engine import Connection, Result

from aos_recording import hashing
from aos_recording.driver import fetch_tuples

Row = Mapping[str, Any]


def _rows(result: Result[Any]) -> Sequence[Row]:
    # SQLAlchemy types a row's keys as str or column; these queries' keys are their column names.
    return cast("Sequence[Row]", result.mappings().all())

LEDGER_COLUMNS = ("id, tenant_id, seq, event_type, entity_type, entity_id, actor_type, actor_id, action_reason, "
                  "correlation_id, created_at, before_state, after_state, content_hash, prev_hash, chain_hash, "
                  "hash_version, commitments")


def iter_ledger(conn: Connection, tenant_id: str, *, from_seq: int = 1, to_seq: int | None = None,
                batch: int = 5000) -> Iterator[Mapping[str, Any]]:
    """A tenant's ledger entries in seq order, keyset-batched: memory stays flat on any length."""
    for rows in iter_ledger_batches(conn, tenant_id, from_seq=from_seq, to_seq=to_seq, batch=batch):
        yield from rows


def iter_ledger_batches(conn: Connection, tenant_id: str, *, from_seq: int = 1, to_seq: int | None = None,
                        batch: int = 5000) -> Iterator[Sequence[Mapping[str, Any]]]:
    """iter_ledger's batches (the last may be empty): one query each."""
    after = from_seq - 1
    while True:
        rows = _rows(conn.execute(text(
            f"SELECT {LEDGER_COLUMNS} FROM audit_ledger WHERE tenant_id = :t AND seq > :after "
            "AND (CAST(:to_seq AS bigint) IS NULL OR seq <= :to_seq) ORDER BY seq LIMIT :n"),
            {"t": tenant_id, "after": after, "to_seq": to_seq, "n": batch}))
        yield rows
        if len(rows) < batch:
            return
        after = rows[-1]["seq"]


_LEDGER_ROWS_SQL = (f"SELECT {', '.join(hashing.LEDGER_ROW_COLUMNS)} FROM audit_ledger WHERE tenant_id = :t "
                    "AND seq > :after AND (CAST(:to_seq AS bigint) IS NULL OR seq <= :to_seq) ORDER BY seq LIMIT :n")


def iter_ledger_rows(conn: Connection, tenant_id: str, *, from_seq: int = 1, to_seq: int | None = None,
                     batch: int = 5000) -> Iterator[Sequence[tuple[Any, ...]]]:
    """``iter_ledger_batches`` for the verifier: the same entries, each a tuple in
    ``hashing.LEDGER_ROW_COLUMNS`` order, read through psycopg in binary (``driver.fetch_tuples``:
    no RowMapping, no text to parse for times, integers and bytea)."""
    after = from_seq - 1
    while True:
        rows = fetch_tuples(conn, _LEDGER_ROWS_SQL, {"t": tenant_id, "after": after, "to_seq": to_seq, "n": batch},
                            binary=True)  # text, bigint, smallint, timestamptz, bytea, jsonb: all load from binary
        yield rows
        if len(rows) < batch:
            return
        after = rows[-1][0]


def iter_exports(conn: Connection, tenant_id: str, *, batch: int = 1000) -> Iterator[Mapping[str, Any]]:
    """A tenant's log_exports chain in seq order, keyset-batched."""
    after = 0
    while True:
        rows = _rows(conn.execute(text(
            "SELECT id, seq, manifest, content_hash, prev_hash, chain_hash FROM log_exports "
            "WHERE tenant_id = :t AND seq > :after ORDER BY seq LIMIT :n"),
            {"t": tenant_id, "after": after, "n": batch}))
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1]["seq"]


def chain_hash_before(conn: Connection, table: str, tenant_id: str, seq: int) -> bytes | None:
    """The chain hash of the entry just before ``seq`` (the anchor for verifying a range)."""
    assert table in ("audit_ledger", "log_exports")
    value = conn.execute(text(f"SELECT chain_hash FROM {table} WHERE tenant_id = :t AND seq < :s "
                              "ORDER BY seq DESC LIMIT 1"), {"t": tenant_id, "s": seq}).scalar()
    return bytes(value) if value is not None else None


def chain_hash_at(conn: Connection, table: str, tenant_id: str, seq: int) -> bytes | None:
    assert table in ("audit_ledger", "log_exports")
    value = conn.execute(text(f"SELECT chain_hash FROM {table} WHERE tenant_id = :t AND seq = :s"),
                         {"t": tenant_id, "s": seq}).scalar()
    return bytes(value) if value is not None else None


def load_trace(conn: Connection, trace_id: str) -> tuple[Mapping[str, Any] | None, list[Mapping[str, Any]]]:
    traces = _rows(conn.execute(text("SELECT * FROM aos_traces WHERE trace_id = :t"), {"t": trace_id}))
    steps = _rows(conn.execute(text(
        "SELECT step_index, step_type, input_data, output_data, \"timestamp\", content_hash, hash_version, "
        "commitments "
        "FROM aos_trace_steps WHERE trace_id = :t ORDER BY step_index"), {"t": trace_id}))
    return (traces[0] if traces else None), list(steps)


def tenant_exists(conn: Connection, tenant_id: str) -> bool:
    return conn.execute(text("SELECT 1 FROM tenants WHERE id = :t"), {"t": tenant_id}).first() is not None
