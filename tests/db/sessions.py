"""Sessions for the database tests: a raw psycopg session as a role and tenant (for tests that
probe the schema itself), ledger entries appended and verified through the producer."""
from __future__ import annotations

import contextlib
import hashlib
import uuid
from datetime import datetime, timedelta

import psycopg

from aos_recording import verify
from aos_recording.sources import SourceWriter
from aos_recording.writers import AuditLedgerWriter, Producer
from tests.logins import login_url


@contextlib.contextmanager
def session(url: str, role: str | None = None, tenant: str | None = None):
    """A connection acting as ``role`` for ``tenant`` (None: no tenant set)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if role:
            conn.execute(f"SET ROLE {role}")
        if tenant is not None:
            conn.execute("SELECT set_config('aos.tenant_id', %s, false)", (tenant,))
        yield conn


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def make_tenant(url: str) -> str:
    """A new tenant row, made by the producer role: its id."""
    tenant = new_id("t")
    with session(url, "aos_producer", tenant) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant, f"Tenant {tenant}"))
    return tenant


def ledger_report(url: str, tenant: str, **kw) -> verify.ChainReport:
    """``verify_ledger`` of ``tenant``'s chain, in a producer transaction of its own."""
    producer = Producer(login_url(url, "producer"))
    try:
        with producer.transaction(tenant) as conn:
            return verify.verify_ledger(conn, tenant, **kw)
    finally:
        producer.close()


def append_entries(url: str, tenant: str, months: list[datetime], per_month: int) -> list:
    """``per_month`` ledger entries of ``tenant`` created in each of ``months`` (the tenant
    made first if new), through the producer: the chain trigger assigns seq and hashes."""
    producer = Producer(login_url(url, "producer"))
    try:
        with producer.transaction(tenant) as conn:
            SourceWriter(conn).ensure_tenant(tenant_id=tenant, name=tenant, created_at=months[0] - timedelta(days=30))
            writer = AuditLedgerWriter(conn)
            return [writer.append(tenant_id=tenant, event_type="LimitUpdated", entity_type="LIMIT",
                                  entity_id="lim-1", actor_type="HUMAN", actor_id="user-1",
                                  after_state={"max_value": i}, created_at=month + timedelta(hours=i))
                    for month in months for i in range(per_month)]
    finally:
        producer.close()


def export_rows(database_url: str, tenant: str, count: int) -> list[tuple[str, bytes]]:
    """``count`` log_exports rows as the export role writes them (only what the chain and the
    tree read matters): (export id, content hash) in seq order."""
    made = []
    with session(database_url, "aos_export", tenant) as conn:
        for i in range(count):
            export_id, content = new_id("exp"), hashlib.sha256(f"{tenant}/{i}".encode()).digest()
            conn.execute(
                "INSERT INTO log_exports (id, tenant_id, scope, bundle_type, format, content_type, filename, "
                "size_bytes, checksum, manifest, dsse_envelope, signing_key_id, redaction, requested_by_type, "
                "requested_by_id, created_at, content_hash) VALUES (%s, %s, 'AUDIT_SLICE', 'EVIDENCE', 'JSON', "
                "'application/json', 'x.json', 0, %s, '{}', '{}', 'k', '{}', 'HUMAN', 'u', now(), %s)",
                (export_id, tenant, hashlib.sha256(b"").digest(), content))
            made.append((export_id, content))
    return made
