"""Evidence search at issue #25's scale: 10 M ledger entries across 1,000 tenants.

    cd bench && ../.venv/bin/python search_scale.py load --data-dir DIR        # ~30-60 min, ~20 GB
    cd bench && ../.venv/bin/python search_scale.py measure --data-dir DIR [--queries 200] [--lists]
    cd bench && ../.venv/bin/python search_scale.py stop --data-dir DIR        # then rm -rf DIR

``load`` makes an embedded PostgreSQL (non-durable) in DIR, migrates it to head and fills it
with ``aos_recording.bulk``'s realistic text (reasons, states, actors; steps' prompts and
answers; system records' summaries and details): --ledger entries over --tenants, --traces
traces of --steps steps, --system system records. bench/search.py's loader (bulk.load) with
every index and trigger live runs at 400-4,100 entries/s here (45 min to 7 h for 10 M); this
one reaches the same database faster:

- the chain trigger fires for every row (the database assigns seq, prev hash, chain hash and
  recorded_at, as for any producer); --workers processes COPY disjoint tenants at once (the
  chain lock is per tenant);
- the transparency log's tree trigger (audit_ledger_tlog) is disabled for the COPY and its
  stored hashes are computed afterwards from the rows in seq order, the trigger's way (bench/
  tlog.py --tree offline, the method checked there against the trigger at 3,000 and 10 M), then
  the trigger is enabled again (ENABLE ALWAYS, as migration 0013 leaves it);
- the four search GIN indexes of migration 0021 and the payloads' of 0034 are dropped before
  the COPY and created again after it from their migrations' own definitions (same expression,
  opclass and gin_pending_list_limit), one CREATE INDEX on each parent (its partitions follow).
  A GIN index built in one pass is denser than one grown by appends through pending lists: the
  figures are those of a freshly built (or REINDEXed) index. (The bulk rows are hash format 1:
  evidence_payloads stays empty and 0034's index costs the COPY nothing; it is handled the same
  way so a load of format-2 rows would be too.);
- then VACUUM (ANALYZE), and a check: a sample tenant's chain verified whole
  (aos_recording.verify.verify_ledger), its tree's root recomputed from its leaves, one entry
  appended through the live triggers on top of the offline tree and its inclusion proof
  checked against that root.

``measure`` runs bench/search.py's measurement on it (the Logs service in-process, a real
channel, random tenants; the first page of 50 with its total), with the text classes too.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing
import os
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aos_recording import bulk, retention, tlog
from aos_runtime import migrate
from aos_runtime.db import libpq_url
from aos_runtime.embedded import EmbeddedPostgres
from tlog import offline_tree  # bench/tlog.py, beside this file (the stored-hash layout is its)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"
SEARCH_INDEXES = ("ix_audit_ledger_search", "ix_aos_trace_steps_search", "ix_system_records_search",
                  "ix_platform_records_search", "ix_evidence_payloads_search")
# Memory for a 10 M-entry cluster on a 23 GB machine shared with others: the search indexes and
# the hot btrees fit in shared_buffers; the heaps are read through the OS cache.
SETTINGS = {"shared_buffers": "3GB", "effective_cache_size": "12GB", "maintenance_work_mem": "1GB",
            "max_wal_size": "8GB", "checkpoint_timeout": "30min", "autovacuum": "on"}


def server(data_dir: Path) -> EmbeddedPostgres:
    pg = EmbeddedPostgres(data_dir, durable=False)
    pg.start()
    return pg


def timed(label: str, timings: dict[str, float], work, *args):
    started = time.perf_counter()
    result = work(*args)
    timings[label] = round(time.perf_counter() - started, 1)
    print(f"{label}: {timings[label]} s", file=sys.stderr, flush=True)
    return result


def _ledger_worker(args: tuple[str, list[str], int, float | None]) -> int:
    url, tenants, per_tenant, stop_at = args
    return bulk.load_text_ledger(url, tenants, per_tenant, stop_at=stop_at)


def _tree_worker(args: tuple[str, list[str]]) -> int:
    url, tenants = args
    return offline_tree(url, tenants)


def _side_worker(args: tuple[str, list[str], int, int, int]) -> int:
    url, tenants, traces, steps, system = args
    return bulk.load_text_traces(url, tenants, traces, steps) + bulk.load_text_system(url, tenants, system)


def in_parallel(worker, jobs: list) -> list:
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        return pool.map(worker, jobs)


def migration(filename: str):
    spec = importlib.util.spec_from_file_location(f"migration_{filename[:4]}", MIGRATIONS / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def search_index_sql() -> dict[str, str]:
    """The CREATE INDEX of each search index (SEARCH_INDEXES), from migrations 0021's and
    0034's own definitions."""
    m = migration("0021_evidence_search.py")
    payloads = migration("0034_payload_search.py")
    return {"ix_audit_ledger_search": f"CREATE INDEX ix_audit_ledger_search ON audit_ledger USING gin "
                                      f"(tenant_id, ({m.AUDIT_DOC})) {m.PENDING}",
            "ix_aos_trace_steps_search": f"CREATE INDEX ix_aos_trace_steps_search ON aos_trace_steps USING gin "
                                         f"(tenant_id, ({m.STEP_DOC})) {m.PENDING}",
            "ix_system_records_search": f"CREATE INDEX ix_system_records_search ON system_records USING gin "
                                        f"(tenant_id, ({m.SYSTEM_DOC})) {m.PENDING}",
            "ix_platform_records_search": f"CREATE INDEX ix_platform_records_search ON platform_records USING gin "
                                          f"(({m.SYSTEM_DOC})) {m.PENDING}",
            "ix_evidence_payloads_search": f"CREATE INDEX ix_evidence_payloads_search ON evidence_payloads USING gin "
                                           f"(tenant_id, record_type, ({payloads.DOC})) {m.PENDING}"}


