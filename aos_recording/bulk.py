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


# --- realistic text (issue #25's search at scale) -----------------------------------------
# Free text as producers write it, so that a search meets the word frequencies it would in
# production: a word in most reasons ("the"), one in a third ("review", "customer"), phrases
# ("budget exceeded", "manual review"), ids and amounts, and one rare number per entry (`n`).
REASONS = (
    "Refund of {a} EUR approved for customer {c} after manual review",
    "Spending limit raised to {a} per day at the request of the finance team",
    "Access denied for customer {c}: token expired during the session",
    "Policy rule updated after incident review; threshold set to {a}",
    "Agent escalated the ticket to a human reviewer because the budget exceeded the limit",
    "API key rotated by the security team as scheduled",
    "Override approved by the on-call engineer for customer {c} until the next review",
    "Login from a new device in {city} confirmed by the user",
)
CITIES = ("Berlin", "Lisbon", "Toronto", "Osaka", "Nairobi", "Santiago", "Oslo", "Pune")
STATUSES = ("pending", "approved", "rejected", "active", "revoked", "escalated")
PROMPTS = ("Summarise the customer's last three orders and suggest a refund if one is late",
           "Check whether the requested amount is within the tenant's spending limit",
           "Draft a reply explaining why the access request was denied",
           "Look up the shipping status for order {o} and report any delay",
           "Classify the ticket by urgency and route it to the right team")
ANSWERS = ("The order {o} arrived late; a refund of {a} EUR is within policy",
           "The amount exceeds the daily limit; escalating to a human reviewer",
           "Access was denied because the token expired; the user should sign in again",
           "Shipping is delayed by two days at the carrier's hub",
           "Urgency high: routed to the billing team")
SUMMARIES = ("Worker restarted after running out of memory on {host}",
             "Request latency above threshold on the gateway ({a} ms)",
             "Database connection pool exhausted; requests queued",
             "Certificate for {host} renews in {a} days",
             "Scheduled retention run finished without errors")


def text_ledger_rows(tenant: str, count: int, rng: random.Random) -> Iterator[tuple]:
    """ledger_rows with the free text of LEDGER_TEXT_COPY: a reason on 7 entries in 8, a
    before state on updates, after states with a status, an amount and a note."""
    step = SPAN_S / max(count, 1)
    for i in range(count):
        event = _EVENTS[i % len(_EVENTS)]
        entity = entity_of(event)
        amount, customer = rng.randrange(10, 5000), f"cust-{rng.randrange(10_000)}"
        reason = None if i % 8 == 7 else rng.choice(REASONS).format(a=amount, c=customer, city=rng.choice(CITIES))
        after = {"n": i, "run_id": f"{tenant}.run-{i // 7}", "status": rng.choice(STATUSES), "amount": amount,
                 "customer_id": customer} if i % 2 else None
        before = {"status": "pending", "amount": rng.randrange(10, 5000)} if event.endswith("Updated") else None
        entry = {"id": f"{tenant}.aud-{i}", "tenant_id": tenant, "event_type": event, "entity_type": entity,
                 "entity_id": f"{entity.lower()}-{rng.randrange(200)}",
                 "actor_type": ("HUMAN", "AGENT", "SYSTEM")[i % 3],
                 "actor_id": f"actor-{rng.randrange(50)}", "action_reason": reason,
                 "correlation_id": f"{tenant}.run-{rng.randrange(100_000)}" if i % 4 == 0 else None,
                 "created_at": EPOCH + timedelta(seconds=int(i * step)), "before_state": before,
                 "after_state": after}
        yield (entry["id"], tenant, event, entity, entry["entity_id"], entry["actor_type"], entry["actor_id"],
               reason, entry["correlation_id"], entry["created_at"],
               Jsonb(before) if before is not None else None, Jsonb(after) if after is not None else None,
               hashing.ledger_content_hash(entry), True, SCENARIO)


LEDGER_TEXT_COPY = ("COPY audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, actor_id, "
                    "action_reason, correlation_id, created_at, before_state, after_state, content_hash, "
                    "is_synthetic, synthetic_scenario_id) FROM STDIN")


def load_text_ledger(url: str, tenants: list[str], per_tenant: int, *, seed: int = 7, progress: bool = True,
                     stop_at: float | None = None) -> int:
    """The ledgers of ``tenants`` with free text (text_ledger_rows), one COPY (one transaction)
    per tenant, as the owner; each tenant's rows from its own seeded generator, so a tenant's
    ledger is the same whichever process loads it. The tenants must exist. ``stop_at``: no
    tenant is begun after this time.time(). Returns the entries written."""
    shown = Progress(f"ledger {tenants[0]}", len(tenants) * per_tenant) if progress and tenants else None
    written = 0
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("SET ROLE aos_owner")
        conn.execute("SET synchronous_commit = off")
        for tenant in tenants:
            if stop_at is not None and time.time() > stop_at:
                break
            written += per_tenant
            rng = random.Random(f"{seed}:{tenant}")
            with conn.transaction(), conn.cursor().copy(LEDGER_TEXT_COPY) as copy:
                for row in text_ledger_rows(tenant, per_tenant, rng):
                    copy.write_row(row)
            if shown:
                shown.add(per_tenant)
    return written


