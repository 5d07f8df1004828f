"""Migration 0016: kept C2SP checkpoints and witness cosignatures are append-only, per tenant,
written only by the Export role; a cosignature needs a kept checkpoint; the publisher's
function lists only the logs that grew past their newest kept checkpoint."""
from __future__ import annotations

from datetime import datetime, timezone

import psycopg
import pytest

from tests.db.sessions import append_entries, new_id, session

pytestmark = pytest.mark.db

JAN = datetime(2026, 1, 1, tzinfo=timezone.utc)
BODY = "o\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
LINE = "— w AAAA\n"


def keep(conn, tenant: str, size: int = 3) -> None:
    conn.execute("INSERT INTO checkpoint_notes (tenant_id, log, tree_size, root_hash, body, note, key_id) "
                 "VALUES (%s, 'ledger', %s, %s, %s, %s, 'abcd0123')",
                 (tenant, size, b"\x00" * 32, BODY, BODY + "\n— o sig\n"))


def cosign(conn, tenant: str, size: int = 3, name: str = "w") -> None:
    conn.execute("INSERT INTO checkpoint_cosignatures (tenant_id, log, tree_size, witness_name, witness_key_id, "
                 "cosigned_at, line) VALUES (%s, 'ledger', %s, %s, %s, 1, %s)", (tenant, size, name, b"\x01" * 4, LINE))


def test_the_export_role_keeps_checkpoints_and_cosignatures_append_only(database_url):
    tenant = new_id("t")
    with session(database_url, "aos_export", tenant) as conn:
        keep(conn, tenant)
        cosign(conn, tenant)
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            cosign(conn, tenant, size=4, name="w2")  # no checkpoint kept at size 4
        with pytest.raises(psycopg.errors.UniqueViolation):
            cosign(conn, tenant)
        for sql in ("UPDATE checkpoint_notes SET note = note WHERE tenant_id = %s",
                    "DELETE FROM checkpoint_cosignatures WHERE tenant_id = %s"):
            with pytest.raises(psycopg.Error):
                conn.execute(sql, (tenant,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("TRUNCATE checkpoint_notes")
        # another tenant's row cannot be written under this tenant
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            keep(conn, new_id("t"))
    with session(database_url) as conn:  # not even the owner, replica role or not
        conn.execute("SET session_replication_role = replica")
        with pytest.raises(psycopg.Error) as err:
            conn.execute("DELETE FROM checkpoint_notes WHERE tenant_id = %s", (tenant,))
        assert err.value.sqlstate == "AOS01"


@pytest.mark.parametrize("role", ["aos_logs", "aos_producer", "aos_overview"])
def test_no_other_role_writes_them(database_url, role):
    tenant = new_id("t")
    with session(database_url, role, tenant) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            keep(conn, tenant)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM aos_tlog_unpublished()")


def test_another_tenant_sees_none_of_them(database_url):
    mine, other = new_id("t"), new_id("t")
    with session(database_url, "aos_export", mine) as conn:
        keep(conn, mine)
        cosign(conn, mine)
    for role in ("aos_logs", "aos_export"):
        with session(database_url, role, other) as conn:
            assert conn.execute("SELECT count(*) FROM checkpoint_notes").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM checkpoint_cosignatures").fetchone()[0] == 0
        with session(database_url, role, mine) as conn:
            assert conn.execute("SELECT count(*) FROM checkpoint_cosignatures").fetchone()[0] == 1


def test_the_publisher_sees_only_logs_that_grew(database_url):
    tenant = new_id("t")
    append_entries(database_url, tenant, [JAN], 3)

    def unpublished() -> dict:
        with session(database_url, "aos_export") as conn:
            return {(t, log): size for t, log, size in conn.execute("SELECT * FROM aos_tlog_unpublished()")}

    assert unpublished()[(tenant, "ledger")] == 3
    with session(database_url, "aos_export", tenant) as conn:
        keep(conn, tenant, 3)
    assert (tenant, "ledger") not in unpublished()
    append_entries(database_url, tenant, [JAN], 2)
    assert unpublished()[(tenant, "ledger")] == 5
