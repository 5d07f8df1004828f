"""The Logs store's totals: exact up to 10,000 matches, a flagged planner estimate above."""
import pytest
from sqlalchemy import create_engine, text

from aos_recording import bulk
from aos_runtime.db import sync_url
from services.logs import store

pytestmark = pytest.mark.db


def test_totals_are_exact_to_ten_thousand_then_a_flagged_estimate(database_url):
    bulk.load(database_url, bulk.Volume(tenants=1, ledger=12_000, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    engine = create_engine(sync_url(database_url), connect_args={"options": "-c role=aos_logs"})
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        everything = store.list_audit_entries(conn, tenant, store.AuditFilters(), None, 50)
        narrow = store.list_audit_entries(conn, tenant, store.AuditFilters(event_types=("LimitCreated",)), None, 50)
        exact = conn.execute(text("SELECT count(*) FROM audit_ledger WHERE event_type = 'LimitCreated'")).scalar()
    engine.dispose()
    assert everything.total_is_estimate and everything.total > 10_000 and everything.has_more
    assert not narrow.total_is_estimate and narrow.total == exact < 10_000
