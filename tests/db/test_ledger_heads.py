"""Each tenant's ledger head in one row (migration 0032_ledger_heads): the chain trigger reads it
instead of every monthly partition, and the chain it assigns is the one 0008's lookup assigned —
gapless and linked under concurrent appends of one tenant and of many, after a skipped row,
after a tail removed behind the triggers, after retention; no service login can write it."""
from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone

import psycopg
import pytest

from aos_recording import retention
from aos_runtime import migrate
from tests.db.retention_support import apply, set_policy
from tests.db.sessions import append_entries, ledger_report, session

pytestmark = pytest.mark.db

MONTHS = [datetime(2025, m, 10, tzinfo=timezone.utc) for m in range(1, 13)]
SERVICE_ROLES = ("aos_overview", "aos_logs", "aos_export", "aos_producer", "aos_ingest", "aos_retention")


@pytest.fixture(scope="module")
def url(databases):
    """A database of its own: tests here delete rows behind the triggers."""
    url = databases.create()
    with session(url) as conn:
        retention.ensure_partitions(conn, first=date(2025, 1, 1), through=date(2025, 12, 1))
    return url


def head(url: str, tenant: str) -> tuple[int, bytes, datetime] | None:
    with session(url) as conn:
        row = conn.execute("SELECT seq, chain_hash, created_at FROM ledger_heads WHERE tenant_id = %s",
                           (tenant,)).fetchone()
    return None if row is None else (row[0], None if row[1] is None else bytes(row[1]), row[2])


CLEARED = (None, None, None)


def head_is_right(url: str, tenant: str) -> bool:
    """The head row names the newest entry, or is cleared (a transaction appended more than one
    entry of the tenant: the next append looks the head up)."""
    return head(url, tenant) in (CLEARED, newest(url, tenant))


def newest(url: str, tenant: str) -> tuple[int, bytes, datetime]:
    with session(url) as conn:
        row = conn.execute("SELECT seq, chain_hash, created_at FROM audit_ledger WHERE tenant_id = %s "
                           "ORDER BY seq DESC LIMIT 1", (tenant,)).fetchone()
    return row[0], bytes(row[1]), row[2]


def chained(url: str, tenant: str) -> int:
    """The tenant's entries in seq order form one gapless chain from seq 1: their count."""
    import hashlib

    with session(url) as conn:
        rows = conn.execute("SELECT seq, prev_hash, content_hash, chain_hash FROM audit_ledger "
                            "WHERE tenant_id = %s ORDER BY seq", (tenant,)).fetchall()
    prev = bytes(32)
    for n, (seq, prev_hash, content, chain_hash) in enumerate(rows, 1):
        assert seq == n and bytes(prev_hash) == prev
        assert bytes(chain_hash) == hashlib.sha256(prev + bytes(content)).digest()
        prev = bytes(chain_hash)
    return len(rows)


def test_the_head_is_the_newest_entry_across_months(url):
    entries = append_entries(url, "heads-a", MONTHS, 2)  # one transaction: the head row is cleared
    assert [e.seq for e in entries] == list(range(1, 25)) and head(url, "heads-a") == CLEARED
    # a backdated entry (January), alone in its transaction: found by the lookup, written
    [late] = append_entries(url, "heads-a", [MONTHS[0] + timedelta(days=1)], 1)
    assert late.seq == 25 and late.prev_hash == entries[-1].chain_hash
    assert head(url, "heads-a") == newest(url, "heads-a") == (25, late.chain_hash, MONTHS[0] + timedelta(days=1))
    # the next one goes on from the head row (the head is seq order, not time)
    [more] = append_entries(url, "heads-a", [MONTHS[3]], 1)
    assert more.seq == 26 and more.prev_hash == late.chain_hash and head(url, "heads-a")[:2] == (26, more.chain_hash)
    assert ledger_report(url, "heads-a").ok


