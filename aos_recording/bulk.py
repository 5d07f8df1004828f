"""Bulk data for benchmarks: a realistic volume with valid chains, through COPY.

    python -m aos_recording.bulk                       # the default volume (below)
    python -m aos_recording.bulk --tenants 10 --ledger 100000 --traces 1000 --system 10000

Default volume: 10,000,000 ledger entries across 1,000 tenants, 100,000 traces of
20 steps, 1,000,000 system records. Writes into DATABASE_URL (migrated first), or
the embedded Postgres under AOS_DATA_DIR when it is unset.

COPY runs as the table owner (``aos_owner``): row-level security does not allow
COPY FROM for the service roles. The database still assigns every ledger chain
(its trigger fires for COPY too), so the chains are the database's, and content
hashes come from ``aos_recording.hashing`` as for any producer. Rows are marked
synthetic with scenario id ``BULK``.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg.types.json import Jsonb

from aos_recording import hashing, retention, vocabulary
from aos_runtime.db import libpq_url

SCENARIO = "BULK"
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
SPAN_S = 300 * 24 * 3600  # the data spans ~300 days


@dataclass(frozen=True)
class Volume:
    tenants: int = 1000
    ledger: int = 10_000_000
    traces: int = 100_000
    steps: int = 20
    system: int = 1_000_000


class Progress:
    """A progress line on stderr: done/total, rate, ETA."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.started = self.shown = time.monotonic()

    def add(self, n: int) -> None:
        if self.total <= 0:
            return
        self.done += n
        now = time.monotonic()
        if now - self.shown >= 0.5 or self.done >= self.total:
            self.shown = now
            rate = self.done / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            sys.stderr.write(f"\r{self.label:<14} [{'#' * filled}{'.' * (width - filled)}] "
                             f"{self.done:>11,}/{self.total:,}  {rate:>9,.0f}/s  eta {eta:5.0f}s")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)


def tenant_ids(n: int) -> list[str]:
    return [f"bulk-{i:05d}" for i in range(n)]


# Access, retention and erasure (the platform's own bookkeeping), not governance.
_EVENTS = sorted(vocabulary.AUDIT_EVENTS - {"EvidenceExported", "ExportVerified", "RetentionPolicyChanged",
                                            "LegalHoldPlaced", "LegalHoldReleased", "EvidencePartitionDropped",
                                            "SubjectErasureRequested", "SubjectErased", "EvidenceRowsRemoved"})
# The entity a realistic entry of each event names (by the event's prefix).
_ENTITY_BY_PREFIX = (("PolicyRule", "POLICY_RULE"), ("PolicyProposal", "POLICY_PROPOSAL"), ("Limit", "LIMIT"),
                     ("Incident", "INCIDENT"), ("EmergencyOverride", "POLICY_RULE"), ("ActorLogged", "ACTOR"),
                     ("ApiKey", "API_KEY"), ("Access", "ACTOR"))


def entity_of(event: str) -> str:
    return next(entity for prefix, entity in _ENTITY_BY_PREFIX if event.startswith(prefix))


def ledger_rows(tenant: str, count: int, rng: random.Random) -> Iterator[tuple]:
    step = SPAN_S / max(count, 1)
    for i in range(count):
        event = _EVENTS[i % len(_EVENTS)]
        entity = entity_of(event)
        entry = {"id": f"{tenant}.aud-{i}", "tenant_id": tenant, "event_type": event, "entity_type": entity,
                 "entity_id": f"{entity.lower()}-{rng.randrange(200)}",
                 "actor_type": ("HUMAN", "AGENT", "SYSTEM")[i % 3],
                 "actor_id": f"actor-{rng.randrange(50)}", "action_reason": None,
                 "correlation_id": f"{tenant}.run-{rng.randrange(100_000)}" if i % 4 == 0 else None,
                 "created_at": EPOCH + timedelta(seconds=int(i * step)), "before_state": None,
                 "after_state": {"n": i, "run_id": f"{tenant}.run-{i // 7}"} if i % 2 else None}
        yield (entry["id"], tenant, event, entity, entry["entity_id"], entry["actor_type"], entry["actor_id"],
               entry["correlation_id"], entry["created_at"],
               Jsonb(entry["after_state"]) if entry["after_state"] is not None else None,
               hashing.ledger_content_hash(entry), True, SCENARIO)


