"""An inclusion proof's database work, before and after issue #20's remainder, interleaved call by call.

    .venv/bin/python bench/tlog_proof_queries.py [ENTRIES] [analyze]

On a scratch database (embedded, or DATABASE_URL: give it one of its own) with one bulk-loaded
tenant of ENTRIES (50,000) entries: "old" runs the statements GetInclusionProof ran before
(the size; the stored hashes by hash_index = ANY(...); the kept DSSE checkpoint: three),
"new" what it runs now (services.logs.store.tlog_resolve and tlog_rows: two), 600 times
each for random seqs, alternating which goes first; p50 / p90 / p99 after 50 warm-up calls.
The transaction's scope statement (both) is not timed. Prints the old query's plan last.
"""
from __future__ import annotations

import random
import sys
import time

import psycopg
from sqlalchemy import create_engine, text

from aos_recording import bulk, tlog
from aos_runtime.db import libpq_url
from scratch import scratch_database, service_logins
from services.logs import store

OLD_ROWS = text("SELECT hash_index, hash, tree_size, entry_id, leaf_data, created_at, recorded_at FROM tlog_hashes "
                "WHERE tenant_id = :t AND log = :log AND hash_index = ANY(:idx)")
OLD_CKPT = text("SELECT tenant_id, seq, chain_hash, envelope, recorded_at FROM ledger_checkpoints "
                "WHERE tenant_id = :t AND kind = 'CHECKPOINT' AND seq = :seq AND envelope IS NOT NULL")


def indexes(size: int, seq: int) -> list[int]:
    return sorted({tlog.stored_hash_index(0, seq - 1), *tlog.record_proof_indexes(size, seq - 1),
                   *tlog.tree_hash_indexes(size)})


def old(conn, tenant: str, seq: int) -> None:
    size = store.tlog_size(conn, tenant)
    idx = indexes(size, seq)
    rows = conn.execute(OLD_ROWS, {"t": tenant, "log": "ledger", "idx": idx}).mappings().all()
    conn.execute(OLD_CKPT, {"t": tenant, "seq": size}).first()
    assert len(rows) == len(idx)


def new(conn, tenant: str, seq: int) -> None:
    size = store.tlog_resolve(conn, tenant, "ledger", None, 0)["current"]
    idx = indexes(size, seq)
    assert len(store.tlog_rows(conn, tenant, idx)) == len(idx)


def main() -> None:
    entries = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    with scratch_database(prefix="aos-bench-proof-queries-") as (url, work):
        bulk.load(url, bulk.Volume(tenants=1, ledger=entries, traces=0, steps=0, system=0))
        if len(sys.argv) > 2 and sys.argv[2] == "analyze":
            with psycopg.connect(libpq_url(url), autocommit=True) as c:
                c.execute("ANALYZE tlog_hashes")
        logins = service_logins(url, work / "aos")
        engine = create_engine(logins["logs"].replace("postgresql://", "postgresql+psycopg://"))
        (tenant,) = bulk.tenant_ids(1)
        rng = random.Random(7)
        times: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(600):
            seq = rng.randint(1, entries)
            for name, job in (("old", old), ("new", new)) if i % 2 else (("new", new), ("old", old)):
                with engine.begin() as conn:
                    conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
                    started = time.perf_counter()
                    job(conn, tenant, seq)
                    times[name].append((time.perf_counter() - started) * 1000)
        for name, measured in times.items():
            t = sorted(measured[50:])
            print(f"{name}: p50 {t[len(t) // 2]:.2f} ms  p90 {t[int(len(t) * .9)]:.2f} ms  "
                  f"p99 {t[int(len(t) * .99)]:.2f} ms")
        with engine.begin() as conn:
            conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
            for row in conn.execute(text("EXPLAIN ANALYZE " + OLD_ROWS.text),
                                    {"t": tenant, "log": "ledger", "idx": indexes(entries, 1235)}):
                print("  ", row[0])
        engine.dispose()


if __name__ == "__main__":
    main()
