"""Per-tenant export quotas: how many exports an hour, and how many artifact bytes stored.

The database is the truth, so every instance of the service agrees: the rate is a sliding
window over the tenant's log_exports rows (their created_at, the database's clock), the
stored bytes the sum of their size_bytes (a running total the database keeps per tenant,
migration 0035: one row read, whatever the tenant's exports). ``builder.create`` checks twice: before rendering
(a refused call costs no work) and again under the tenant's export chain lock with the
artifact's real size (so concurrent calls on any instances cannot together pass a limit).
An idempotent replay never gets here: it is answered from its recorded export.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from aos_runtime import faults
from services.export import store

WINDOW_S = 3600  # the rate's window: AOS_EXPORT_RATE_PER_HOUR


@dataclass(frozen=True)
class Limits:
    rate_per_hour: int = 0        # AOS_EXPORT_RATE_PER_HOUR; 0: no limit
    stored_bytes: int = 0         # AOS_EXPORT_STORED_BYTES_PER_TENANT; 0: no limit


NONE = Limits()


def check(conn: Connection, tenant: str, limits: Limits, adding_bytes: int = 0) -> None:
    """Raises faults.ExportRateLimited or ExportStorageQuota when one more export of ``adding_bytes`` (before
    rendering: at least one byte) would pass a limit of ``tenant``."""
    if limits.rate_per_hour:
        window = store.export_rate_window(conn, tenant, limits.rate_per_hour, WINDOW_S)
        if window["frees_in_s"] is not None:
            wait = max(float(window["frees_in_s"]), 0.001)
            raise faults.ExportRateLimited(
                f"the tenant made {window['made']} exports in the last hour, the most it may "
                f"(AOS_EXPORT_RATE_PER_HOUR={limits.rate_per_hour}); the next one can start in {wait:.0f} s",
                subject=f"tenant:{tenant}", description=f"at most {limits.rate_per_hour} exports per hour",
                retry_after_s=wait,
                metadata={"limit": str(limits.rate_per_hour), "window_s": str(WINDOW_S),
                          "retry_after_s": f"{wait:.3f}"})
    if limits.stored_bytes:
        stored = store.stored_artifact_bytes(conn, tenant)
        needed = max(adding_bytes, 1)
        if stored + needed > limits.stored_bytes:
            raise faults.ExportStorageQuota(
                f"the tenant's stored export artifacts take {stored:,} bytes; "
                + (f"this export's {adding_bytes:,} bytes would pass " if adding_bytes else "that reaches ")
                + f"the quota of {limits.stored_bytes:,} (AOS_EXPORT_STORED_BYTES_PER_TENANT)",
                subject=f"tenant:{tenant}", description=f"at most {limits.stored_bytes} bytes of stored exports",
                metadata={"limit": str(limits.stored_bytes), "stored": str(stored), "needed": str(needed)})