LEDGER_COPY = ("COPY audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, actor_id, "
               "correlation_id, created_at, after_state, content_hash, is_synthetic, synthetic_scenario_id) FROM STDIN")


def load(url: str, volume: Volume, *, seed: int = 7) -> dict[str, float]:
    """Write the volume; returns rows per second for each table."""
    rng = random.Random(seed)
    tenants = tenant_ids(volume.tenants)
    rates = {}
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("SET ROLE aos_owner")
        conn.execute("SET synchronous_commit = off")
        # Partitioned tables (migrations 0008, 0009): the months the data spans get their
        # partitions first, as the maintenance path would have made them over time;
        # otherwise every back-dated row would land in the default partition.
        partitioned = conn.execute("SELECT to_regproc('aos_ensure_partitions') IS NOT NULL").fetchone()
        if partitioned and partitioned[0]:
            retention.ensure_partitions(conn, first=EPOCH, through=EPOCH + timedelta(seconds=SPAN_S))
        with conn.cursor().copy("COPY tenants (id, name, is_synthetic, synthetic_scenario_id) FROM STDIN") as copy:
            for t in tenants:
                copy.write_row((t, f"Bulk tenant {t}", True, SCENARIO))

        progress = Progress("audit_ledger", volume.ledger)
        per_tenant, extra = divmod(volume.ledger, volume.tenants)
        for index, tenant in enumerate(tenants):
            count = per_tenant + (1 if index < extra else 0)
            with conn.transaction(), conn.cursor().copy(LEDGER_COPY) as copy:
                for n, row in enumerate(ledger_rows(tenant, count, rng), 1):
                    copy.write_row(row)
                    if n % 10_000 == 0:
                        progress.add(10_000)
            progress.add(count % 10_000)
        rates["audit_ledger"] = progress.rate()

        rates.update(_traces(conn, tenants, volume, rng))
        rates["system_records"] = _system(conn, tenants, volume, rng)
        conn.execute("RESET ROLE")
        conn.execute("ANALYZE")
    return rates


def _traces(conn, tenants: list[str], volume: Volume, rng: random.Random) -> dict[str, float]:
    progress = Progress("aos_trace_steps", volume.traces * volume.steps)
    step_types = ("input", "llm_call", "tool_call", "llm_call", "policy_check", "output")
    batch = 1000
    for first in range(0, volume.traces, batch):
        ids = range(first, min(first + batch, volume.traces))
        with conn.transaction():
            with conn.cursor().copy("COPY aos_traces (trace_id, tenant_id, run_id, agent_id, started_at, "
                                    "is_synthetic, synthetic_scenario_id) FROM STDIN") as copy:
                for i in ids:
                    tenant = tenants[i % len(tenants)]
                    copy.write_row((f"{tenant}.trace-{i}", tenant, f"{tenant}.run-{i}", f"agent-{i % 40}",
                                    EPOCH + timedelta(seconds=i * 60), True, SCENARIO))
            finals = []
            with conn.cursor().copy("COPY aos_trace_steps (id, trace_id, tenant_id, step_index, step_type, level, "
                                    "source, \"timestamp\", tokens, cost_cents, duration_ms, input_data, "
                                    "output_data, content_hash) FROM STDIN") as copy:
                for i in ids:
                    tenant = tenants[i % len(tenants)]
                    trace_id, hashes = f"{tenant}.trace-{i}", []
                    for k in range(volume.steps):
                        step = {"step_index": k, "step_type": step_types[k % len(step_types)],
                                "input_data": {"k": k, "prompt": f"step {k} of trace {i}"},
                                "output_data": {"tokens": 100 + k}, "timestamp": EPOCH + timedelta(seconds=i * 60 + k)}
                        h = hashing.step_content_hash(step)
                        hashes.append(h)
                        copy.write_row((f"{trace_id}.s{k}", trace_id, tenant, k, step["step_type"], "info", "agent",
                                        step["timestamp"], 100 + k, rng.randrange(5), 50 + k,
                                        Jsonb(step["input_data"]), Jsonb(step["output_data"]), h))
                    finals.append((tenant, trace_id, hashing.trace_content_hash(hashes),
                                   EPOCH + timedelta(seconds=i * 60 + volume.steps)))
                    progress.add(volume.steps)
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE aos_traces SET status = 'completed', completed_at = %s, step_count = %s, "
                    "total_tokens = %s, content_hash = %s WHERE tenant_id = %s AND trace_id = %s",
                    [(done, volume.steps, sum(100 + k for k in range(volume.steps)), h, tenant, t)
                     for tenant, t, h, done in finals])
    return {"aos_trace_steps": progress.rate()}