def test_many_rows_in_one_statement_chain_and_write_the_head_row_at_most_twice(url):
    append_entries(url, "heads-many", MONTHS[:1], 1)
    with psycopg.connect(url) as conn:
        # now(): 500 entries of one instant (the probe must not read them all: see 0032)
        conn.execute("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, "
                     "created_at, content_hash) SELECT 'many-' || i, 'heads-many', 'LimitUpdated', 'LIMIT', 'x', "
                     "'HUMAN', now(), sha256(int8send(i)) FROM generate_series(1, 500) i")
        written = conn.execute("SELECT pg_stat_get_xact_tuples_inserted('ledger_heads'::regclass) + "
                               "pg_stat_get_xact_tuples_updated('ledger_heads'::regclass)").fetchone()[0]
        conn.commit()
    assert written == 2  # named the first entry, then cleared: not one version per entry
    # the rows' content hashes are not their fields' (made in SQL): the links are what is checked
    assert chained(url, "heads-many") == 501 and head(url, "heads-many") == CLEARED
    [entry] = append_entries(url, "heads-many", MONTHS[1:2], 1)
    assert entry.seq == 502 and head(url, "heads-many") == newest(url, "heads-many")


def test_a_rolled_back_savepoint_takes_its_head_with_it(url):
    append_entries(url, "heads-sp", MONTHS[:1], 1)
    insert = ("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, created_at, "
              "content_hash) VALUES (%s, 'heads-sp', 'LimitUpdated', 'LIMIT', 'x', 'HUMAN', %s, sha256(%s)) "
              "RETURNING seq")
    with psycopg.connect(url) as conn:
        assert conn.execute(insert, ("sp-1", MONTHS[1], b"1")).fetchone()[0] == 2
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():  # a savepoint
            assert conn.execute(insert, ("sp-2", MONTHS[2], b"2")).fetchone()[0] == 3
            conn.execute(insert, ("sp-1", MONTHS[1], b"again"))  # its id and month are taken
        assert conn.execute(insert, ("sp-3", MONTHS[3], b"3")).fetchone()[0] == 3
        with conn.transaction():  # a savepoint released
            assert conn.execute(insert, ("sp-4", MONTHS[4], b"4")).fetchone()[0] == 4
        conn.commit()
    assert chained(url, "heads-sp") == 4 and head_is_right(url, "heads-sp")
    [entry] = append_entries(url, "heads-sp", MONTHS[5:6], 1)
    assert entry.seq == 5 and head(url, "heads-sp") == newest(url, "heads-sp")


def test_concurrent_appends_of_one_tenant_and_of_many_stay_gapless_and_linked(url):
    """Eight sessions: four append to one tenant, four to a tenant each, 20 transactions apiece
    of one entry (even sessions: the head row written) or three (odd: written, then cleared),
    in months spread over the year."""
    tenants = ["heads-busy"] * 4 + [f"heads-own-{k}" for k in range(4)]
    for tenant in set(tenants):
        append_entries(url, tenant, MONTHS[:1], 1)
    errors: list[BaseException] = []
    start = threading.Barrier(len(tenants))

    def work(k: int, tenant: str) -> None:
        try:
            start.wait()
            for i in range(20):
                append_entries(url, tenant, [MONTHS[(k + i) % 12] + timedelta(minutes=k)], 1 + 2 * (k % 2))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k, t)) for k, t in enumerate(tenants)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    expected = {"heads-busy": 1 + 2 * 20 + 2 * 60, "heads-own-0": 21, "heads-own-1": 61, "heads-own-2": 21,
                "heads-own-3": 61}
    for tenant, n in expected.items():
        report = ledger_report(url, tenant)
        assert report.ok and report.checked == n and report.last_seq == n, tenant
        assert head_is_right(url, tenant)
    assert head(url, "heads-own-0") == newest(url, "heads-own-0")  # one entry per transaction: named
    assert head(url, "heads-own-1") == CLEARED


