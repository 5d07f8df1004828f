"""The Export service's SQL: every query it runs, and nothing else.

Evidence is read with the shared evidence read model (aos_evidence.queries), the
queries Logs lists it with, so an export shows exactly what Logs shows. What is
the export's own is here: slices streamed through server-side cursors, the
artifact's chunks, the log_exports row, and the export chain's lock.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aos_evidence import queries as evidence
from aos_evidence.queries import EXPORT_SELECT, NOT_ACCESS, AuditFilters, system_clauses
from aos_recording.hashing import LEDGER_ROW_COLUMNS
from aos_runtime.db import stream_tuples
from aos_runtime.rows import all_of, each_of, first_of, one_of

STREAM_BATCH = 1000


def get_export(conn: Connection, tenant_id: str, export_id: str) -> Mapping[str, Any] | None:
    return first_of(conn.execute(text(EXPORT_SELECT + " WHERE a.tenant_id = :t AND a.id = :id"),
                        {"t": tenant_id, "id": export_id}))


def export_by_idempotency_key(conn: Connection, tenant_id: str, key: str) -> Mapping[str, Any] | None:
    return first_of(conn.execute(text(EXPORT_SELECT + " WHERE a.tenant_id = :t AND a.idempotency_key = :k"),
                        {"t": tenant_id, "k": key}))


def incident(conn: Connection, tenant_id: str, incident_id: str) -> Mapping[str, Any] | None:
    return first_of(conn.execute(text("SELECT * FROM incidents WHERE tenant_id = :t AND id = :id"),
                        {"t": tenant_id, "id": incident_id}))


def incident_audit_entries(conn: Connection, tenant_id: str, incident_id: str) -> list[Mapping[str, Any]]:
    """Entries about the incident itself (ix_audit_ledger_tenant_entity) or correlated to it
    (ix_audit_ledger_governance_correlation) — not the access entries of its exports."""
    return list(each_of(conn.execute(text(f"""
        SELECT * FROM audit_ledger WHERE tenant_id = :t AND entity_type = 'INCIDENT' AND entity_id = :id
            AND {NOT_ACCESS}
        UNION SELECT * FROM audit_ledger WHERE tenant_id = :t AND correlation_id = :id AND {NOT_ACCESS}
        ORDER BY seq"""), {"t": tenant_id, "id": incident_id})))


def incident_proposals(conn: Connection, tenant_id: str, incident_id: str) -> list[Mapping[str, Any]]:
    return list(each_of(conn.execute(text("SELECT * FROM policy_proposals WHERE tenant_id = :t "
                                  "AND triggering_incident_id = :id ORDER BY created_at, id"),
                             {"t": tenant_id, "id": incident_id})))


def run_incidents(conn: Connection, tenant_id: str, run_id: str, trace_id: str | None) -> list[Mapping[str, Any]]:
    return list(each_of(conn.execute(text("""
        SELECT * FROM incidents WHERE tenant_id = :t AND source_run_id = :r
        UNION SELECT * FROM incidents WHERE tenant_id = :t AND trace_id = :trace
        ORDER BY created_at, id"""), {"t": tenant_id, "r": run_id, "trace": trace_id})))


def _stream(conn: Connection, sql: str, params: Mapping[str, Any], batch: int = STREAM_BATCH
            ) -> Iterator[Mapping[str, Any]]:
    """Rows through a server-side cursor, ``batch`` at a time: memory stays flat however large the slice."""
    # Per statement: Connection.execution_options() would change the connection itself,
    # and the artifact's INSERTs would then try to run as server-side cursors too.
    result = conn.execute(text(sql), params, execution_options={"stream_results": True, "yield_per": batch})
    yield from each_of(result)


def trace_steps(conn: Connection, tenant_id: str, trace_id: str) -> Iterator[Mapping[str, Any]]:
    """A trace's steps in order, streamed (a run may have any number; the Logs read model's query)."""
    return _stream(conn, evidence.TRACE_STEPS_SELECT, {"tenant": tenant_id, "trace": trace_id})


def audit_slice(conn: Connection, tenant_id: str, filters: AuditFilters, max_seq: int
                ) -> Iterator[list[tuple[Any, ...]]]:
    """The filtered ledger up to ``max_seq`` (the head when the export began), in chain order:
    batches of rows, each a tuple in ``hashing.LEDGER_ROW_COLUMNS`` order."""
    where, params = filters.where()
    # Through psycopg in binary (issue #22): audit_ledger's columns are text, integers, timestamptz,
    # jsonb and bytea, all of which psycopg loads from binary as from text; as tuples, no dict per row;
    # the columns a record is made of (and a v2 row opened with), not the row's bookkeeping
    # (recorded_at, is_synthetic, synthetic_scenario_id). The states' jsonb by orjson where it reads
    # as json.loads does (db.json_loads: json.loads was a tenth of the export's time).
    return stream_tuples(conn, f"SELECT {_SLICE_COLUMNS} FROM audit_ledger a WHERE {where} AND a.seq <= :max_seq "
                         "ORDER BY a.seq", {**params, "tenant": tenant_id, "max_seq": max_seq}, batch=STREAM_BATCH,
                         binary=True, fast_json=True)


_SLICE_COLUMNS = ", ".join(f"a.{c}" for c in LEDGER_ROW_COLUMNS)


def system_slice(conn: Connection, tenant_id: str, filters: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The tenant's and the system-wide records matching the filters, oldest first,
    as far as recorded when the export began (``recorded_until``)."""
    extra, params = system_clauses(filters)
    return _stream(conn, f"SELECT * FROM (SELECT s.* FROM system_records s WHERE s.tenant_id = :tenant{extra} "
                         f"AND s.recorded_at <= :recorded_until UNION ALL SELECT s.* FROM platform_records s "
                         f"WHERE true{extra} AND s.recorded_at <= :recorded_until) s ORDER BY s.created_at, s.id",
                   {**params, "tenant": tenant_id, "recorded_until": filters["recorded_until"]})