def _system(conn, tenants: list[str], volume: Volume, rng: random.Random) -> float:
    """Every tenth record system-wide, the rest the tenants'; one COPY for each table (a
    connection runs one COPY at a time). Before migration 0011 system-wide records were
    system_records' rows without a tenant."""
    progress = Progress("system_records", volume.system)
    events = sorted(vocabulary.SYSTEM_EVENT_TYPES)
    severities = sorted(vocabulary.SYSTEM_SEVERITIES)
    written = 0
    apart = conn.execute("SELECT to_regclass('platform_records') IS NOT NULL").fetchone()[0]
    with conn.transaction():
        platform_table = "platform_records" if apart else "system_records"
        for table, system_wide in (("system_records", False), (platform_table, True)):
            with conn.cursor().copy(
                    f"COPY {table} (id, tenant_id, component, event_type, severity, summary, caused_by, run_id, "
                    "created_at, content_hash, is_synthetic, synthetic_scenario_id) FROM STDIN") as copy:
                for i in range(volume.system):
                    if (i % 10 == 0) != system_wide:
                        continue
                    tenant = None if system_wide else tenants[i % len(tenants)]
                    record = {"id": f"bulk.sys-{i}", "tenant_id": tenant,
                              "component": ("api", "worker", "gateway")[i % 3], "event_type": events[i % len(events)],
                              "severity": severities[i % len(severities)], "summary": f"event {i}", "details": None,
                              "caused_by": "SYSTEM", "actor_id": None, "correlation_id": None,
                              "run_id": f"{tenant}.run-{i}" if tenant and i % 5 == 0 else None, "environment_id": None,
                              "created_at": EPOCH + timedelta(seconds=int(i * SPAN_S / volume.system))}
                    copy.write_row((record["id"], tenant, record["component"], record["event_type"],
                                    record["severity"], record["summary"], "SYSTEM", record["run_id"],
                                    record["created_at"], hashing.system_record_content_hash(record), True, SCENARIO))
                    written += 1
                    if written % 10_000 == 0:
                        progress.add(10_000)
        progress.add(written - progress.done)
    return progress.rate()


def main(argv: list[str] | None = None) -> int:
    defaults = Volume()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("tenants", "ledger", "traces", "steps", "system"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    args = parser.parse_args(argv)
    volume = Volume(args.tenants, args.ledger, args.traces, args.steps, args.system)

    from aos_runtime import migrate
    from aos_runtime.config import Settings
    from aos_runtime.embedded import database_url_for

    with database_url_for(Settings.from_env()) as url:
        migrate.upgrade(url)
        started = time.monotonic()
        rates = load(url, volume)
        print(f"loaded in {time.monotonic() - started:.0f} s: " +
              ", ".join(f"{table} {rate:,.0f} rows/s" for table, rate in rates.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
