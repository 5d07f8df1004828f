"""The stored-bytes quota's read against a tenant's exports (issue #19, migration
0035_export_stored_bytes): the statement services/export/quotas.py runs twice per CreateExport,
as main ran it (``sum``: ``coalesce(sum(size_bytes), 0)`` over the tenant's log_exports rows) and
as 0035 runs it (``total``: the tenant's one export_stored_bytes row), and the alternative not
taken (``sum_ios``: main's statement with a covering index (tenant_id) INCLUDE (size_bytes),
after a VACUUM so that it is an index-only scan). Plus what 0035 costs: database CPU and wall
per one-export INSERT with its statement trigger on and off.

    .venv/bin/python bench/quota_check.py [--exports 10 1000 10000] [--calls 300] [--rounds 4] [--inserts 500]

Each --exports N: a tenant with N exports (one INSERT … SELECT as the owner, through the chain
trigger), then ANALYZE (as autoanalyze would). Reads as the Export service reads: a session of
the aos_export role with the tenant set (row-level security on), each statement its own
transaction; per variant and round --calls statements, the variants alternated by round; the
figures are the client's wall per statement (median, p90) and the backend's CPU (/proc) per
statement. ``sum_ios`` runs last (its index would change ``sum``'s plan), alternated with
``total`` again. Scratch embedded Postgres (non-durable), or DATABASE_URL.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid

import psycopg

from aos_runtime.db import libpq_url
from scratch import scratch_database
from tlog import cpu_s

LOAD = ("INSERT INTO log_exports (id, tenant_id, scope, bundle_type, format, content_type, filename, size_bytes, "
        "checksum, manifest, dsse_envelope, signing_key_id, redaction, requested_by_type, requested_by_id, "
        "created_at, content_hash) SELECT %(t)s || '-' || n, %(t)s, 'AUDIT_SLICE', 'EVIDENCE', 'JSON', "
        "'application/json', 'x.json', 1000 + n, sha256(''::bytea), '{}', '{}', 'k', '{}', 'HUMAN', 'u', now(), "
        "sha256(convert_to(%(t)s || n, 'UTF8')) FROM generate_series(%(first)s::bigint, %(last)s::bigint) n")
STATEMENTS = {
    "sum": "SELECT coalesce(sum(size_bytes), 0) FROM log_exports WHERE tenant_id = %(t)s",  # main's
    "total": "SELECT coalesce((SELECT stored_bytes FROM export_stored_bytes WHERE tenant_id = %(t)s), 0)",  # 0035's
}
STATEMENTS["sum_ios"] = STATEMENTS["sum"]
COVERING = "CREATE INDEX ix_bench_log_exports_size ON log_exports (tenant_id) INCLUDE (size_bytes)"
TRIGGER = "log_exports_stored_bytes"


def reads(conn: psycopg.Connection, pid: int, statement: str, tenant: str, calls: int) -> tuple[list[float], float]:
    """Wall seconds of each of ``calls`` statements, and the backend's CPU seconds for all."""
    conn.execute(statement, {"t": tenant})  # warm (and past psycopg's prepare threshold soon)
    walls, c0 = [], cpu_s([pid])
    for _ in range(calls):
        t0 = time.perf_counter()
        conn.execute(statement, {"t": tenant}).fetchone()
        walls.append(time.perf_counter() - t0)
    return walls, cpu_s([pid]) - c0


def plan(conn: psycopg.Connection, statement: str, tenant: str) -> dict:
    rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, {"t": tenant}).fetchone()[0]
    top = rows[0]
    nodes, stack = [], [top["Plan"]]
    while stack:
        node = stack.pop()
        nodes.append(node["Node Type"] + (f" on {node['Relation Name']}" if "Relation Name" in node else ""))
        stack.extend(node.get("Plans", []))
    return {"nodes": nodes, "execution_ms": top["Execution Time"],
            "shared_buffers": top["Plan"].get("Shared Hit Blocks", 0) + top["Plan"].get("Shared Read Blocks", 0)}


def summary(walls: list[float], cpu: float) -> dict:
    walls = sorted(walls)
    return {"wall_us_p50": round(statistics.median(walls) * 1e6, 1),
            "wall_us_p90": round(walls[int(len(walls) * 0.9)] * 1e6, 1),
            "cpu_us_per_call": round(cpu / len(walls) * 1e6, 1)}


