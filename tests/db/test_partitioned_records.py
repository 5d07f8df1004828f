"""system_records and aos_trace_steps partitioned by month (migration 0009) keep their
guarantees — an id, a trace's step_index recorded once, append-only, row-level security —
and retention drops their months only after the ledger's, steps as whole finished traces."""
from __future__ import annotations

from datetime import date, datetime, timezone

import psycopg
import pytest

from aos_recording import hashing, retention
from aos_recording.writers import EvidenceConflict, Producer, SystemRecordWriter, TraceRecorder
from aos_runtime import migrate
from tests.db.sessions import append_entries, session
from tests.logins import login_url

pytestmark = pytest.mark.db

TABLES = ("system_records", "aos_trace_steps")
SERVICE_ROLES = ("aos_overview", "aos_logs", "aos_export", "aos_producer")
JAN, FEB = datetime(2025, 1, 10, tzinfo=timezone.utc), datetime(2025, 2, 10, tzinfo=timezone.utc)


def system_record(conn, tenant: str | None, record_id: str, created_at: datetime, summary: str = "boom") -> str:
    return SystemRecordWriter(conn).write(tenant_id=tenant, component="api", event_type="ERROR", severity="ERROR",
                                          summary=summary, created_at=created_at, record_id=record_id)


def step(url: str, tenant: str, trace: str, index: int, created_at: datetime, data: str = "x"):
    """A step written as a producer would, with its created_at (the partition key) given."""
    fields = {"step_index": index, "step_type": "llm_call", "input_data": {"d": data}, "output_data": None,
              "timestamp": created_at}
    with session(url, "aos_producer", tenant) as conn:
        return conn.execute(
            "INSERT INTO aos_trace_steps (id, trace_id, tenant_id, step_index, step_type, source, \"timestamp\", "
            "input_data, content_hash, created_at) VALUES (%s, %s, %s, %s, 'llm_call', 'agent', %s, %s, %s, %s) "
            "RETURNING id", (f"{trace}-{index}-{data}", trace, tenant, index, created_at, f'{{"d": "{data}"}}',
                             hashing.step_content_hash(fields), created_at)).fetchone()


def system_wide_record(url: str, record_id: str, created_at: datetime) -> None:
    """A system-wide record as the schema before migration 0011 held one: a system_records
    row without a tenant (the writer now writes platform_records)."""
    record = {"id": record_id, "tenant_id": None, "component": "api", "event_type": "ERROR", "severity": "ERROR",
              "summary": "boom", "details": None, "caused_by": "SYSTEM", "actor_id": None, "correlation_id": None,
              "run_id": None, "environment_id": None, "created_at": created_at}
    with session(url, "aos_producer") as conn:
        conn.execute("INSERT INTO system_records (id, component, event_type, severity, summary, created_at, "
                     "content_hash) VALUES (%s, 'api', 'ERROR', 'ERROR', 'boom', %s, %s)",
                     (record_id, created_at, hashing.system_record_content_hash(record)))


def placement(url: str, table: str) -> dict[str, str]:
    with session(url) as conn:
        return dict(conn.execute(f"SELECT id, tableoid::regclass::text FROM {table}").fetchall())


def rows(url: str, table: str) -> list[tuple]:
    with session(url) as conn:
        return conn.execute(f"SELECT id, created_at, content_hash, recorded_at FROM {table} ORDER BY id").fetchall()


def traces(url: str, tenant: str, spec: dict[str, list[datetime]], complete: set[str]) -> None:
    producer = Producer(login_url(url, "producer"))
    try:
        with producer.transaction(tenant) as conn:
            for trace in spec:
                TraceRecorder(conn).create_trace(tenant_id=tenant, run_id=f"run-{trace}", trace_id=trace,
                                                 started_at=spec[trace][0])
        for trace, months in spec.items():
            for i, month in enumerate(months):
                step(url, tenant, trace, i, month)
        with producer.transaction(tenant) as conn:
            for trace in complete:
                TraceRecorder(conn).complete_trace(trace_id=trace, completed_at=spec[trace][-1])
    finally:
        producer.close()


@pytest.fixture(scope="module")
def records(databases):
    """A database that held a tenant's ledger entries, system records (its own and a
    system-wide one) and three traces' steps in January and February 2025 when migration
    0009 converted the two tables to monthly partitions (what 0009 made is kept as
    ``converted``); then upgraded to head (0011 moves the system-wide record apart)."""
    url = databases.create(migrated=False)
    migrate.upgrade(url, "0007_tenant_keyed_schema")
    tenant = "tenant-r"
    append_entries(url, tenant, [JAN, FEB], 2)
    migrate.upgrade(url, "0008_partitioned_audit_ledger")  # the ledger's months: January and February
    producer = Producer(login_url(url, "producer"))
    try:
        with producer.transaction(tenant) as conn:
            system_record(conn, tenant, "sys-jan", JAN)
            system_record(conn, tenant, "sys-feb", FEB)
    finally:
        producer.close()
    system_wide_record(url, "sys-global-jan", JAN)
    # done: finished in January; running: still running; straddling: finished, steps in both months
    traces(url, tenant, {"tr-done": [JAN, JAN], "tr-running": [JAN], "tr-straddling": [JAN, FEB]},
           complete={"tr-done", "tr-straddling"})
    before = {table: rows(url, table) for table in TABLES}
    migrate.upgrade(url, "0009_partitioned_records_steps")
    converted = {table: (rows(url, table), placement(url, table)) for table in TABLES}
    migrate.upgrade(url)
    return url, tenant, before, converted


