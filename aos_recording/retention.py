"""Retention of the evidence: monthly partitions, checkpoints, drops of checkpointed chain beginnings.

Migration 0008 partitions ``audit_ledger`` by month and creates ``ledger_checkpoints``
and the owner-only functions this module calls; migration 0009 partitions
``system_records`` and ``aos_trace_steps`` the same way, their months dropped only
after the ledger's (as whole finished traces for steps). The system-wide records
(``platform_records``, migration 0011) are few, unpartitioned and kept. This module is the
maintenance path's store (its SQL lives here, as the services' lives in their stores)
and its command.

Decisions (docs/SCALE.md gives the measurements behind them):

- Key: ``created_at``, by month (UTC). The lists page on ``(created_at DESC, id DESC)``
  and filter by created_at, so they read the newest partitions first and stop; the
  chain's own order (seq) is not a time. ``recorded_at`` cannot be the key: the
  database stamps it in a BEFORE trigger, which runs after the row was routed to a
  partition, and a trigger may not move a row to another one.
- A backdated entry lands in an old partition (or the default one) with a new seq.
  So the gate below is about the chain, not the calendar: a set of partitions is
  dropped only if, for every tenant, it holds exactly the beginning of the tenant's
  chain (no kept entry has a lower seq than a dropped one) and a recorded checkpoint
  at or after its last entry still matches the ledger. The chain hash of the last
  dropped entry is recorded first (a RETENTION_ANCHOR in ``ledger_checkpoints``):
  verification then starts there (``verify.verify_ledger(anchor=...)``).
- Uniqueness: a partitioned table enforces only keys that contain the partition key,
  so ``(tenant_id, seq)`` is unique per partition; across partitions the chain
  trigger's per-tenant lock is what keeps seq unique (it always did assign it).
- Who may drop: ``aos_drop_ledger_partitions`` and ``aos_ensure_ledger_partitions`` run
  as the owner (SECURITY DEFINER) and EXECUTE is revoked from PUBLIC: the migration
  user (maintenance) calls them, no service role can. Service roles cannot DROP,
  DETACH or TRUNCATE a partition either (they own nothing and hold no privilege on
  the partitions).
- Who creates partitions: this module's ``ensure`` command, run by deploy/cron
  (monthly is enough, it creates months ahead); a default partition catches any row
  no month takes, so a missed run never refuses evidence.

    python -m aos_recording.retention checkpoint              # record each tenant's chain head
    python -m aos_recording.retention ensure --ahead 3         # this month and 3 ahead
    python -m aos_recording.retention drop --before 2026-01    # whole months before, if covered
                                                               # (the ledger's, then the others')
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from datetime import date, datetime, timezone

import psycopg

from aos_recording.verify import Checkpoint


def _month(value: date | datetime) -> datetime:
    return datetime(value.year, value.month, 1, tzinfo=timezone.utc)


# Partitioned by month of created_at (migrations 0008, 0009); the ledger's retention
# is gated by checkpoints, the two others' by the ledger's.
LEDGER = "audit_ledger"
FOLLOWERS = ("system_records", "aos_trace_steps")


def partitions(conn: psycopg.Connection, table: str = LEDGER) -> list[tuple[str, int]]:
    """A partitioned table's partitions and their row estimates, oldest first (default last)."""
    return [(name, int(rows)) for name, rows in conn.execute(
        "SELECT c.relname, greatest(c.reltuples, 0) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass ORDER BY c.relname = %s, c.relname", (table, f"{table}_default"))]


def record_checkpoints(conn: psycopg.Connection, tenant_id: str | None = None) -> list[tuple[str, int, bytes]]:
    """Each tenant's chain head (or one tenant's), recorded as a checkpoint."""
    with conn.transaction():
        return [(t, seq, bytes(h)) for t, seq, h in conn.execute(
            "SELECT * FROM aos_record_ledger_checkpoints(%s)", (tenant_id,))]


def ensure_partitions(conn: psycopg.Connection, *, first: date, through: date) -> list[str]:
    """The months from ``first`` through ``through`` of every partitioned evidence table."""
    months = (_month(first), _month(through))
    with conn.transaction():
        created = [r[0] for r in conn.execute("SELECT aos_ensure_ledger_partitions(%s, %s)", months)]
        for table in FOLLOWERS:
            created += [r[0] for r in conn.execute("SELECT aos_ensure_partitions(%s, %s, %s)", (table, *months))]
        return created


def drop_partitions_before(conn: psycopg.Connection, before: date, table: str = LEDGER) -> list[str]:
    """Drops a table's whole months before ``before``: the ledger's if every chain segment
    in them is checkpointed; system_records' and aos_trace_steps' once the ledger holds
    nothing before ``before`` (and, for steps, as whole finished traces).

    Raises psycopg.Error (sqlstate AOS02) when retention is refused; nothing is dropped then.
    """
    with conn.transaction():
        if table == LEDGER:
            return [r[0] for r in conn.execute("SELECT aos_drop_ledger_partitions(%s)", (_month(before),))]
        return [r[0] for r in conn.execute("SELECT aos_drop_partitions(%s, %s)", (table, _month(before)))]


def retention_anchor(conn, tenant_id: str) -> Checkpoint | None:
    """The last dropped entry of a tenant's chain: where verification starts (None: nothing dropped).

    ``conn``: a psycopg or SQLAlchemy connection (the verifier's).
    """
    sql = ("SELECT seq, chain_hash FROM ledger_checkpoints WHERE tenant_id = %(t)s AND kind = 'RETENTION_ANCHOR' "
           "ORDER BY seq DESC LIMIT 1")
    if isinstance(conn, psycopg.Connection):
        row = conn.execute(sql, {"t": tenant_id}).fetchone()
    else:
        row = conn.exec_driver_sql(sql, {"t": tenant_id}).first()
    return Checkpoint(int(row[0]), bytes(row[1])) if row else None


def _parse_month(value: str) -> date:
    return datetime.strptime(value, "%Y-%m").date()  # noqa: DTZ007 - only the calendar month is kept


def main(argv: Iterable[str]) -> int:
    from aos_runtime.config import Settings
    from aos_runtime.db import libpq_url
    from aos_runtime.embedded import database_url_for

    parser = argparse.ArgumentParser(prog="python -m aos_recording.retention", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("checkpoint", help="record every tenant's chain head as a checkpoint")
    ensure = commands.add_parser("ensure", help="create monthly partitions from this month on")
    ensure.add_argument("--ahead", type=int, default=3, help="months after the current one (default 3)")
    drop = commands.add_parser("drop", help="drop whole months before a month, if checkpointed")
    drop.add_argument("--before", type=_parse_month, required=True, help="YYYY-MM: months before it go")
    args = parser.parse_args(list(argv))

    with database_url_for(Settings.from_env()) as url, \
            psycopg.connect(libpq_url(url), autocommit=True) as conn:
        try:
            if args.command == "checkpoint":
                for tenant, seq, chain in record_checkpoints(conn):
                    print(f"{tenant}\t{seq}\t{chain.hex()}")
            elif args.command == "ensure":
                today = datetime.now(timezone.utc).date()  # partitions are UTC months, the host's zone is not
                total = today.year * 12 + today.month - 1 + args.ahead
                for name in ensure_partitions(conn, first=today, through=date(total // 12, total % 12 + 1, 1)):
                    print(f"created {name}")
            else:
                # the ledger first: the others follow it
                for table in (LEDGER, *FOLLOWERS):
                    for name in drop_partitions_before(conn, args.before, table):
                        print(f"dropped {name}")
        except psycopg.Error as err:
            print(f"refused: {err.diag.message_primary or err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
