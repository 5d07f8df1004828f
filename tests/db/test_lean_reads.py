"""The verifier's and the export's reads through psycopg directly (issue #22: iter_ledger_rows'
binary tuples, an audit slice's streamed tuples) give the values, of the same types, that the
SQLAlchemy reads give; under the reader's tenant scope only; with statements run between batches;
and through SQLAlchemy when something listens to the engine's statements."""
from __future__ import annotations

import pytest
from sqlalchemy import event, text

from aos_evidence.queries import AuditFilters
from aos_recording import bulk, hashing, store
from aos_recording.writers import Producer
from services.export import store as export_store
from tests.logins import login_url

pytestmark = pytest.mark.db


def _typed(values):
    return [(type(v), v) for v in values]


def test_ledger_rows_and_slice_rows_equal_the_sqlalchemy_reads(databases, monkeypatch):
    monkeypatch.setattr(export_store, "STREAM_BATCH", 7)  # several server-side batches
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=2, ledger=90, traces=0, steps=0, system=0))
    tenant, other = bulk.tenant_ids(2)
    producer = Producer(login_url(url, "producer"), pool_size=1)
    try:
        with producer.transaction(tenant) as conn:
            mapped = list(store.iter_ledger(conn, tenant))
            assert len(mapped) == 45 and any(m["after_state"] for m in mapped)
            rows = [row for batch in store.iter_ledger_rows(conn, tenant, batch=7) for row in batch]
            assert [_typed(r) for r in rows] == [_typed(m[c] for c in hashing.LEDGER_ROW_COLUMNS) for m in mapped]
            ranged = [row for batch in store.iter_ledger_rows(conn, tenant, from_seq=8, to_seq=21, batch=7)
                      for row in batch]
            assert [r[0] for r in ranged] == list(range(8, 22))
            assert all(hashing.ledger_row_content_hash(r) == bytes(r[1]) for r in rows)
            # Another tenant's rows under this tenant's scope: none (row-level security).
            assert [r for batch in store.iter_ledger_rows(conn, other) for r in batch] == []

            everything = [dict(r) for r in conn.execute(text(
                f"SELECT {', '.join(hashing.LEDGER_ROW_COLUMNS)} FROM audit_ledger a WHERE a.tenant_id = :t "
                "AND a.seq <= 40 ORDER BY a.seq"), {"t": tenant}).mappings()]
            streamed = []
            for batch in export_store.audit_slice(conn, tenant, AuditFilters(), 40):
                assert len(batch) <= 7
                streamed += batch  # the export writes its chunks between the cursor's batches
                assert conn.execute(text("SELECT count(*) FROM audit_ledger")).scalar() == 45
            assert [_typed(r) for r in streamed] == [_typed(r.values()) for r in everything]
            assert [r for batch in export_store.audit_slice(conn, other, AuditFilters(), 40) for r in batch] == []

            # When the engine's statements are observed (tracing), the same through SQLAlchemy.
            seen: list[str] = []

            def listen(conn_, cursor, statement, *rest):
                seen.append(statement)

            event.listen(conn.engine, "before_cursor_execute", listen)
            try:
                observed = [row for batch in store.iter_ledger_rows(conn, tenant, batch=7) for row in batch]
                observed_slice = [r for batch in export_store.audit_slice(conn, tenant, AuditFilters(), 40)
                                  for r in batch]
            finally:
                event.remove(conn.engine, "before_cursor_execute", listen)
            assert seen and observed == rows
            assert observed_slice == [tuple(r.values()) for r in everything]
    finally:
        producer.close()