def test_conversion_keeps_every_row_and_routes_it_by_month(records):
    url, _, before, converted = records
    for table in TABLES:
        kept, placed = converted[table]
        assert kept == before[table]
        assert {part for part in placed.values()} == {f"{table}_p2025_01", f"{table}_p2025_02"}
    assert converted["aos_trace_steps"][1]["tr-straddling-1-x"] == "aos_trace_steps_p2025_02"
    with session(url) as conn:
        for table in TABLES:
            assert conn.execute("SELECT relkind FROM pg_class WHERE relname = %s", (table,)).fetchone()[0] == "p"


def test_system_wide_records_move_apart_as_they_were(records):
    # Migration 0011: ids, content hashes and recorded_at unchanged.
    url, _, before, _ = records
    assert rows(url, "platform_records") == [r for r in before["system_records"] if r[0] == "sys-global-jan"]
    assert rows(url, "system_records") == [r for r in before["system_records"] if r[0] != "sys-global-jan"]


def test_every_trigger_fires_always_and_partitions_are_append_only(records):
    url, tenant, *_ = records
    with session(url) as conn:
        modes = conn.execute(
            "SELECT DISTINCT tgenabled FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN "
            "(SELECT %s::regclass UNION ALL SELECT %s::regclass UNION ALL SELECT inhrelid FROM pg_inherits "
            " WHERE inhparent IN (%s::regclass, %s::regclass))", TABLES * 2).fetchall()
    assert modes == [("A",)]
    for table in TABLES:
        for statement in (f"UPDATE {table} SET created_at = created_at", f"DELETE FROM {table}",
                          f"TRUNCATE {table}_p2025_01"):
            with session(url) as conn, pytest.raises(psycopg.Error) as err:  # even the owner's session
                conn.execute(statement)
            assert err.value.sqlstate == "AOS01", statement


def test_row_level_security_on_the_partitioned_tables(records):
    url, tenant, *_ = records
    with session(url, "aos_logs", "someone-else") as conn:
        assert conn.execute("SELECT count(*) FROM system_records").fetchone()[0] == 0
        assert conn.execute("SELECT id FROM platform_records").fetchall() == [("sys-global-jan",)]
        assert conn.execute("SELECT count(*) FROM aos_trace_steps").fetchone()[0] == 0
    with session(url, "aos_logs", tenant) as conn:
        assert conn.execute("SELECT count(*) FROM system_records").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM aos_trace_steps").fetchone()[0] == 5


def test_a_system_record_id_is_recorded_once_across_partitions(records):
    url, tenant, *_ = records
    producer = Producer(login_url(url, "producer"))
    try:
        with producer.transaction(tenant) as conn:
            assert system_record(conn, tenant, "sys-jan", JAN) == "sys-jan"  # the retry: a no-op
            with pytest.raises(EvidenceConflict):
                system_record(conn, tenant, "sys-jan", JAN, summary="rewritten")
            with pytest.raises(EvidenceConflict):  # the same id in another month: another partition
                system_record(conn, tenant, "sys-jan", FEB)
            system_record(conn, tenant, "sys-after-refusals", FEB)  # the transaction stays usable
    finally:
        producer.close()
    with session(url) as conn:
        assert conn.execute("SELECT count(*) FROM system_records WHERE id = 'sys-jan'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM system_records WHERE id = 'sys-after-refusals'").fetchone()[0] == 1


def test_a_traces_step_index_is_recorded_once_across_partitions(records):
    url, tenant, *_ = records
    traces(url, tenant, {"tr-unique": [JAN]}, complete=set())
    assert step(url, tenant, "tr-unique", 0, JAN) is None  # the same step again: skipped
    with pytest.raises(psycopg.errors.UniqueViolation):
        step(url, tenant, "tr-unique", 0, FEB, data="other")  # another month's partition
    producer = Producer(login_url(url, "producer"))
    try:
        with producer.transaction(tenant) as conn:
            recorder = TraceRecorder(conn)
            with pytest.raises(EvidenceConflict):
                recorder.add_step(tenant_id=tenant, trace_id="tr-unique", step_index=0, step_type="input",
                                  timestamp=JAN, input_data={"d": "forged"})
            recorder.complete_trace(trace_id="tr-unique", completed_at=JAN)  # the transaction stays usable
    finally:
        producer.close()
    with session(url) as conn:
        assert conn.execute("SELECT step_count FROM aos_traces WHERE trace_id = 'tr-unique'").fetchone()[0] == 1