def load_text_traces(url: str, tenants: list[str], traces: int, steps: int, *, seed: int = 7) -> int:
    """``traces`` completed traces of ``steps`` steps with prompts and answers, spread over the
    tenants (trace i to tenant i mod n), through COPY as the owner. Returns the steps written."""
    rng = random.Random(f"{seed}:traces")
    progress = Progress("aos_trace_steps", traces * steps)
    step_types = ("input", "llm_call", "tool_call", "llm_call", "policy_check", "output")
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("SET ROLE aos_owner")
        conn.execute("SET synchronous_commit = off")
        for first in range(0, traces, 1000):
            ids = range(first, min(first + 1000, traces))
            with conn.transaction():
                finals = []
                # A connection runs one COPY at a time: traces first (steps need their trace),
                # completed as a finished trace is; steps after.
                step_rows: list[tuple] = []
                for i in ids:
                    tenant = tenants[i % len(tenants)]
                    trace_id, hashes = f"{tenant}.trace-{i}", []
                    started = EPOCH + timedelta(seconds=int(i * SPAN_S / max(traces, 1)))
                    for k in range(steps):
                        order, amount = f"ord-{rng.randrange(1_000_000)}", rng.randrange(10, 5000)
                        step = {"step_index": k, "step_type": step_types[k % len(step_types)],
                                "input_data": {"k": k, "prompt": f"step {k} of trace {i}: "
                                               + rng.choice(PROMPTS).format(o=order)},
                                "output_data": {"tokens": 100 + k,
                                                "text": rng.choice(ANSWERS).format(o=order, a=amount)},
                                "timestamp": started + timedelta(seconds=k)}
                        h = hashing.step_content_hash(step)
                        hashes.append(h)
                        step_rows.append((f"{trace_id}.s{k}", trace_id, tenant, k, step["step_type"], "info", "agent",
                                          step["timestamp"], 100 + k, rng.randrange(5), 50 + k,
                                          Jsonb(step["input_data"]), Jsonb(step["output_data"]), h))
                    finals.append((tenant, trace_id, hashing.trace_content_hash(hashes), started))
                with conn.cursor().copy("COPY aos_traces (trace_id, tenant_id, run_id, agent_id, started_at, "
                                        "is_synthetic, synthetic_scenario_id) FROM STDIN") as copy:
                    for tenant, trace_id, _h, started in finals:
                        i = int(trace_id.rsplit("-", 1)[1])
                        copy.write_row((trace_id, tenant, f"{tenant}.run-{i}", f"agent-{i % 40}", started, True,
                                        SCENARIO))
                with conn.cursor().copy("COPY aos_trace_steps (id, trace_id, tenant_id, step_index, step_type, "
                                        "level, source, \"timestamp\", tokens, cost_cents, duration_ms, input_data, "
                                        "output_data, content_hash) FROM STDIN") as copy:
                    for row in step_rows:
                        copy.write_row(row)
                with conn.cursor() as cur:
                    cur.executemany(
                        "UPDATE aos_traces SET status = 'completed', completed_at = %s, step_count = %s, "
                        "total_tokens = %s, content_hash = %s WHERE tenant_id = %s AND trace_id = %s",
                        [(started + timedelta(seconds=steps), steps, sum(100 + k for k in range(steps)), h, tenant, t)
                         for tenant, t, h, started in finals])
            progress.add(len(ids) * steps)
    return traces * steps


def load_text_system(url: str, tenants: list[str], records: int, *, seed: int = 7, batch: int = 5_000) -> int:
    """``records`` system records with summaries and details (every tenth system-wide, in
    platform_records), through COPY as the owner, ``batch`` records a transaction: the
    producer-id trigger takes a transaction-level advisory lock per (tenant, id bucket), and
    1,000 tenants' buckets in one transaction exhausted the lock table ("out of shared
    memory", which failed the other loaders' COPYs too). Returns the records written."""
    rng = random.Random(f"{seed}:system")
    events = sorted(vocabulary.SYSTEM_EVENT_TYPES)
    severities = sorted(vocabulary.SYSTEM_SEVERITIES)
    progress = Progress("system_records", records)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("SET ROLE aos_owner")
        conn.execute("SET synchronous_commit = off")
        for first in range(0, records, batch):
            rows: dict[bool, list[tuple]] = {False: [], True: []}
            for i in range(first, min(first + batch, records)):
                system_wide = i % 10 == 0
                tenant = None if system_wide else tenants[i % len(tenants)]
                host, amount = f"node-{rng.randrange(64)}", rng.randrange(1, 3000)
                details = {"host": host, "pid": rng.randrange(1, 65536), "value": amount}
                record = {"id": f"bulk.sys-{i}", "tenant_id": tenant,
                          "component": ("api", "worker", "gateway")[i % 3],
                          "event_type": events[i % len(events)], "severity": severities[i % len(severities)],
                          "summary": f"event {i}: " + rng.choice(SUMMARIES).format(host=host, a=amount),
                          "details": details, "caused_by": "SYSTEM", "actor_id": None, "correlation_id": None,
                          "run_id": f"{tenant}.run-{i}" if tenant and i % 5 == 0 else None, "environment_id": None,
                          "created_at": EPOCH + timedelta(seconds=int(i * SPAN_S / max(records, 1)))}
                rows[system_wide].append((
                    record["id"], tenant, record["component"], record["event_type"], record["severity"],
                    record["summary"], Jsonb(details), "SYSTEM", record["run_id"], record["created_at"],
                    hashing.system_record_content_hash(record), True, SCENARIO))
            with conn.transaction():
                for table, system_wide in (("system_records", False), ("platform_records", True)):
                    with conn.cursor().copy(
                            f"COPY {table} (id, tenant_id, component, event_type, severity, summary, details, "
                            "caused_by, run_id, created_at, content_hash, is_synthetic, synthetic_scenario_id) "
                            "FROM STDIN") as copy:
                        for row in rows[system_wide]:
                            copy.write_row(row)
            progress.add(len(rows[False]) + len(rows[True]))
    return records


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
