"""Each tenant's stored export bytes in one row (migration 0035_export_stored_bytes): the
database keeps it equal to the sum of the tenant's log_exports.size_bytes — after one-row and
many-row statements, statements of several tenants, rollbacks, an owner's edit past the
append-only trigger, the backfill — and no service login can write it or read another
tenant's. (Concurrent CreateExports on real servers: tests/e2e/test_export_quotas.py.)"""
from __future__ import annotations

import psycopg
import pytest

from aos_runtime import migrate
from tests.db.sessions import make_tenant, new_id, session
from tests.logins import login_url

pytestmark = pytest.mark.db

SERVICE_ROLES = ("aos_overview", "aos_logs", "aos_export", "aos_producer", "aos_ingest", "aos_retention")
# One statement: a row per size, as the export role writes them (what the chain reads matters).
INSERT = ("INSERT INTO log_exports (id, tenant_id, scope, bundle_type, format, content_type, filename, size_bytes, "
          "checksum, manifest, dsse_envelope, signing_key_id, redaction, requested_by_type, requested_by_id, "
          "created_at, content_hash) "
          "SELECT %(prefix)s || n, %(tenant)s, 'AUDIT_SLICE', 'EVIDENCE', 'JSON', 'application/json', 'x.json', "
          "s.size, sha256(''::bytea), '{}', '{}', 'k', '{}', 'HUMAN', 'u', now(), "
          "sha256(convert_to(%(prefix)s || n, 'UTF8')) FROM unnest(%(sizes)s::bigint[]) WITH ORDINALITY s(size, n)")


@pytest.fixture(scope="module")
def url(databases):
    """A database of its own: a test here edits log_exports behind the append-only trigger."""
    return databases.create()


def add(conn: psycopg.Connection, tenant: str, sizes: list[int]) -> None:
    conn.execute(INSERT, {"prefix": new_id("exp") + "-", "tenant": tenant, "sizes": sizes})


def exports(url: str, tenant: str, sizes: list[int]) -> None:
    with session(url, "aos_export", tenant) as conn:
        add(conn, tenant, sizes)


def total(url: str, tenant: str) -> int | None:
    with session(url) as conn:
        row = conn.execute("SELECT stored_bytes FROM export_stored_bytes WHERE tenant_id = %s", (tenant,)).fetchone()
    return None if row is None else row[0]


def summed(url: str, tenant: str) -> int:
    with session(url) as conn:
        return conn.execute("SELECT coalesce(sum(size_bytes), 0) FROM log_exports WHERE tenant_id = %s",
                            (tenant,)).fetchone()[0]


def test_the_total_is_the_sum_after_one_row_and_many_row_statements(url):
    tenant = make_tenant(url)
    assert total(url, tenant) is None                         # no exports, no row: 0 bytes
    exports(url, tenant, [1234])
    assert total(url, tenant) == summed(url, tenant) == 1234
    exports(url, tenant, [0])                                 # an empty artifact still makes the row move (+0)
    exports(url, tenant, [10, 20, 30, 5_000_000_000])         # one INSERT … SELECT: one upsert
    assert total(url, tenant) == summed(url, tenant) == 1234 + 60 + 5_000_000_000
    with session(url, "aos_export", tenant) as conn, conn.transaction():  # many statements, one transaction
        for size in range(1, 51):
            add(conn, tenant, [size])
    assert total(url, tenant) == summed(url, tenant) == 1234 + 60 + 5_000_000_000 + 1275


def test_one_statement_of_several_tenants_adds_to_each(url):
    a, b = make_tenant(url), make_tenant(url)
    with session(url) as conn:  # the owner's bulk load: rows of two tenants in one statement
        conn.execute(
            "INSERT INTO log_exports (id, tenant_id, scope, bundle_type, format, content_type, filename, size_bytes, "
            "checksum, manifest, dsse_envelope, signing_key_id, redaction, requested_by_type, requested_by_id, "
            "created_at, content_hash) SELECT 'mix-' || t || n, t, 'AUDIT_SLICE', 'EVIDENCE', 'JSON', 'x', 'x', "
            "n * 100, sha256(''::bytea), '{}', '{}', 'k', '{}', 'HUMAN', 'u', now(), sha256(convert_to(t || n, 'UTF8')) "
            "FROM unnest(ARRAY[%s, %s]) t, generate_series(1, 5) n", (a, b))
    assert total(url, a) == total(url, b) == summed(url, a) == summed(url, b) == 1500


def test_a_rolled_back_export_or_savepoint_takes_its_bytes_back(url):
    tenant = make_tenant(url)
    exports(url, tenant, [100])
    with session(url, "aos_export", tenant) as conn:
        with conn.transaction():
            add(conn, tenant, [7])
            with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():  # a savepoint
                add(conn, tenant, [40, -1])
        with pytest.raises(RuntimeError), conn.transaction():
            add(conn, tenant, [9000])
            raise RuntimeError("roll back")
    assert total(url, tenant) == summed(url, tenant) == 107