def test_a_row_skipped_after_the_trigger_leaves_no_gap(url):
    """INSERT … ON CONFLICT DO NOTHING runs the BEFORE trigger, then skips the row: the head
    names an entry never written, and the next append goes on from the ledger's real newest."""
    [first] = append_entries(url, "heads-skip", MONTHS[:1], 1)
    with session(url, "aos_producer", "heads-skip") as conn:
        row = conn.execute("SELECT id, created_at FROM audit_ledger WHERE tenant_id = 'heads-skip'").fetchone()
        skipped = conn.execute(
            "INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, created_at, "
            "content_hash) VALUES (%s, 'heads-skip', 'LimitUpdated', 'LIMIT', 'x', 'HUMAN', %s, sha256('x')) "
            "ON CONFLICT DO NOTHING RETURNING seq", (row[0], row[1])).fetchall()
    assert skipped == [] and head(url, "heads-skip")[0] == 2  # the trigger ran: the head moved to nothing
    [entry] = append_entries(url, "heads-skip", MONTHS[1:2], 1)
    assert entry.seq == 2 and entry.prev_hash == first.chain_hash
    assert ledger_report(url, "heads-skip").ok and head(url, "heads-skip") == newest(url, "heads-skip")


def test_a_tail_removed_behind_the_triggers_is_where_the_chain_goes_on(url):
    entries = append_entries(url, "heads-cut", MONTHS[:3], 2)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_append_only")
        conn.execute("DELETE FROM audit_ledger WHERE tenant_id = 'heads-cut' AND seq > 4")
        conn.execute("ALTER TABLE audit_ledger ENABLE ALWAYS TRIGGER audit_ledger_append_only")
        # the tree keeps leaves 5 and 6 (and would refuse them again): off for this append
        conn.execute("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_tlog")
    try:
        [entry] = append_entries(url, "heads-cut", MONTHS[3:4], 1)
    finally:
        with session(url) as conn:
            conn.execute("ALTER TABLE audit_ledger ENABLE ALWAYS TRIGGER audit_ledger_tlog")
    assert entry.seq == 5 and entry.prev_hash == entries[3].chain_hash  # as 0008's lookup answered
    assert ledger_report(url, "heads-cut").ok and head(url, "heads-cut") == newest(url, "heads-cut")
    # and the entry a stale head row named: removed, found again by the lookup
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_append_only")
        conn.execute("DELETE FROM audit_ledger WHERE tenant_id = 'heads-cut' AND seq = 5")
        conn.execute("ALTER TABLE audit_ledger ENABLE ALWAYS TRIGGER audit_ledger_append_only")
        conn.execute("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_tlog")
    try:
        [again] = append_entries(url, "heads-cut", MONTHS[4:5], 1)
    finally:
        with session(url) as conn:
            conn.execute("ALTER TABLE audit_ledger ENABLE ALWAYS TRIGGER audit_ledger_tlog")
    assert again.seq == 5 and again.prev_hash == entries[3].chain_hash


def test_retention_row_removal_keeps_the_head_and_the_chain_goes_on(databases):
    """apply_policies row by row (0027): the chain's beginning goes, the head stays; a tenant
    whose every entry goes continues from its anchor (its EvidenceRowsRemoved entry first)."""
    db = databases.create()
    with session(db) as conn:
        retention.ensure_partitions(conn, first=date(2025, 1, 1), through=date(2025, 12, 1))
    keeper, a, b = "heads-keep", "heads-ret-a", "heads-ret-b"
    append_entries(db, keeper, MONTHS[:1], 1)
    set_policy(db, keeper, "AUDIT_LEDGER", 7 * 365, "SOC2")  # January stays a month of rows
    entries = append_entries(db, a, [MONTHS[0], MONTHS[1], MONTHS[5]], 3)
    other = append_entries(db, b, MONTHS[:1], 2)
    with session(db) as conn:
        retention.record_checkpoints(conn)
    ledger = apply(db, datetime(2026, 3, 15, tzinfo=timezone.utc))["audit_ledger"]
    assert ledger.removed == {"audit_ledger_p2025_01": {a: 3, b: 2}, "audit_ledger_p2025_02": {a: 3}}
    with session(db) as conn:
        anchor_a, anchor_b = retention.retention_anchor(conn, a), retention.retention_anchor(conn, b)
    assert (anchor_a.seq, anchor_a.chain_hash) == (6, entries[5].chain_hash)
    assert (anchor_b.seq, anchor_b.chain_hash) == (2, other[-1].chain_hash)
    # each removal wrote its tenant an EvidenceRowsRemoved entry: a's after its head (seq 9),
    # b's after the anchor (its head's entry was removed)
    assert newest(db, a)[0] == 9 + 2 and newest(db, b)[0] == 3
    for tenant, anchor in ((a, anchor_a), (b, anchor_b)):
        assert ledger_report(db, tenant, anchor=anchor).ok and head_is_right(db, tenant)
    [entry] = append_entries(db, a, MONTHS[6:7], 1)
    assert entry.seq == 12 and ledger_report(db, a, anchor=anchor_a).ok


