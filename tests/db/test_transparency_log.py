"""The transparency log the database keeps beside each tenant's chains (migration 0013):
the stored hashes written on every append are those of a tree built from scratch over the
same leaves, under concurrent appends too; no service session can write or change them;
another tenant sees none; a pre-0013 ledger is backfilled right."""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone

import psycopg
import pytest

from aos_recording import retention, tlog
from aos_runtime import migrate
from tests.db.sessions import append_entries, make_tenant, new_id, session

pytestmark = pytest.mark.db

JAN = datetime(2025, 1, 10, tzinfo=timezone.utc)


# --- a from-scratch reference (RFC 6962 MTH over complete subtrees; Go sumdb/tlog's index) ----
def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _mth(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return _leaf(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)  # the largest power of two below the size
    return _node(_mth(leaves[:k]), _mth(leaves[k:]))


def _index(level: int, n: int) -> int:
    for _ in range(level):
        n = 2 * n + 1
    i = 0
    while n:
        i, n = i + n, n >> 1
    return i + level


def from_scratch(leaves: list[bytes]) -> dict[int, bytes]:
    """Every complete subtree's hash at its stored index, each computed from its leaves."""
    stored = {}
    level = 0
    while (1 << level) <= len(leaves):
        width = 1 << level
        for n in range(len(leaves) // width):
            stored[_index(level, n)] = _mth(leaves[n * width:(n + 1) * width])
        level += 1
    return stored


# --- the database's ----------------------------------------------------------------------
def tree(url: str, tenant: str, log: str = "ledger") -> dict[int, bytes]:
    with session(url) as conn:
        return {i: bytes(h) for i, h in conn.execute(
            "SELECT hash_index, hash FROM tlog_hashes WHERE tenant_id = %s AND log = %s", (tenant, log))}


def leaves(url: str, tenant: str, table: str = "audit_ledger") -> list[bytes]:
    """The chain's content hashes in seq order (checked gapless from 1)."""
    with session(url) as conn:
        rows = conn.execute(f"SELECT seq, content_hash FROM {table} WHERE tenant_id = %s ORDER BY seq",
                            (tenant,)).fetchall()
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1))
    return [bytes(h) for _, h in rows]


def leaf_rows(url: str, tenant: str, log: str = "ledger") -> list[tuple]:
    with session(url) as conn:
        return conn.execute("SELECT tree_size, entry_id, leaf_data, created_at, recorded_at FROM tlog_hashes WHERE tenant_id = %s "
                            "AND log = %s AND leaf_data IS NOT NULL ORDER BY hash_index", (tenant, log)).fetchall()


def assert_tree_right(url: str, tenant: str, table: str = "audit_ledger", log: str = "ledger") -> int:
    data = leaves(url, tenant, table)
    assert tree(url, tenant, log) == from_scratch(data)
    with session(url) as conn:
        rows = conn.execute(f"SELECT id, created_at, recorded_at FROM {table} WHERE tenant_id = %s ORDER BY seq",
                            (tenant,)).fetchall()
    assert leaf_rows(url, tenant, log) == [(i + 1, rows[i][0], data[i], *rows[i][1:]) for i in range(len(data))]
    return len(data)


def export_row(conn, tenant: str, content: bytes) -> str:
    """A log_exports row as the export role writes one (only what the chain and tree read matters)."""
    export_id = new_id("exp")
    conn.execute(
        "INSERT INTO log_exports (id, tenant_id, scope, bundle_type, format, content_type, filename, size_bytes, "
        "checksum, manifest, dsse_envelope, signing_key_id, redaction, requested_by_type, requested_by_id, "
        "created_at, content_hash) VALUES (%s, %s, 'AUDIT_SLICE', 'EVIDENCE', 'JSON', 'application/json', 'x.json', "
        "0, %s, '{}', '{}', 'k', '{}', 'HUMAN', 'u', now(), %s)",
        (export_id, tenant, hashlib.sha256(b"").digest(), content))
    return export_id


def test_module_reference_is_rfc6962():
    # RFC 6962's MTH of three leaves, written out: the reference itself must be right.
    a, b, c = b"a", b"b", b"c"
    assert _mth([a, b, c]) == _node(_node(_leaf(a), _leaf(b)), _leaf(c))
    assert from_scratch([a, b, c]) == {0: _leaf(a), 1: _leaf(b), 2: _node(_leaf(a), _leaf(b)), 3: _leaf(c)}


