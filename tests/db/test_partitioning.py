"""The audit ledger partitioned by month (migration 0008) keeps every guarantee of the
unpartitioned one, and retention (aos_recording.retention) drops only checkpointed chain
beginnings, only through its function, only for the owner."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import psycopg
import pytest
from sqlalchemy import text

from aos_recording import retention, verify
from aos_runtime import migrate
from tests.db.sessions import append_entries as append, ledger_report as report, session
from tests.logins import login_url

pytestmark = pytest.mark.db

SERVICE_ROLES = ("aos_overview", "aos_logs", "aos_export", "aos_producer")
JAN, FEB, MAR = (datetime(2025, m, 10, tzinfo=timezone.utc) for m in (1, 2, 3))


def kinds(chain_report: verify.ChainReport) -> list[tuple[int, str]]:
    return [(a.seq, a.kind) for a in chain_report.anomalies]


@pytest.fixture(scope="module")
def ledger(databases):
    """A database whose ledger held two tenants' chains (A: Jan-Mar 2025, B: Jan-Feb)
    when migration 0008 converted it to monthly partitions."""
    url = databases.create(migrated=False)
    migrate.upgrade(url, "0007_tenant_keyed_schema")
    a, b = "tenant-a", "tenant-b"
    append(url, a, [JAN, FEB, MAR], 10)
    append(url, b, [JAN, FEB], 5)
    migrate.upgrade(url)
    return url, a, b


def test_conversion_keeps_every_chain_and_routes_rows_by_month(ledger):
    url, a, b = ledger
    assert report(url, a).ok and report(url, a).last_seq == 30
    assert report(url, b).ok and report(url, b).last_seq == 10
    with session(url) as conn:
        per_month = dict(conn.execute("SELECT tableoid::regclass::text, count(*) FROM audit_ledger GROUP BY 1"))
        assert conn.execute("SELECT relkind FROM pg_class WHERE relname = 'audit_ledger'").fetchone()[0] == "p"
        assert to_regclass(conn, "audit_ledger_unpartitioned") is None
    assert per_month == {"audit_ledger_p2025_01": 15, "audit_ledger_p2025_02": 15, "audit_ledger_p2025_03": 10}
    # The chain goes on where it stood: the database still assigns seq and links.
    [entry] = append(url, a, [MAR + timedelta(days=5)], 1)
    assert entry.seq == 31 and report(url, a).ok


def to_regclass(conn, name: str):
    return conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0]


def test_every_trigger_fires_always_on_parent_and_partitions(ledger):
    url, _, _ = ledger
    with session(url) as conn:
        modes = conn.execute(
            "SELECT t.tgrelid::regclass::text, t.tgname, t.tgenabled FROM pg_trigger t WHERE NOT t.tgisinternal "
            "AND (t.tgrelid = 'audit_ledger'::regclass OR t.tgrelid IN "
            "(SELECT inhrelid FROM pg_inherits WHERE inhparent = 'audit_ledger'::regclass))").fetchall()
        parts = [r[0] for r in conn.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'audit_ledger'::regclass")]
    assert {m for _, _, m in modes} == {"A"}, modes
    names = {(t, n) for t, n, _ in modes}
    for part in parts:  # row triggers cloned, TRUNCATE refused per partition
        expected = {"audit_ledger_append_only", "audit_ledger_chain", f"{part}_no_truncate"}
        assert {(part, name) for name in expected} <= names


@pytest.mark.parametrize("role", [*SERVICE_ROLES, None])
def test_append_only_on_the_parent_and_on_each_partition(ledger, role):
    url, a, _ = ledger
    with session(url, role, a) as conn:
        for table in ("audit_ledger", "audit_ledger_p2025_01"):
            for statement in (f"UPDATE {table} SET actor_id = 'x' WHERE tenant_id = %s",
                              f"DELETE FROM {table} WHERE tenant_id = %s"):
                with pytest.raises(psycopg.Error) as err:
                    conn.execute(statement, (a,))
                assert err.value.sqlstate in ("AOS01", "42501"), (table, err.value)
        for table in ("audit_ledger", "audit_ledger_p2025_01", "audit_ledger_default"):
            with pytest.raises(psycopg.Error) as err:
                conn.execute(f"TRUNCATE {table} CASCADE")
            assert err.value.sqlstate in ("AOS01", "42501"), (table, err.value)
    if role is None:  # as superuser the trigger itself said no, on the partition too
        with session(url) as conn, pytest.raises(psycopg.Error) as err:
            conn.execute("DELETE FROM audit_ledger_p2025_01 WHERE tenant_id = %s", (a,))
        assert err.value.sqlstate == "AOS01" and "append-only" in str(err.value)


def test_replica_mode_does_not_silence_partition_triggers(ledger):
    url, a, _ = ledger
    with session(url) as conn:
        conn.execute("SET session_replication_role = replica")
        for table in ("audit_ledger", "audit_ledger_p2025_02"):
            with pytest.raises(psycopg.Error) as err:
                conn.execute(f"DELETE FROM {table} WHERE tenant_id = %s", (a,))
            assert err.value.sqlstate == "AOS01"


@pytest.mark.parametrize("role", SERVICE_ROLES)
def test_service_roles_cannot_drop_detach_or_run_retention(ledger, role):
    url, _, _ = ledger
    with session(url, role) as conn:
        for statement in ("DROP TABLE audit_ledger_p2025_01",
                          "ALTER TABLE audit_ledger DETACH PARTITION audit_ledger_p2025_01",
                          "ALTER TABLE audit_ledger_p2025_01 DISABLE TRIGGER audit_ledger_append_only",
                          "SELECT aos_drop_ledger_partitions(now())",
                          "SELECT aos_ensure_ledger_partitions(now(), now())",
                          "SELECT * FROM aos_record_ledger_checkpoints()",
                          "INSERT INTO ledger_checkpoints (tenant_id, kind, seq, chain_hash) "
                          "VALUES ('tenant-a', 'CHECKPOINT', 1, '\\x00')",
                          "SELECT 1 FROM audit_ledger_p2025_01"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_row_level_security_on_the_partitioned_ledger(ledger):
    url, a, b = ledger
    for role in ("aos_logs", "aos_export", "aos_producer", "aos_overview"):
        with session(url, role, a) as conn:
            assert {r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM audit_ledger")} == {a}
        with session(url, role) as conn:
            assert conn.execute("SELECT count(*) FROM audit_ledger").fetchone()[0] == 0
    with session(url, "aos_producer", a) as conn, pytest.raises(psycopg.Error) as err:
        conn.execute("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, "
                     "created_at, content_hash) VALUES ('x', %s, 'LimitUpdated', 'LIMIT', 'l', 'HUMAN', now(), %s)",
                     (b, bytes(32)))
    assert err.value.sqlstate == "42501"


def test_the_list_query_reads_the_newest_partition_by_index(ledger):
    url, a, _ = ledger
    with session(url, "aos_logs", a) as conn:
        conn.execute("SET enable_seqscan = off")  # tiny partitions: can the indexes serve?
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM audit_ledger WHERE tenant_id = %s ORDER BY created_at DESC, id DESC LIMIT 50",
            (a,)))
    assert "Seq Scan" not in plan and "Index" in plan, plan


def test_drop_is_refused_without_a_checkpoint(ledger):
    url, a, _ = ledger
    with session(url) as conn:
        with pytest.raises(psycopg.Error) as err:
            retention.drop_partitions_before(conn, date(2025, 2, 1))
        assert err.value.sqlstate == "AOS02" and "no checkpoint" in str(err.value)
        assert to_regclass(conn, "audit_ledger_p2025_01") is not None
    assert report(url, a).ok


def test_drop_is_refused_unless_it_cuts_exactly_each_chains_beginning(ledger):
    url, _, b = ledger
    with session(url) as conn:
        assert {t for t, _, _ in retention.record_checkpoints(conn)} >= {"tenant-a", b}
    # A backdated entry: seq 11 of b lands in January, after b's February entries 6..10.
    [late] = append(url, b, [JAN + timedelta(days=3)], 1)
    assert late.seq == 11
    with session(url) as conn:
        with pytest.raises(psycopg.Error) as err:  # January alone would leave a hole at b's 1..5 and 11
            retention.drop_partitions_before(conn, date(2025, 2, 1))
        assert err.value.sqlstate == "AOS02" and "not the chain's beginning" in str(err.value)
        with pytest.raises(psycopg.Error) as err:  # January and February: b's checkpoint (10) misses seq 11
            retention.drop_partitions_before(conn, date(2025, 3, 1))
        assert err.value.sqlstate == "AOS02" and "no checkpoint" in str(err.value)
        assert to_regclass(conn, "audit_ledger_p2025_01") is not None
        anchors = conn.execute("SELECT count(*) FROM ledger_checkpoints WHERE kind = 'RETENTION_ANCHOR'")
        assert anchors.fetchone()[0] == 0


def test_drop_of_checkpointed_beginnings_and_verification_from_the_anchor(ledger):
    url, a, b = ledger
    with session(url) as conn:
        retention.record_checkpoints(conn)
        assert retention.drop_partitions_before(conn, date(2025, 3, 1)) == ["audit_ledger_p2025_01",
                                                                            "audit_ledger_p2025_02"]
        assert to_regclass(conn, "audit_ledger_p2025_01") is None
        anchor_a, anchor_b = retention.retention_anchor(conn, a), retention.retention_anchor(conn, b)
        # the drop is recorded and cannot be undone by rewriting its record
        with pytest.raises(psycopg.Error) as err:
            conn.execute("DELETE FROM ledger_checkpoints WHERE tenant_id = %s", (a,))
        assert err.value.sqlstate == "AOS01"
    assert anchor_a.seq == 20 and anchor_b.seq == 11
    kept = report(url, a, anchor=anchor_a)
    assert kept.ok and (kept.first_seq, kept.last_seq) == (21, 31)
    # Without the anchor the cut is flagged: nothing vouches for entries 1..20.
    assert kinds(report(url, a))[0] == (21, verify.TRUNCATION)
    # A forged anchor does not link to the kept chain.
    forged = verify.Checkpoint(anchor_a.seq, bytes(32))
    assert (21, verify.BROKEN_LINK) in kinds(report(url, a, anchor=forged))
    # b's whole chain is gone: it goes on from its anchor.
    [entry] = append(url, b, [MAR], 1)
    assert entry.seq == 12 and entry.prev_hash == anchor_b.chain_hash
    assert report(url, b, anchor=anchor_b).ok


def test_the_logs_integrity_report_verifies_from_the_anchor(ledger):
    # After the drop above: the Logs service's verification (its own role and
    # transaction) starts after the anchor instead of reporting the cut.
    import asyncio

    from aos_runtime.db import Database
    from services.logs.audit_ledger import _verify_range

    url, a, _ = ledger
    db = Database(login_url(url, "logs"), service="logs")
    try:
        head, chain = asyncio.run(db.run(a, _verify_range, a, 1, None, 10_000))
    finally:
        asyncio.run(db.close())
    assert chain.ok and (chain.first_seq, chain.last_seq) == (21, head["seq"])


def test_the_ledgers_total_after_retention_is_what_it_holds(ledger):
    # After the drop above the unfiltered total (the chain's span, no count) is what is
    # left from the anchor to the head, on the first page and past it.
    import asyncio

    from aos_runtime.db import Database
    from services.logs import store

    url, a, _ = ledger
    db = Database(login_url(url, "logs"), service="logs")

    def listed(conn):
        first = store.list_audit_entries(conn, a, store.AuditFilters(), None, 4)
        last = first.rows[-1]
        after = (last["created_at"].isoformat(), last["id"])
        return first, store.list_audit_entries(conn, a, store.AuditFilters(), after, 4), conn.execute(
            text("SELECT count(*) FROM audit_ledger")).scalar_one()

    try:
        first, second, held = asyncio.run(db.run(a, listed))
    finally:
        asyncio.run(db.close())
    assert held == 11 and first.total == second.total == held and first.has_more
    assert not first.total_is_estimate and not second.total_is_estimate


def test_ensure_creates_months_ahead_and_leaves_months_held_by_the_default(ledger):
    url, a, _ = ledger
    append(url, a, [datetime(2031, 6, 1, tzinfo=timezone.utc)], 1)  # no partition yet: the default takes it
    with session(url) as conn:
        created = retention.ensure_partitions(conn, first=date(2031, 5, 1), through=date(2031, 7, 1))
        assert created == ["audit_ledger_p2031_05", "audit_ledger_p2031_07",  # June: the default holds a row
                           *(f"{t}_p2031_{m:02d}" for t in ("system_records", "aos_trace_steps") for m in (5, 6, 7))]
        assert retention.ensure_partitions(conn, first=date(2031, 5, 1), through=date(2031, 7, 1)) == []
        modes = {m for (m,) in conn.execute("SELECT tgenabled FROM pg_trigger WHERE NOT tgisinternal "
                                            "AND tgrelid = ANY(%s::regclass[])",
                                           (created,))}
        anchor = retention.retention_anchor(conn, a)
    assert modes == {"A"}
    assert report(url, a, anchor=anchor).ok  # the default partition's entry is part of the chain


def test_migration_down_and_up_keeps_every_entry_as_it_was(databases):
    url = databases.create(migrated=False)
    migrate.upgrade(url, "0007_tenant_keyed_schema")
    a = "tenant-a"
    append(url, a, [JAN, FEB], 3)

    def entries() -> list[tuple]:
        with session(url) as conn:
            return conn.execute("SELECT id, seq, created_at, content_hash, prev_hash, chain_hash, recorded_at "
                                "FROM audit_ledger ORDER BY tenant_id, seq").fetchall()

    def relkind() -> str:
        with session(url) as conn:
            return conn.execute("SELECT relkind FROM pg_class WHERE relname = 'audit_ledger'").fetchone()[0]

    before = entries()
    migrate.upgrade(url)
    assert relkind() == "p" and entries() == before
    [third_month] = append(url, a, [MAR], 1)
    assert third_month.seq == 7
    migrate.downgrade(url, "0007_tenant_keyed_schema")
    assert relkind() == "r" and entries()[:6] == before and len(entries()) == 7
    with session(url) as conn:
        assert to_regclass(conn, "ledger_checkpoints") is None
    [after] = append(url, a, [MAR], 1)  # 0001's chain trigger is back, and goes on
    assert after.seq == 8
    migrate.upgrade(url)  # the verifier reads today's schema (hash_version, 0023): it checks the chain there
    assert relkind() == "p" and report(url, a).ok and report(url, a).last_seq == 8