def database_now(conn: Connection):
    return conn.execute(text("SELECT clock_timestamp()")).scalar_one()


def write_chunk(conn: Connection, tenant_id: str, export_id: str, chunk_no: int, data: bytes) -> None:
    conn.execute(text("INSERT INTO log_export_artifacts (export_id, tenant_id, chunk_no, data) "
                      "VALUES (:id, :t, :n, :data)"), {"id": export_id, "t": tenant_id, "n": chunk_no, "data": data})


def record_payload_subjects(conn: Connection, tenant_id: str, export_id: str, carried: Mapping[str, int]) -> None:
    """{subject: payloads} of the export's artifact (0026_erasure_exports: an erasure of one deletes
    it), and that they were recorded, none or some (0030_untracked_exports: an export without that
    row is one an erasure must assume may carry its subject)."""
    conn.execute(text("INSERT INTO export_subjects_tracked (tenant_id, export_id) VALUES (:t, :e)"),
                 {"t": tenant_id, "e": export_id})
    if carried:
        conn.execute(text("INSERT INTO export_payload_subjects (tenant_id, export_id, subject_id, payloads) "
                          "VALUES (:t, :e, :s, :n)"),
                     [{"t": tenant_id, "e": export_id, "s": subject, "n": n} for subject, n in sorted(carried.items())])


@dataclass(frozen=True)
class ErasedContent:
    """What erasures took from an export after it was made: its stored artifact, with these payloads.
    ``tombstones``: the erased_export_artifacts rows (erasure_id, basis, payloads_erased, erased_at),
    by erasure id; ``bases`` the bases among them (0030: RECORDED, UNTRACKED)."""
    payloads: int
    erasure_ids: tuple[str, ...]
    artifact_bytes: int
    tombstones: tuple[Mapping[str, Any], ...] = ()

    @property
    def bases(self) -> tuple[str, ...]:
        return tuple(sorted({t["basis"] for t in self.tombstones}))

    @property
    def upper_bound(self) -> bool:
        """Whether ``payloads`` counts at most what the artifact carried (an UNTRACKED tombstone)."""
        return "UNTRACKED" in self.bases


def erased_content(conn: Connection, tenant_id: str, export_id: str) -> ErasedContent | None:
    """The erasures that deleted the export's stored artifact (0026), or None (the artifact is whole)."""
    rows = all_of(conn.execute(text(
        "SELECT erasure_id, basis, payloads_erased, erased_at, artifact_bytes FROM erased_export_artifacts "
        "WHERE tenant_id = :t AND export_id = :e ORDER BY erasure_id, subject_id"),
        {"t": tenant_id, "e": export_id}))
    if not rows:
        return None
    return ErasedContent(sum(r["payloads_erased"] for r in rows), tuple(sorted({r["erasure_id"] for r in rows})),
                         max(r["artifact_bytes"] for r in rows), tuple(rows))