@pytest.mark.parametrize("count", [1, 2, 3, 7, 8, 33])
def test_incremental_hashes_equal_a_tree_built_from_scratch(database_url, count):
    tenant = new_id("t")
    append_entries(database_url, tenant, [JAN], count)
    assert assert_tree_right(database_url, tenant) == count


def test_the_stored_tree_is_aos_recording_tlogs(database_url):
    """The database's stored hashes are those aos_recording.tlog writes leaf by leaf, and its
    root of every size is the RFC 6962 MTH of that prefix."""
    tenant = new_id("t")
    append_entries(database_url, tenant, [JAN], 21)
    stored, data = tree(database_url, tenant), leaves(database_url, tenant)
    expected: dict[int, bytes] = {}
    for n, leaf in enumerate(data):
        for offset, h in enumerate(tlog.stored_hashes(n, leaf, lambda idx: [expected[i] for i in idx])):
            expected[tlog.stored_hash_index(0, n) + offset] = h
    assert stored == expected and len(stored) == tlog.stored_hash_count(len(data))
    for size in range(1, len(data) + 1):
        assert tlog.tree_hash(size, lambda idx: [stored[i] for i in idx]) == _mth(data[:size])


def test_each_append_writes_one_hash_per_completed_subtree(database_url):
    tenant = new_id("t")
    append_entries(database_url, tenant, [JAN], 16)
    with session(database_url) as conn:
        written = dict(conn.execute("SELECT tree_size, count(*) FROM tlog_hashes WHERE tenant_id = %s "
                                    "GROUP BY tree_size", (tenant,)).fetchall())
    # leaf n (seq n + 1) writes 1 + the trailing 1 bits of n
    assert written == {seq: 1 + ((seq - 1) ^ seq).bit_length() - 1 for seq in range(1, 17)}


def test_concurrent_appends_by_two_sessions_keep_the_tree_right(database_url):
    tenant = new_id("t")
    append_entries(database_url, tenant, [JAN], 1)
    # two producer sessions at once, each its own transaction of 15 appends; result() re-raises
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(append_entries, database_url, tenant, [JAN + timedelta(days=i)], 15) for i in (1, 2)]
        assert [len(run.result()) for run in runs] == [15, 15]
    assert assert_tree_right(database_url, tenant) == 31


def test_a_row_on_conflict_do_nothing_skips_adds_no_leaf(database_url):
    """The tree follows the rows the table holds: an AFTER trigger, not the BEFORE chain trigger."""
    tenant = new_id("t")
    [entry] = append_entries(database_url, tenant, [JAN], 1)
    with session(database_url, "aos_producer", tenant) as conn:
        conn.execute(
            "INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, created_at, "
            "content_hash) VALUES (%s, %s, 'LimitUpdated', 'LIMIT', 'x', 'HUMAN', %s, %s) ON CONFLICT DO NOTHING",
            (entry.id, tenant, JAN, b"\x01" * 32))
    append_entries(database_url, tenant, [JAN], 2)
    assert assert_tree_right(database_url, tenant) == 3


def test_the_export_chain_is_a_second_log(database_url):
    tenant = make_tenant(database_url)
    with session(database_url, "aos_export", tenant) as conn:
        for i in range(5):
            export_row(conn, tenant, hashlib.sha256(bytes([i])).digest())
    assert assert_tree_right(database_url, tenant, "log_exports", "exports") == 5
    assert tree(database_url, tenant, "ledger") == {}


@pytest.mark.parametrize("role", ["aos_producer", "aos_export", "aos_logs", "aos_overview"])
def test_no_service_session_writes_or_changes_the_tree(database_url, role):
    tenant = new_id("t")
    append_entries(database_url, tenant, [JAN], 3)
    before = tree(database_url, tenant)
    attempts = [
        ("INSERT INTO tlog_hashes (tenant_id, log, hash_index, hash, tree_size) VALUES (%s, 'ledger', 99, %s, 1)",
         (tenant, b"\x00" * 32)),
        ("UPDATE tlog_hashes SET hash = %s WHERE tenant_id = %s", (b"\x00" * 32, tenant)),
        ("DELETE FROM tlog_hashes WHERE tenant_id = %s", (tenant,)),
        ("TRUNCATE tlog_hashes", ()),
        ("SELECT aos_tlog_add(%s, 'ledger', 4, 'forged', %s, now(), now())", (tenant, b"\x00" * 32)),
        ("ALTER TABLE tlog_hashes DISABLE TRIGGER tlog_hashes_append_only", ()),
    ]
    for sql, params in attempts:
        with session(database_url, role, tenant) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql, params)
    assert tree(database_url, tenant) == before