def test_every_entry_gone_the_chain_goes_on_from_the_anchor(url):
    """The head's own entry removed (the tenant's whole ledger, behind its checkpoint): the head
    row names nothing the ledger holds, and the trigger takes the anchor, as 0008's did."""
    entries = append_entries(url, "heads-all", MONTHS[2:3], 3)
    entries += append_entries(url, "heads-all", [MONTHS[2] + timedelta(days=1)], 1)  # alone: the row names it
    assert head(url, "heads-all")[:2] == (4, entries[-1].chain_hash)
    with session(url) as conn:
        retention.record_checkpoints(conn, "heads-all")
        conn.execute("SET ROLE aos_retention")
        conn.execute("SELECT * FROM aos_retention_remove_rows('audit_ledger', 'audit_ledger_p2025_03', "
                     "'heads-all', NULL)")
        conn.execute("RESET ROLE")
        assert conn.execute("SELECT count(*) FROM audit_ledger WHERE tenant_id = 'heads-all'").fetchone()[0] == 0
        anchor = retention.retention_anchor(conn, "heads-all")
    assert (anchor.seq, anchor.chain_hash) == (4, entries[-1].chain_hash) and head(url, "heads-all")[0] == 4
    [entry] = append_entries(url, "heads-all", MONTHS[4:5], 1)
    assert entry.seq == 5 and entry.prev_hash == anchor.chain_hash
    assert ledger_report(url, "heads-all", anchor=anchor).ok and head(url, "heads-all") == newest(url, "heads-all")


@pytest.mark.parametrize("role", SERVICE_ROLES)
def test_no_service_login_writes_the_head_table(url, role):
    append_entries(url, "heads-guard", MONTHS[:1], 1)
    before = head(url, "heads-guard")
    for statement in ("UPDATE ledger_heads SET seq = 1",
                      "DELETE FROM ledger_heads",
                      "TRUNCATE ledger_heads",
                      "INSERT INTO ledger_heads VALUES ('heads-guard', 9, sha256('x'), now())"):
        with session(url, role, "heads-guard") as conn, pytest.raises(psycopg.Error) as err:
            conn.execute(statement)
        assert err.value.sqlstate == "42501", statement  # insufficient privilege
    assert head(url, "heads-guard") == before


def test_the_owner_cannot_delete_or_truncate_heads_and_readers_see_their_tenant_only(url):
    append_entries(url, "heads-rls", MONTHS[:1], 1)
    for statement in ("DELETE FROM ledger_heads WHERE tenant_id = 'heads-rls'", "TRUNCATE ledger_heads"):
        with session(url, "aos_owner") as conn, pytest.raises(psycopg.Error) as err:
            conn.execute(statement)
        assert err.value.sqlstate == "AOS01", statement
    for role in ("aos_logs", "aos_export"):
        with session(url, role, "heads-rls") as conn:
            assert [r[0] for r in conn.execute("SELECT tenant_id FROM ledger_heads")] == ["heads-rls"]
        with session(url, role) as conn:  # no tenant: nothing
            assert conn.execute("SELECT count(*) FROM ledger_heads").fetchone()[0] == 0