@pytest.mark.parametrize("role", SERVICE_ROLES)
def test_no_service_role_writes_the_total(url, role):
    tenant = make_tenant(url)
    exports(url, tenant, [500])
    for statement in ("UPDATE export_stored_bytes SET stored_bytes = 0",
                      "DELETE FROM export_stored_bytes",
                      "TRUNCATE export_stored_bytes",
                      f"INSERT INTO export_stored_bytes VALUES ('{make_tenant(url)}', 0)"):
        with session(url, role, tenant) as conn, pytest.raises(psycopg.Error) as err:
            conn.execute(statement)
        assert err.value.sqlstate == "42501", statement  # insufficient privilege
    assert total(url, tenant) == 500


def test_the_export_services_login_cannot_cheat_its_quota(url):
    """As the Export service's own login (not SET ROLE from the admin), in its tenant's session:
    it reads its total, and every way to lower it is refused."""
    tenant = make_tenant(url)
    exports(url, tenant, [2048])
    with psycopg.connect(login_url(url, "export"), autocommit=True) as conn:
        conn.execute("SELECT set_config('aos.tenant_id', %s, false)", (tenant,))
        assert conn.execute("SELECT stored_bytes FROM export_stored_bytes").fetchall() == [(2048,)]
        for statement in (f"UPDATE export_stored_bytes SET stored_bytes = 0 WHERE tenant_id = '{tenant}'",
                          f"DELETE FROM export_stored_bytes WHERE tenant_id = '{tenant}'",
                          "TRUNCATE export_stored_bytes",
                          f"INSERT INTO export_stored_bytes VALUES ('{tenant}', 0) ON CONFLICT (tenant_id) "
                          "DO UPDATE SET stored_bytes = 0",
                          "ALTER TABLE log_exports DISABLE TRIGGER log_exports_stored_bytes",
                          "SET session_replication_role = replica",
                          "SELECT aos_count_export_bytes()"):
            with pytest.raises(psycopg.Error) as err:
                conn.execute(statement)
            assert err.value.sqlstate in ("42501", "0A000"), (statement, err.value.sqlstate)
    assert total(url, tenant) == summed(url, tenant) == 2048


def test_a_tenant_reads_its_own_total_only_and_the_owner_cannot_delete_it(url):
    a, b = make_tenant(url), make_tenant(url)
    exports(url, a, [11])
    exports(url, b, [22])
    with session(url, "aos_export", a) as conn:
        assert conn.execute("SELECT tenant_id, stored_bytes FROM export_stored_bytes").fetchall() == [(a, 11)]
        # b's row is not there for a: an UPDATE would find nothing even with the privilege
        assert conn.execute("SELECT count(*) FROM export_stored_bytes WHERE tenant_id = %s", (b,)).fetchone()[0] == 0
    with session(url, "aos_export") as conn:  # no tenant: nothing
        assert conn.execute("SELECT count(*) FROM export_stored_bytes").fetchone()[0] == 0
    for statement in (f"DELETE FROM export_stored_bytes WHERE tenant_id = '{a}'", "TRUNCATE export_stored_bytes"):
        with session(url, "aos_owner") as conn, pytest.raises(psycopg.Error) as err:
            conn.execute(statement)
        assert err.value.sqlstate == "AOS01", statement
    assert (total(url, a), total(url, b)) == (11, 22)


def test_an_edit_past_the_append_only_trigger_moves_the_total_too(url):
    tenant = make_tenant(url)
    exports(url, tenant, [100, 200, 300])
    with psycopg.connect(url) as conn:  # the owner, in one transaction that puts the trigger back
        conn.execute("ALTER TABLE log_exports DISABLE TRIGGER log_exports_append_only")
        conn.execute("UPDATE log_exports SET size_bytes = size_bytes + 1 WHERE tenant_id = %s AND seq = 1", (tenant,))
        conn.execute("UPDATE log_exports SET manifest = '{\"x\": 1}' WHERE tenant_id = %s", (tenant,))  # no size
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the artifacts' deferred key checks: now, not pending
        conn.execute("DELETE FROM log_exports WHERE tenant_id = %s AND seq = 3", (tenant,))
        conn.execute("ALTER TABLE log_exports ENABLE ALWAYS TRIGGER log_exports_append_only")
    assert total(url, tenant) == summed(url, tenant) == 301


def test_migration_backfills_every_tenants_total_and_downgrades(databases):
    url = databases.create(migrated=False)
    migrate.upgrade(url, "0034_payload_search")
    a, b, empty = make_tenant(url), make_tenant(url), make_tenant(url)
    exports(url, a, [1, 2, 3])
    exports(url, b, [1000])
    migrate.upgrade(url)
    assert (total(url, a), total(url, b), total(url, empty)) == (6, 1000, None)
    exports(url, empty, [5])
    assert total(url, empty) == 5
    migrate.downgrade(url, "0034_payload_search")
    exports(url, a, [10])  # no trigger now: the next upgrade's backfill counts it
    migrate.upgrade(url)
    assert [total(url, t) for t in (a, b, empty)] == [summed(url, t) for t in (a, b, empty)] == [16, 1000, 5]
    with session(url) as conn:  # the chain went on across the migrations
        assert [r[0] for r in conn.execute("SELECT seq FROM log_exports WHERE tenant_id = %s ORDER BY seq",
                                           (a,))] == [1, 2, 3, 4]