def test_not_even_the_owner_changes_a_stored_hash(database_url):
    tenant = new_id("t")
    append_entries(database_url, tenant, [JAN], 2)
    with session(database_url) as conn:
        conn.execute("SET session_replication_role = replica")
        for sql in ("UPDATE tlog_hashes SET hash = hash WHERE tenant_id = %s",
                    "DELETE FROM tlog_hashes WHERE tenant_id = %s"):
            with pytest.raises(psycopg.Error) as err:
                conn.execute(sql, (tenant,))
            assert err.value.sqlstate == "AOS01" and "append-only" in str(err.value)


def test_another_tenant_sees_none_of_it(database_url):
    mine, other = new_id("t"), new_id("t")
    append_entries(database_url, mine, [JAN], 4)
    append_entries(database_url, other, [JAN], 1)
    for role in ("aos_logs", "aos_export"):
        with session(database_url, role, other) as conn:
            assert conn.execute("SELECT count(*) FROM tlog_hashes WHERE tenant_id = %s", (mine,)).fetchone()[0] == 0
            assert conn.execute("SELECT DISTINCT tenant_id FROM tlog_hashes").fetchall() == [(other,)]
        with session(database_url, role) as conn:  # no tenant set: nothing at all
            assert conn.execute("SELECT count(*) FROM tlog_hashes").fetchone()[0] == 0


def test_a_pre_0013_ledger_and_export_chain_are_backfilled(databases):
    url = databases.create(migrated=False)
    migrate.upgrade(url, "0012_pinned_search_path")
    a, b = "tenant-a", "tenant-b"
    append_entries(url, a, [JAN, JAN + timedelta(days=40)], 11)
    append_entries(url, b, [JAN], 5)
    with session(url, "aos_export", a) as conn:
        for i in range(3):
            export_row(conn, a, hashlib.sha256(bytes([i])).digest())
    migrate.upgrade(url)
    assert assert_tree_right(url, a) == 22
    assert assert_tree_right(url, b) == 5
    assert assert_tree_right(url, a, "log_exports", "exports") == 3
    # and the trigger goes on from the backfilled tree
    append_entries(url, a, [JAN], 3)
    assert assert_tree_right(url, a) == 25
    migrate.downgrade(url, "0012_pinned_search_path")
    with session(url) as conn:
        assert conn.execute("SELECT to_regclass('tlog_hashes')").fetchone()[0] is None
    migrate.upgrade(url)
    assert assert_tree_right(url, a) == 25


def test_retention_drops_ledger_months_but_never_the_tree(databases):
    """The dropped entries' leaves and hashes stay: later proofs need them, and the leaf data
    still answers ListLedgerLeaves; appends after the drop go on from the kept tree."""
    url = databases.create()
    tenant = "tenant-r"
    with session(url) as conn:
        retention.ensure_partitions(conn, first=date(2025, 1, 1), through=date(2025, 3, 1))
    entries = append_entries(url, tenant, [JAN, JAN + timedelta(days=31)], 5)
    before = leaf_rows(url, tenant)
    with session(url) as conn:
        retention.record_checkpoints(conn)
        assert retention.drop_partitions_before(conn, date(2025, 2, 1)) == ["audit_ledger_p2025_01"]
        assert conn.execute("SELECT min(seq) FROM audit_ledger WHERE tenant_id = %s", (tenant,)).fetchone()[0] == 6
    assert leaf_rows(url, tenant) == before
    entries += append_entries(url, tenant, [JAN + timedelta(days=40)], 4)
    assert [e.seq for e in entries[-4:]] == [11, 12, 13, 14]
    assert tree(url, tenant) == from_scratch([e.content_hash for e in entries])


