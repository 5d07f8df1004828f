"""Sessions for the database tests: a raw psycopg session as a role and tenant (for tests that
probe the schema itself), and a verification of a tenant's ledger through the producer."""
from __future__ import annotations

import contextlib

import psycopg

from aos_recording import verify
from aos_recording.writers import Producer


@contextlib.contextmanager
def session(url: str, role: str | None = None, tenant: str | None = None):
    """A connection acting as ``role`` for ``tenant`` (None: no tenant set)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if role:
            conn.execute(f"SET ROLE {role}")
        if tenant is not None:
            conn.execute("SELECT set_config('aos.tenant_id', %s, false)", (tenant,))
        yield conn


def ledger_report(url: str, tenant: str, **kw) -> verify.ChainReport:
    """``verify_ledger`` of ``tenant``'s chain, in a producer transaction of its own."""
    producer = Producer(url)
    try:
        with producer.transaction(tenant) as conn:
            return verify.verify_ledger(conn, tenant, **kw)
    finally:
        producer.close()