def artifact_chunk(conn: Connection, tenant_id: str, export_id: str, chunk_no: int) -> bytes | None:
    """Chunk ``chunk_no`` of an export's artifact (1 MiB at most), None past its last."""
    row = first_of(conn.execute(text("SELECT data FROM log_export_artifacts WHERE tenant_id = :t AND export_id = :id "
                                     "AND chunk_no = :n"), {"t": tenant_id, "id": export_id, "n": chunk_no}))
    return None if row is None else bytes(row["data"])


def artifact_chunks(conn: Connection, tenant_id: str, export_id: str) -> Iterator[bytes]:
    for row in _stream(conn, "SELECT data FROM log_export_artifacts WHERE tenant_id = :t AND export_id = :id "
                             "ORDER BY chunk_no", {"t": tenant_id, "id": export_id}, batch=1):  # 1 MiB each
        yield bytes(row["data"])


def lock_export_chain(conn: Connection, tenant_id: str) -> Mapping[str, Any] | None:
    """Takes the lock the database's chain trigger takes (it is re-entrant), so the
    previous export's chain hash read here is the one the row will link to. Returns
    that head (None for the tenant's first export)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(aos_chain_lock_key('log_exports', :t))"), {"t": tenant_id})
    return first_of(conn.execute(text("SELECT seq, chain_hash FROM log_exports WHERE tenant_id = :t "
                                      "ORDER BY seq DESC LIMIT 1"), {"t": tenant_id}))


def insert_export(conn: Connection, row: Mapping[str, Any]) -> Mapping[str, Any]:
    """Writes the row once; the database assigns seq, prev_hash, chain_hash and recorded_at."""
    values = {**row, **{k: json.dumps(row[k]) for k in ("manifest", "dsse_envelope", "redaction", "slice_filter")
                        if row.get(k) is not None}}
    columns = ", ".join(values)
    placeholders = ", ".join(f"CAST(:{k} AS jsonb)" if k in ("manifest", "dsse_envelope", "redaction", "slice_filter")
                             else f":{k}" for k in values)
    return one_of(conn.execute(text(f"INSERT INTO log_exports ({columns}) VALUES ({placeholders}) "
                             "RETURNING seq, prev_hash, chain_hash, recorded_at"), values))


def record_checkpoint(conn: Connection, seq: int, chain_hash: bytes, envelope_json: str) -> bool:
    """Records a signed checkpoint of the current tenant's ledger (migration 0010's
    function: only at an entry the ledger holds; the first signature at a seq is kept).
    True when this one was recorded."""
    return bool(conn.execute(text("SELECT aos_record_signed_checkpoint(:seq, :hash, CAST(:envelope AS jsonb))"),
                             {"seq": seq, "hash": chain_hash, "envelope": envelope_json}).scalar())


# --- transparency logs: stored hashes, kept checkpoints, cosignatures (migrations 0013, 0016) ---

def tlog_size(conn: Connection, tenant_id: str, log: str) -> int:
    """The log's tree size: the tree_size of its newest stored hash (one backwards probe of
    the primary key); 0 for a log with no leaf yet."""
    return int(conn.execute(text("SELECT tree_size FROM tlog_hashes WHERE tenant_id = :t AND log = :log "
                                 "ORDER BY hash_index DESC LIMIT 1"), {"t": tenant_id, "log": log}).scalar() or 0)


def tlog_hashes(conn: Connection, tenant_id: str, log: str, indexes: list[int]) -> list[bytes]:
    """The stored hashes at ``indexes``, in that order (a missing one is left out, which
    the tlog reader reports as a store fault)."""
    if not indexes:
        return []
    return [bytes(r["hash"]) for r in evidence.tlog_stored_hashes(conn, tenant_id, log, indexes)]


def tlog_hash_indexes(conn: Connection, tenant_id: str, log: str, indexes: list[int]) -> list[int]:
    """Which of ``indexes`` the log holds."""
    return [int(r["hash_index"]) for r in evidence.tlog_stored_hashes(conn, tenant_id, log, indexes)]


def unpublished_logs(conn: Connection) -> list[Mapping[str, Any]]:
    """Every (tenant_id, log, tree_size) whose log grew past its newest kept checkpoint."""
    return list(each_of(conn.execute(text("SELECT tenant_id, log, tree_size FROM aos_tlog_unpublished()"))))


_NOTE_COLUMNS = "tenant_id, log, tree_size, root_hash, body, note, key_id, signed_at"


def keep_checkpoint_note(conn: Connection, tenant_id: str, log: str, tree_size: int, root: bytes, body: str,
                         signed_note: str, key_id: str) -> Mapping[str, Any]:
    """Keeps the first note signed at (log, size) and returns the kept one (this one, or an
    earlier one at that size)."""
    conn.execute(text("INSERT INTO checkpoint_notes (tenant_id, log, tree_size, root_hash, body, note, key_id) "
                      "VALUES (:t, :log, :size, :root, :body, :note, :kid) ON CONFLICT DO NOTHING"),
                 {"t": tenant_id, "log": log, "size": tree_size, "root": root, "body": body, "note": signed_note,
                  "kid": key_id})
    kept = checkpoint_note(conn, tenant_id, log, tree_size)
    assert kept is not None  # inserted just now, or there already
    return kept


def checkpoint_note(conn: Connection, tenant_id: str, log: str, tree_size: int) -> Mapping[str, Any] | None:
    return first_of(conn.execute(text(f"SELECT {_NOTE_COLUMNS} FROM checkpoint_notes WHERE tenant_id = :t "
                                      "AND log = :log AND tree_size = :size"),
                                 {"t": tenant_id, "log": log, "size": tree_size}))


def cosignature_lines(conn: Connection, tenant_id: str, log: str, tree_size: int) -> list[str]:
    """The kept cosignature lines of a checkpoint, in the order they were received."""
    return [r["line"] for r in each_of(conn.execute(
        text("SELECT line FROM checkpoint_cosignatures WHERE tenant_id = :t AND log = :log AND tree_size = :size "
             "ORDER BY received_at, witness_name, witness_key_id"), {"t": tenant_id, "log": log, "size": tree_size}))]


def keep_cosignature(conn: Connection, tenant_id: str, log: str, tree_size: int, witness_name: str,
                     witness_key_id: bytes, cosigned_at: int, line: str) -> bool:
    """Keeps a witness's first cosignature of a checkpoint; False when it had one already."""
    return conn.execute(text(
        "INSERT INTO checkpoint_cosignatures (tenant_id, log, tree_size, witness_name, witness_key_id, cosigned_at, "
        "line) VALUES (:t, :log, :size, :name, :kid, :at, :line) ON CONFLICT DO NOTHING"),
        {"t": tenant_id, "log": log, "size": tree_size, "name": witness_name, "kid": witness_key_id,
         "at": cosigned_at, "line": line}).rowcount == 1
