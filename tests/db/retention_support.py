"""Shared by the retention tests (tests/db/test_retention_policies.py, test_retention_rows.py):
the clock, policies and holds written as the Export role writes them, apply as the owner."""
from __future__ import annotations

from datetime import datetime, timezone

from aos_recording import hashing, retention
from aos_recording.writers import Producer, TraceRecorder
from tests.db.sessions import session
from tests.logins import login_url


def at(year: int, month: int, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=timezone.utc)


def finished_trace(url: str, tenant: str, trace: str, at_: datetime, steps: int) -> None:
    """A finished trace whose steps were created at ``at_`` (the partition key; the writer says now())."""
    producer = Producer(login_url(url, "producer"))
    try:
        with producer.transaction(tenant) as conn:
            TraceRecorder(conn).create_trace(tenant_id=tenant, run_id=f"run-{trace}", trace_id=trace, started_at=at_)
        with session(url, "aos_producer", tenant) as conn:
            for i in range(steps):
                fields = {"step_index": i, "step_type": "llm_call", "input_data": {"i": i}, "output_data": None,
                          "timestamp": at_}
                conn.execute(
                    "INSERT INTO aos_trace_steps (id, trace_id, tenant_id, step_index, step_type, source, "
                    "\"timestamp\", input_data, content_hash, created_at) VALUES (%s, %s, %s, %s, 'llm_call', "
                    "'agent', %s, %s, %s, %s)", (f"{trace}-{i}", trace, tenant, i, at_, f'{{"i": {i}}}',
                                                 hashing.step_content_hash(fields), at_))
        with producer.transaction(tenant) as conn:
            TraceRecorder(conn).complete_trace(trace_id=trace, completed_at=at_)
    finally:
        producer.close()


def set_policy(url: str, tenant: str, record_type: str, days: int | None, cls: str = "STANDARD",
               level: str = "") -> None:
    with session(url, "aos_export", tenant) as conn:
        conn.execute(
            "INSERT INTO retention_policies (tenant_id, record_type, level, retention_days, retention_class, "
            "updated_at, updated_by_type, updated_by_id) VALUES (%s, %s, %s, %s, %s, now(), 'HUMAN', 'u') "
            "ON CONFLICT (tenant_id, record_type, level) DO UPDATE SET retention_days = EXCLUDED.retention_days, "
            "retention_class = EXCLUDED.retention_class",
            (tenant, record_type, level, days, cls))


def place_hold(url: str, tenant: str, hold_id: str, scope: str, target: str = "") -> None:
    with session(url, "aos_export", tenant) as conn:
        conn.execute("INSERT INTO legal_holds (tenant_id, id, scope, target_id, reason, placed_by_type, "
                     "placed_by_id, placed_at) VALUES (%s, %s, %s, %s, 'matter 42', 'HUMAN', 'counsel', now())",
                     (tenant, hold_id, scope, target))


def release_hold(url: str, tenant: str, hold_id: str) -> None:
    with session(url, "aos_export", tenant) as conn:
        conn.execute("UPDATE legal_holds SET released_at = now(), released_by_type = 'HUMAN', "
                     "released_by_id = 'counsel', release_reason = 'closed' WHERE tenant_id = %s AND id = %s",
                     (tenant, hold_id))


def apply(url: str, now: datetime, **kw) -> dict[str, retention.TableOutcome]:
    with session(url) as conn:
        return {o.table: o for o in retention.apply_policies(conn, now, **kw)}


def exists(url: str, name: str) -> bool:
    with session(url) as conn:
        return conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None


def drop_entries(url: str, tenant: str) -> list[tuple[str, dict]]:
    with session(url) as conn:
        return conn.execute("SELECT entity_id, after_state FROM audit_ledger WHERE tenant_id = %s "
                            "AND event_type = 'EvidencePartitionDropped' ORDER BY seq", (tenant,)).fetchall()