def test_migration_backfills_every_tenants_head_and_downgrades(databases):
    url = databases.create(migrated=False)
    migrate.upgrade(url, "0031_severity_sort_key")
    with session(url) as conn:
        retention.ensure_partitions(conn, first=date(2025, 1, 1), through=date(2025, 12, 1))
    a = append_entries(url, "heads-mig-a", MONTHS[:6], 3)
    b = append_entries(url, "heads-mig-b", MONTHS[3:4], 2)
    with session(url) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES ('heads-mig-empty', 'x')")
    migrate.upgrade(url)
    assert head(url, "heads-mig-a") == (18, a[-1].chain_hash, MONTHS[5] + timedelta(hours=2))
    assert head(url, "heads-mig-b") == (2, b[-1].chain_hash, MONTHS[3] + timedelta(hours=1))
    assert head(url, "heads-mig-empty") is None
    [entry] = append_entries(url, "heads-mig-empty", MONTHS[:1], 1)
    assert entry.seq == 1 and head(url, "heads-mig-empty")[0] == 1
    migrate.downgrade(url, "0031_severity_sort_key")
    [after] = append_entries(url, "heads-mig-a", MONTHS[6:7], 1)  # 0008's lookup again
    assert after.seq == 19 and after.prev_hash == a[-1].chain_hash
    migrate.upgrade(url)
    assert head(url, "heads-mig-a")[:2] == (19, after.chain_hash)
    assert ledger_report(url, "heads-mig-a").ok


def test_an_append_reads_the_heads_month_only(url):
    """The point of 0032: with its head row, an append scans no partition but the head's month
    (0008's lookup scanned every month's index). Counted in the appending transaction."""
    append_entries(url, "heads-one-month", MONTHS, 1)  # entries in every month, the head row cleared
    append_entries(url, "heads-one-month", [MONTHS[11] + timedelta(days=1)], 1)  # the row names December's
    with psycopg.connect(url) as conn:
        conn.execute("SELECT set_config('aos.tenant_id', 'heads-one-month', true)")
        conn.execute("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, "
                     "created_at, content_hash) VALUES ('one-month', 'heads-one-month', 'LimitUpdated', 'LIMIT', "
                     "'x', 'HUMAN', %s, sha256('x'))", (MONTHS[6],))
        # per partition: its sequential scans and its indexes' scans
        scans = dict(conn.execute(
            "SELECT c.relname, pg_stat_get_xact_numscans(c.oid) + coalesce((SELECT sum(pg_stat_get_xact_numscans("
            "x.indexrelid)) FROM pg_index x WHERE x.indrelid = c.oid), 0) FROM pg_inherits i JOIN pg_class c "
            "ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_ledger'::regclass"))
        conn.rollback()
    assert {name: n for name, n in scans.items() if n} == {"audit_ledger_p2025_12": 1}


def test_a_forged_transaction_head_is_refused_not_forked(url):
    """The transaction's own head is a setting the session could set itself: naming an older
    entry makes the trigger reuse a seq, which the tree's primary key refuses (the tree
    trigger is ENABLE ALWAYS; only the owner can turn it off). No fork either way."""
    import hashlib

    first = append_entries(url, "heads-forge", MONTHS[:1], 1)[0]
    name = "aos.ledger_head_" + hashlib.md5(b"heads-forge").hexdigest()
    forged = f"{first.seq}|{MONTHS[0].strftime('%Y-%m-%d %H:%M:%S')}.000000|cleared"
    with session(url, "aos_producer", "heads-forge") as conn, pytest.raises(psycopg.errors.UniqueViolation) as err:
        with conn.transaction():
            conn.execute("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, "
                         "created_at, content_hash) VALUES ('forge-1', 'heads-forge', 'LimitUpdated', 'LIMIT', "
                         "'x', 'HUMAN', %s, sha256('1'))", (MONTHS[1],))
            conn.execute("SELECT set_config(%s, %s, true)", (name, forged))
            conn.execute("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, "
                         "created_at, content_hash) VALUES ('forge-2', 'heads-forge', 'LimitUpdated', 'LIMIT', "
                         "'x', 'HUMAN', %s, sha256('2'))", (MONTHS[2],))
    assert err.value.diag.constraint_name == "tlog_hashes_pkey"
    assert ledger_report(url, "heads-forge").ok and newest(url, "heads-forge")[0] == 1