@pytest.mark.parametrize("role", SERVICE_ROLES)
def test_service_roles_cannot_run_retention(records, role):
    url, *_ = records
    for call in ("aos_drop_partitions('system_records', now())",
                 "aos_ensure_partitions('aos_trace_steps', now(), now())"):
        with session(url, role) as conn, pytest.raises(psycopg.Error) as err:
            conn.execute(f"SELECT {call}")
        assert err.value.sqlstate == "42501"


def test_retention_drops_records_and_steps_only_after_the_ledger(records):
    url, tenant, *_ = records
    with session(url) as conn:
        with pytest.raises(psycopg.Error) as err:
            retention.drop_partitions_before(conn, date(2025, 2, 1), "system_records")
        assert err.value.sqlstate == "AOS02" and "audit ledger still holds entries" in str(err.value)
        retention.record_checkpoints(conn)
        assert retention.drop_partitions_before(conn, date(2025, 2, 1)) == ["audit_ledger_p2025_01"]
        assert retention.drop_partitions_before(conn, date(2025, 2, 1), "system_records") == [
            "system_records_p2025_01"]
        left = [r[0] for r in conn.execute("SELECT id FROM system_records WHERE created_at < '2025-03-01' ORDER BY 1")]
        assert left == ["sys-after-refusals", "sys-feb"]
        # steps: a running trace's January step keeps January
        with pytest.raises(psycopg.Error) as err:
            retention.drop_partitions_before(conn, date(2025, 2, 1), "aos_trace_steps")
        assert err.value.sqlstate == "AOS02" and "tr-running" in str(err.value)
    traces_done = Producer(login_url(url, "producer"))
    try:
        with traces_done.transaction(tenant) as conn:
            TraceRecorder(conn).complete_trace(trace_id="tr-running", completed_at=JAN)
    finally:
        traces_done.close()
    with session(url) as conn:
        # a finished trace whose steps reach into February keeps January too
        with pytest.raises(psycopg.Error) as err:
            retention.drop_partitions_before(conn, date(2025, 2, 1), "aos_trace_steps")
        assert err.value.sqlstate == "AOS02" and "tr-straddling" in str(err.value)
        assert conn.execute("SELECT count(*) FROM aos_trace_steps").fetchone()[0] > 0
        retention.record_checkpoints(conn)
        assert retention.drop_partitions_before(conn, date(2025, 3, 1)) == ["audit_ledger_p2025_02"]
        assert retention.drop_partitions_before(conn, date(2025, 3, 1), "aos_trace_steps") == [
            "aos_trace_steps_p2025_01", "aos_trace_steps_p2025_02"]
        assert conn.execute("SELECT count(*) FROM aos_trace_steps").fetchone()[0] == 0
        # the ledger is not dropped this way
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT aos_drop_partitions('audit_ledger', now())")
        assert err.value.sqlstate == "22023"


def test_ensure_creates_months_of_every_partitioned_table(records):
    url, *_ = records
    with session(url) as conn:
        created = retention.ensure_partitions(conn, first=date(2032, 1, 1), through=date(2032, 1, 1))
        assert created == ["audit_ledger_p2032_01", "system_records_p2032_01", "aos_trace_steps_p2032_01"]
        assert retention.ensure_partitions(conn, first=date(2032, 1, 1), through=date(2032, 1, 1)) == []


def test_migration_down_and_up_keeps_every_row(databases):
    url = databases.create(migrated=False)
    migrate.upgrade(url, "0008_partitioned_audit_ledger")
    tenant = "tenant-d"
    append_entries(url, tenant, [JAN], 1)
    traces(url, tenant, {"tr-1": [JAN, FEB]}, complete=set())
    producer = Producer(login_url(url, "producer"))
    try:
        with producer.transaction(tenant) as conn:
            system_record(conn, tenant, "sys-1", JAN)
    finally:
        producer.close()
    system_wide_record(url, "sys-global-1", FEB)  # moved apart by 0011, back by its downgrade
    before = {table: rows(url, table) for table in TABLES}
    migrate.upgrade(url)
    migrate.downgrade(url, "0008_partitioned_audit_ledger")
    assert {table: rows(url, table) for table in TABLES} == before
    with session(url) as conn:
        assert {r[0] for r in conn.execute("SELECT relkind FROM pg_class WHERE relname = ANY(%s)",
                                           (list(TABLES),))} == {"r"}
    # the unique key is back: a taken step_index is refused by it
    with pytest.raises(psycopg.errors.UniqueViolation) as err:
        step(url, tenant, "tr-1", 0, FEB, data="other")
    assert err.value.diag.constraint_name == "aos_trace_steps_tenant_id_trace_id_step_index_key"
    migrate.upgrade(url)
    assert rows(url, "aos_trace_steps") == before["aos_trace_steps"]
    assert sorted(rows(url, "system_records") + rows(url, "platform_records")) == before["system_records"]
    assert rows(url, "platform_records") == [r for r in before["system_records"] if r[0] == "sys-global-1"]
