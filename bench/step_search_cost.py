"""What the trace steps' search index costs an OTLP Export's steps INSERT (issue #21), and why.

    .venv/bin/python bench/step_search_cost.py [--traces 400] [--spans 5] [--batch 510] [--reps 7]

A real Ingest process takes ``--traces`` GenAI traces through the real OTLP/gRPC exporter
(bench/ingest_rate.py's), so the steps carry what the OTLP path writes (input, output, and the
metadata: span ids, name, kind, attributes, resource). Then, as the table owner, ``--batch``
of those steps (an Export's worth: 512 spans) are inserted again as new rows — their runs and
traces first, the steps' INSERT timed alone — in a transaction rolled back, ``--reps`` times per
variant, so every repetition meets the same table:

- ``0021``: the index as migration 0021 made it (GIN, pending list 256 kB);
- ``no_index``: the steps' search index dropped (in the transaction);
- ``pending_4mb`` / ``fastupdate_off``: the same document, other GIN storage settings;
- ``document_only``: computing the batch's search documents, no INSERT (what the index's
  expression costs on its own, the part a GIN setting cannot change).

Embedded Postgres non-durable (fsync off) unless DATABASE_URL is set; the machine is shared:
min and median of the repetitions are printed with the load. Writes bench/results/step_search_cost.json.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psycopg

import ingest_rate as ir
from scratch import free_port, scratch_database, service_env, service_logins

BENCH = Path(__file__).resolve().parent
DOC = "aos_search_document(step_type, source, input_data::text, output_data::text, metadata::text)"
INDEX = "ix_aos_trace_steps_search"
VARIANTS = {
    "0021": None,
    "no_index": f"DROP INDEX {INDEX}",
    "pending_4mb": f"DROP INDEX {INDEX}; CREATE INDEX {INDEX} ON aos_trace_steps USING gin (tenant_id, ({DOC})) "
                   "WITH (gin_pending_list_limit = 4096)",
    "fastupdate_off": f"DROP INDEX {INDEX}; CREATE INDEX {INDEX} ON aos_trace_steps USING gin (tenant_id, ({DOC})) "
                      "WITH (fastupdate = off)",
}


def ingest(admin_url: str, work: Path, traces: int, spans: int) -> dict:
    dsns = service_logins(admin_url, work / "aos")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s), (%s, %s)",
                     (ir.OTLP, ir.OTLP, ir.COPY_TENANT, ir.COPY_TENANT))
    port = free_port()
    env = service_env(dsns, "ingest", AOS_INGEST_PORT=str(port), AOS_DATA_DIR=str(work / "aos"),
                      AOS_AUTH_JWT_SECRET=ir.SECRET, AOS_LOG_LEVEL="WARNING")
    service = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=90)
        return ir.otlp_spans(address, traces, spans, service.pid)
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=60)


def copy_sql(table: str, where: str) -> str:
    """INSERT … SELECT of ``table``'s OTLP rows matching ``where`` into the copy tenant, ids prefixed."""
    cols = ir._SAME[table]
    picked = ", ".join(f"%(prefix)s || {c}" if c in ir._PREFIXED else c for c in cols)
    return (f"INSERT INTO {table} (tenant_id, {', '.join(cols)}) SELECT %(copy)s, {picked} FROM {table} "
            f"WHERE tenant_id = %(otlp)s AND {where}")


def measure(admin_url: str, batch: int, reps: int) -> dict:
    out: dict = {}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SET ROLE aos_owner")
        traces = [r[0] for r in conn.execute(
            "SELECT trace_id FROM aos_trace_steps WHERE tenant_id = %s GROUP BY trace_id ORDER BY trace_id",
            (ir.OTLP,)).fetchall()]
        per_trace = conn.execute("SELECT count(*) / count(DISTINCT trace_id) FROM aos_trace_steps WHERE tenant_id = %s",
                                 (ir.OTLP,)).fetchone()[0]
        picked = traces[:max(1, batch // per_trace)]
        params = {"copy": ir.COPY_TENANT, "otlp": ir.OTLP, "traces": picked}
        steps = conn.execute("SELECT count(*), avg(length(metadata::text))::int FROM aos_trace_steps "
                             "WHERE tenant_id = %s AND trace_id = ANY(%s)", (ir.OTLP, picked)).fetchone()
        out["batch_steps"], out["avg_metadata_chars"] = steps
        out["document_lexemes_avg"] = conn.execute(
            f"SELECT avg(length({DOC}))::int FROM aos_trace_steps WHERE tenant_id = %s AND trace_id = ANY(%s)",
            (ir.OTLP, picked)).fetchone()[0]
        times: dict[str, list[float]] = {name: [] for name in [*VARIANTS, "document_only"]}
        for rep in range(reps):
            for name, setup in VARIANTS.items():
                params["prefix"] = f"c{rep}{name[:2]}-"
                with conn.transaction(force_rollback=True):
                    if setup:
                        conn.execute(setup)
                    run_ids = ("run_id IN (SELECT run_id FROM aos_traces WHERE tenant_id = %(otlp)s "
                               "AND trace_id = ANY(%(traces)s))")
                    conn.execute(copy_sql("llm_run_records", run_ids), params)
                    conn.execute(copy_sql("aos_traces", "trace_id = ANY(%(traces)s)"), params)
                    started = time.perf_counter()
                    conn.execute(copy_sql("aos_trace_steps", "trace_id = ANY(%(traces)s)"), params)
                    times[name].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            conn.execute(f"SELECT count({DOC}) FROM aos_trace_steps WHERE tenant_id = %(otlp)s "
                         "AND trace_id = ANY(%(traces)s)", params).fetchone()
            times["document_only"].append((time.perf_counter() - started) * 1000)
    out["steps_insert_ms"] = {name: {"min": round(min(v), 1), "median": round(statistics.median(v), 1)}
                              for name, v in times.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=400)
    parser.add_argument("--spans", type=int, default=5)
    parser.add_argument("--batch", type=int, default=510)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    results: dict = {"command": " ".join(["bench/step_search_cost.py", *sys.argv[1:]]), "load_before": os.getloadavg()}
    with scratch_database() as (admin_url, work):
        results["otlp_spans"] = ingest(admin_url, work, args.traces, args.spans)
        results.update(measure(admin_url, args.batch, args.reps))
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=1))
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "step_search_cost.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