def prepare(args: argparse.Namespace) -> tuple[EmbeddedPostgres, str, list[str]]:
    """The cluster started with SETTINGS, migrated, its tenants written, the search indexes
    dropped and the tree trigger disabled (each only when not yet so: a load can resume)."""
    data_dir = Path(args.data_dir).resolve()
    pg = server(data_dir)
    with psycopg.connect(libpq_url(pg.url), autocommit=True) as conn:
        if conn.execute("SHOW shared_buffers").fetchone()[0] != SETTINGS["shared_buffers"]:
            for name, value in SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            restart = True
        else:
            restart = False
    if restart:
        pg.stop()
        pg = server(data_dir)
    migrate.upgrade(pg.url)
    tenants = bulk.tenant_ids(args.tenants)
    with psycopg.connect(libpq_url(pg.url), autocommit=True) as admin:
        retention.ensure_partitions(admin, first=bulk.EPOCH, through=bulk.EPOCH + timedelta(seconds=bulk.SPAN_S))
        for name in SEARCH_INDEXES:
            admin.execute(f"DROP INDEX IF EXISTS {name}")
        admin.execute("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_tlog")
        admin.execute("SET ROLE aos_owner")
        admin.execute("INSERT INTO tenants (id, name, is_synthetic, synthetic_scenario_id) "
                      "SELECT t, 'Bulk tenant ' || t, true, %s FROM unnest(%s::text[]) t ON CONFLICT DO NOTHING",
                      (bulk.SCENARIO, tenants))
        admin.execute("RESET ROLE")
    return pg, pg.url, tenants


def loaded_tenants(url: str, tenants: list[str]) -> list[str]:
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        return [r[0] for r in admin.execute(
            "SELECT t FROM unnest(%s::text[]) t WHERE EXISTS (SELECT FROM audit_ledger a WHERE a.tenant_id = t)",
            (tenants,))]


def load(args: argparse.Namespace) -> dict[str, object]:
    """Every phase; resumes where a load stopped (tenants whose ledger is written are kept: one
    transaction each), or, with --minutes, stops beginning tenants after that long."""
    pg, url, tenants = prepare(args)
    timings: dict[str, float] = {}
    per_tenant = args.ledger // args.tenants
    done = set(loaded_tenants(url, tenants))
    todo = [t for t in tenants if t not in done]
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        have_steps = admin.execute("SELECT EXISTS (SELECT FROM aos_trace_steps)").fetchone()[0]
        have_system = admin.execute("SELECT EXISTS (SELECT FROM system_records)").fetchone()[0]
    stop_at = time.time() + args.minutes * 60 if args.minutes else None
    jobs: list = [(url, todo[k::args.workers], per_tenant, stop_at) for k in range(args.workers)]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.workers + 1) as pool:
        side = pool.apply_async(_side_worker, ((url, tenants, 0 if have_steps else args.traces, args.steps,
                                                0 if have_system else args.system),))
        pool.map(_ledger_worker, jobs)
        side.get()
    timings["copy_s"] = round(time.perf_counter() - started, 1)
    result = finish(url, tenants, timings)
    result["volume"] = vars(args)
    pg.stop()
    return result