def test_a_ledger_whose_beginning_retention_dropped_before_0013_is_refused_by_name(databases):
    """Its leaves are gone: the migration says which tenant, rather than keep a tree that does
    not start at entry 1 (and appends that could never be proved)."""
    url = databases.create(migrated=False)
    migrate.upgrade(url, "0012_pinned_search_path")
    with session(url) as conn:
        retention.ensure_partitions(conn, first=date(2025, 1, 1), through=date(2025, 3, 1))
    append_entries(url, "tenant-dropped", [JAN, JAN + timedelta(days=31)], 2)
    with session(url) as conn:
        retention.record_checkpoints(conn)
        assert retention.drop_partitions_before(conn, date(2025, 2, 1)) == ["audit_ledger_p2025_01"]
    with pytest.raises(Exception, match="tenant-dropped") as err:
        migrate.upgrade(url)
    assert getattr(err.value, "orig", err.value).sqlstate == "AOS03"
    with session(url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0012_pinned_search_path"


def test_a_stale_snapshot_cannot_append_a_second_leaf_at_a_seq(database_url):
    """A REPEATABLE READ appender reads the chain head from its old snapshot and would reuse a
    seq (the partitioned ledger's (tenant_id, seq, created_at) key lets a second row in). Since
    0032 its update of the tenant's head row (ledger_heads), which the committed append changed
    after the snapshot, fails first (40001); before 0032 the tree's primary key refused the
    second leaf (tlog_hashes_pkey). Either way the append fails instead of forking."""
    tenant = new_id("t")
    append_entries(database_url, tenant, [JAN], 2)
    insert = ("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, created_at, "
              "content_hash) VALUES (%s, %s, 'LimitUpdated', 'LIMIT', 'x', 'HUMAN', %s, %s)")
    with session(database_url, "aos_producer", tenant) as stale:
        stale.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        stale.execute("SELECT count(*) FROM audit_ledger WHERE tenant_id = %s", (tenant,))  # the snapshot
        append_entries(database_url, tenant, [JAN], 1)  # seq 3, committed after the snapshot
        with pytest.raises(psycopg.errors.SerializationFailure) as err:
            stale.execute(insert, (new_id("aud"), tenant, JAN + timedelta(minutes=5), b"\x02" * 32))
        assert "ledger_heads" in (err.value.diag.context or "")
        stale.execute("ROLLBACK")
    assert assert_tree_right(database_url, tenant) == 3


def trigger_plans(url: str, tenant: str, count: int) -> list[str]:
    """The plans of every statement the tree trigger runs on tlog_hashes while ``count`` entries
    of ``tenant`` are appended in one INSERT (auto_explain, nested statements, as the admin)."""
    with session(url) as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        for setting, value in (("auto_explain.log_min_duration", "0"), ("auto_explain.log_nested_statements", "on"),
                               ("client_min_messages", "log")):
            conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
        conn.execute(
            "INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, created_at, "
            "content_hash) SELECT %s || i, %s, 'LimitUpdated', 'LIMIT', 'x', 'HUMAN', %s, sha256(int8send(i)) "
            "FROM generate_series(1, %s) i", (new_id("aud") + "-", tenant, JAN, count))
        conn.execute("SELECT set_config('client_min_messages', 'notice', false)")
    return [n for n in notices if "tlog_hashes" in n.split("plan:", 1)[-1] and "Insert on" not in n]


def test_an_append_probes_the_tree_by_primary_key_whatever_the_statistics(database_url):
    """Migration 0018: statistics taken while a tenant's log was tiny must not make the trigger
    read the tenant's whole log. 0013's lookup, hash_index = ANY(...), was planned on PG 15 as
    a scan of (tenant_id, log) with the array as a filter: O(n) per append, bulk loads O(n²)."""
    tenant = new_id("t")
    append_entries(database_url, tenant, [JAN], 2)
    with session(database_url) as conn:
        conn.execute("ANALYZE tlog_hashes")  # this tenant: two leaves in the statistics
    plans = trigger_plans(database_url, tenant, 300)
    assert plans, "auto_explain showed none of the trigger's lookups"
    for plan in plans:
        body = plan.split("plan:", 1)[1]
        assert "Index Cond" in body and "hash_index =" in body.split("Index Cond", 1)[1], plan
        assert "Filter" not in body, plan
    assert assert_tree_right(database_url, tenant) == 302