def compare(reader, pid, tenants, variants, calls, rounds) -> dict:
    out = {}
    for n, tenant in tenants.items():
        walls = {v: [] for v in variants}
        cpu = dict.fromkeys(variants, 0.0)
        for r in range(rounds):
            for variant in (variants if r % 2 == 0 else variants[::-1]):
                w, c = reads(reader, pid, STATEMENTS[variant], tenant, calls)
                walls[variant] += w
                cpu[variant] += c
        out[n] = {v: {**summary(walls[v], cpu[v]), "plan": plan(reader, STATEMENTS[v], tenant)} for v in variants}
        out[n]["load_average_now"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps({"exports": n, **out[n]}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exports", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--inserts", type=int, default=500, help="one-export INSERTs per round and trigger state")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with scratch_database(prefix="aos-bench-quota-") as (url, _work), \
            psycopg.connect(libpq_url(url), autocommit=True) as owner, \
            psycopg.connect(libpq_url(url), autocommit=True) as reader:
        tenants = {}
        for n in args.exports:
            tenant = f"q{n}-{uuid.uuid4().hex[:6]}"
            owner.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant, tenant))
            owner.execute(LOAD, {"t": tenant, "first": 1, "last": n})
            tenants[n] = tenant
        owner.execute("ANALYZE log_exports")
        reader.execute("SET ROLE aos_export")
        pid = reader.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        for n, tenant in tenants.items():  # the total is the sum, before anything is timed
            reader.execute("SELECT set_config('aos.tenant_id', %s, false)", (tenant,))
            got = {v: reader.execute(STATEMENTS[v], {"t": tenant}).fetchone()[0] for v in ("sum", "total")}
            assert got["sum"] == got["total"] == n * 1000 + n * (n + 1) // 2, got
        checks: dict[int, dict] = {}
        for n, tenant in tenants.items():
            reader.execute("SELECT set_config('aos.tenant_id', %s, false)", (tenant,))
            checks[n] = compare(reader, pid, {n: tenant}, ["sum", "total"], args.calls, args.rounds)[n]
        owner.execute(COVERING)
        owner.execute("VACUUM (ANALYZE) log_exports")
        for n, tenant in tenants.items():
            reader.execute("SELECT set_config('aos.tenant_id', %s, false)", (tenant,))
            checks[n]["covering_index"] = compare(reader, pid, {n: tenant}, ["sum_ios", "total"],
                                                  args.calls, args.rounds)[n]
        owner.execute("DROP INDEX ix_bench_log_exports_size")

        # What the trigger costs an export's INSERT: one-row INSERTs, each its own transaction.
        tenant = f"ins-{uuid.uuid4().hex[:6]}"
        owner.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant, tenant))
        owner.execute(LOAD, {"t": tenant, "first": 1, "last": 1})  # the tenant's row exists: every insert updates it
        opid = owner.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        wall, cpu = {"on": 0.0, "off": 0.0}, {"on": 0.0, "off": 0.0}
        k = 1
        try:
            for r in range(args.rounds):
                for state in (("on", "off") if r % 2 == 0 else ("off", "on")):
                    owner.execute(f"ALTER TABLE log_exports {'ENABLE ALWAYS' if state == 'on' else 'DISABLE'} "
                                  f"TRIGGER {TRIGGER}")
                    k += 1
                    owner.execute(LOAD, {"t": tenant, "first": k, "last": k})  # untimed
                    c0, t0 = cpu_s([opid]), time.perf_counter()
                    for _ in range(args.inserts):
                        k += 1
                        owner.execute(LOAD, {"t": tenant, "first": k, "last": k})
                    wall[state] += time.perf_counter() - t0
                    cpu[state] += cpu_s([opid]) - c0
        finally:
            owner.execute(f"ALTER TABLE log_exports ENABLE ALWAYS TRIGGER {TRIGGER}")
        n_ins = args.inserts * args.rounds
        inserts = {"inserts_per_state": n_ins,
                   "cpu_us_per_insert": {s: round(v / n_ins * 1e6, 1) for s, v in cpu.items()},
                   "wall_us_per_insert": {s: round(v / n_ins * 1e6, 1) for s, v in wall.items()},
                   "load_average_now": [round(x, 2) for x in os.getloadavg()]}
        print(json.dumps({"insert_trigger": inserts}), flush=True)
        server = owner.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    result = {"calls": args.calls, "rounds": args.rounds, "postgres": server, "checks": checks,
              "insert_trigger": inserts, "load_average_before": load_before,
              "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