def finish(url: str, tenants: list[str], timings: dict[str, float], workers: int = 2) -> dict[str, object]:
    """The tree of every loaded tenant that has none, the tree trigger enabled again, the
    search indexes built, VACUUM (ANALYZE), the check."""
    loaded = loaded_tenants(url, tenants)
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        treed = {r[0] for r in admin.execute(
            "SELECT t FROM unnest(%s::text[]) t WHERE EXISTS (SELECT FROM tlog_hashes h WHERE h.tenant_id = t "
            "AND h.log = 'ledger')", (loaded,))}
    todo = [t for t in loaded if t not in treed]
    leaves = timed("tree_s", timings, in_parallel, _tree_worker,
                   [(url, todo[k::workers]) for k in range(workers)]) if todo else [0]
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        admin.execute("ALTER TABLE audit_ledger ENABLE ALWAYS TRIGGER audit_ledger_tlog")
        admin.execute("SET maintenance_work_mem = '1GB'")
        for name, sql in search_index_sql().items():
            if admin.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None:
                timed(name, timings, admin.execute, sql)
        timed("vacuum_analyze_s", timings, admin.execute,
              "VACUUM (ANALYZE) audit_ledger, aos_trace_steps, aos_traces, system_records, platform_records, "
              "tlog_hashes, tenants")
        entries = admin.execute("SELECT count(*) FROM audit_ledger").fetchone()[0]
    return {"timings_s": timings, "tenants_loaded": len(loaded), "ledger_entries": entries,
            "tree_leaves_written": sum(leaves), "check": check(url, loaded[len(loaded) // 2])}


def mth(hashes: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1's Merkle tree hash of leaf hashes, by its definition (not the stored hashes)."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)  # the largest power of two below the size
    return tlog.node_hash(mth(hashes[:k]), mth(hashes[k:]))


def check(url: str, tenant: str) -> dict[str, object]:
    """The sample tenant's chain verified whole; one entry appended through the live triggers
    on top of the offline tree; the stored root against the leaves' Merkle tree hash; the new
    entry's inclusion proof from the stored hashes against that root."""
    from sqlalchemy import create_engine, text

    from aos_recording import verify
    from aos_recording.writers import AuditLedgerWriter

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        AuditLedgerWriter(conn).append(tenant_id=tenant, event_type="LimitUpdated", entity_type="LIMIT",
                                       entity_id="limit-1", actor_type="SYSTEM", actor_id="bench-check",
                                       after_state={"max_value": 100})
    with engine.connect() as conn:
        report = verify.verify_ledger(conn, tenant)
    engine.dispose()
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        stored = {int(i): bytes(h) for i, h in admin.execute(
            "SELECT hash_index, hash FROM tlog_hashes WHERE tenant_id = %s AND log = 'ledger'", (tenant,))}
        leaves = [bytes(r[0]) for r in admin.execute(
            "SELECT leaf_data FROM tlog_hashes WHERE tenant_id = %s AND log = 'ledger' AND entry_id IS NOT NULL "
            "ORDER BY tree_size", (tenant,))]
    size = len(leaves)

    def read(indexes):
        return [stored[i] for i in indexes]

    root = tlog.tree_hash(size, read)
    tlog.check_record(tlog.prove_record(size, size - 1, read), size, root, size - 1, tlog.leaf_hash(leaves[-1]))
    return {"tenant": tenant, "chain_ok": report.ok, "chain_checked": report.checked, "tree_size": size,
            "root_matches_leaves": root == mth([tlog.leaf_hash(leaf) for leaf in leaves]),
            "appended_entry_proved": True}


def without_payloads(args: argparse.Namespace) -> None:
    """--without-payloads: the lists' matcher as before migration 0034 (the row documents' keys
    alone, no UNION ALL with payload_search's), in this process only (Logs runs in it): the same
    matches while evidence_payloads is empty, as in a bulk load. A diagnostic of the plan."""
    if args.without_payloads:
        from aos_evidence import queries

        queries.payload_keys = lambda *args, **kwargs: None


def measure(args: argparse.Namespace) -> dict[str, object]:
    import search

    without_payloads(args)
    data_dir = Path(args.data_dir).resolve()
    pg = server(data_dir)
    from scratch import service_logins

    logs = service_logins(pg.url, data_dir / "aos")["logs"]
    tenants = loaded_tenants(pg.url, bulk.tenant_ids(args.tenants))  # the callers: tenants with a ledger
    with psycopg.connect(libpq_url(pg.url), autocommit=True) as admin:
        volume = {table: admin.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in ("audit_ledger", "aos_trace_steps", "system_records", "platform_records",
                                "evidence_payloads")}
    result = asyncio.run(search.measure(logs, data_dir, tenants, args.ledger // args.tenants, args.queries,
                                        args.lists, text=True, seed=args.seed))
    return {"tenants_with_a_ledger": len(tenants), "rows": volume, "queries_per_class": args.queries, "seed": args.seed,
            "load_average": os.getloadavg(),
            "first_page_of_50": result, "bytes": search.index_sizes(pg.url)}


def explain(args: argparse.Namespace) -> dict[str, object]:
    """Every statement one SearchEvidence (or one ListAuditEntries with --list) runs for
    --tenant and --query, as the Logs login, with EXPLAIN (ANALYZE, BUFFERS): where the time goes.
    --without-payloads: the lists' matcher in its form before migration 0034, to compare plans."""
    from sqlalchemy import create_engine, event, text

    from aos_runtime.db import sync_url
    from scratch import service_logins
    from services.logs import search as search_service, store

    without_payloads(args)
    data_dir = Path(args.data_dir).resolve()
    pg = server(data_dir)
    engine = create_engine(sync_url(service_logins(pg.url, data_dir / "aos")["logs"]))
    seen: list[tuple[str, object]] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, params, context, many: seen.append((statement, params)))
    query, _ = search_service.normalise_query(args.query)
    out: dict[str, object] = {}
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": args.tenant})
        for attempt in range(2):  # the second: warm
            seen.clear()
            started = time.perf_counter()
            if args.list:
                page = store.list_audit_entries(conn, args.tenant, store.AuditFilters(search=query), None, 50)
            else:
                page = store.search_evidence(conn, args.tenant, store.SearchFilters(query=query), None, 50)
            out[f"call_{attempt}_ms"] = round((time.perf_counter() - started) * 1000, 1)
        out["total"], out["estimate"], out["hits"] = page.total, page.total_is_estimate, len(page.rows)
        statements = [(s, p) for s, p in seen if not s.lstrip().upper().startswith(("SELECT SET_CONFIG", "EXPLAIN"))]
        for i, (statement, params) in enumerate(statements):
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, SUMMARY) " + statement, params).scalars().all()
            out[f"statement_{i}"] = [statement.split()[:12], *plan]
    engine.dispose()
    return out


def retention_at_scale(args: argparse.Namespace) -> dict[str, object]:
    """bench/retention_apply.py's figures on the loaded cluster (destructive: run it last): the
    checkpoints recorded, then apply_policies at 2027-03-01 as a dry run (the checks alone)
    and for real (the drops through the checkpoint gate), wall time each."""
    from datetime import datetime, timezone

    data_dir = Path(args.data_dir).resolve()
    pg = server(data_dir)
    now = datetime(2027, 3, 1, tzinfo=timezone.utc)
    out: dict[str, object] = {}
    with psycopg.connect(libpq_url(pg.url), autocommit=True) as conn:
        timings: dict[str, float] = {}
        timed("record_checkpoints_s", timings, retention.record_checkpoints, conn)
        for label, dry in (("dry_run", True), ("apply", False)):
            started = time.perf_counter()
            outcomes = retention.apply_policies(conn, now, dry_run=dry)
            out[label] = {"wall_s": round(time.perf_counter() - started, 2), "tables": {
                o.table: {"dropped": len(o.dropped), "rows": sum(o.rows.values()), "kept": o.kept} for o in outcomes}}
        out["timings_s"] = timings
    return out


def finish_action(args: argparse.Namespace) -> dict[str, object]:
    pg = server(Path(args.data_dir).resolve())
    result = finish(pg.url, bulk.tenant_ids(args.tenants), {})
    pg.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("load", "finish", "measure", "explain", "retention", "stop"))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--ledger", type=int, default=10_000_000)
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--system", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=0, help="load: begin no tenant after this long")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--lists", action="store_true")
    parser.add_argument("--seed", type=int, default=25, help="measure: which random tenants and words")
    parser.add_argument("--tenant", default="bulk-00500", help="explain: as this tenant")
    parser.add_argument("--query", default="customer", help="explain: this query")
    parser.add_argument("--list", action="store_true", help="explain: ListAuditEntries' search")
    parser.add_argument("--without-payloads", action="store_true",
                        help="measure, explain: the lists' matcher without 0034's held-payload keys (a diagnostic)")
    args = parser.parse_args()
    random.seed(25)
    if args.action == "stop":
        EmbeddedPostgres(Path(args.data_dir).resolve(), durable=False, password="").stop()
        return 0
    result = {"load": load, "finish": finish_action, "measure": measure, "explain": explain,
              "retention": retention_at_scale}[args.action](args)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