def export_rate_window(conn: Connection, tenant_id: str, limit: int, window_s: int) -> Mapping[str, Any]:
    """The tenant's exports recorded in the last ``window_s`` seconds of the database's clock:
    how many (counted up to ``limit``), and when the ``limit``-th newest of them leaves the
    window (``frees_in_s``; None while fewer than ``limit``). Reads the created_at index."""
    return one_of(conn.execute(text("""
        WITH recent AS (
            SELECT created_at FROM log_exports
            WHERE tenant_id = :t AND created_at > clock_timestamp() - make_interval(secs => :w)
            ORDER BY created_at DESC LIMIT :limit)
        SELECT count(*) AS made,
               CASE WHEN count(*) >= :limit THEN EXTRACT(EPOCH FROM
                   min(created_at) + make_interval(secs => :w) - clock_timestamp()) END AS frees_in_s
        FROM recent"""), {"t": tenant_id, "w": window_s, "limit": limit}))


def stored_artifact_bytes(conn: Connection, tenant_id: str) -> int:
    """The bytes of every export artifact the tenant has stored: the sum of its log_exports
    rows' size_bytes, as the database keeps it (migration 0035: one row, moved by a trigger on
    log_exports under the tenant's chain lock). No row: no exports."""
    return int(conn.execute(text("SELECT coalesce((SELECT stored_bytes FROM export_stored_bytes "
                                 "WHERE tenant_id = :t), 0)"), {"t": tenant_id}).scalar_one())


def recorded_verification(conn: Connection, tenant_id: str, export_id: str,
                          verifier_version: str) -> Mapping[str, Any] | None:
    """The newest ExportVerified ledger entry for the export by ``verifier_version``."""
    return first_of(conn.execute(text("""
        SELECT id, seq, created_at, after_state FROM audit_ledger
        WHERE tenant_id = :t AND event_type = 'ExportVerified' AND entity_type = 'LOG_EXPORT'
          AND entity_id = :id AND after_state ->> 'verifier_version' = :v
        ORDER BY seq DESC LIMIT 1"""), {"t": tenant_id, "id": export_id, "v": verifier_version}))
