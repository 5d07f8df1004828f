"""Verification and export against reading the same rows, A/B across checkouts (issue #22, ratios 6 and 7).

    PYTHONPATH=.:gen:bench .venv/bin/python bench/export_verify_cost.py --entries 100000 --rounds 3 \\
        [--copy main=/path/to/a/clean/copy --copy branch=.]

suite_bench's items 6 and 7 at a volume the loaded machine allows, in-process and on one
database: bulk-loads one tenant's ledger (the suite's bulk loader), then, for each checkout
named by --copy (default: this one), runs a child process with that checkout's code first on
its path, which times on the same rows

  read       store.iter_ledger (what ratios 6 and 7 divide by: SQLAlchemy RowMappings, text protocol)
  read_rows  the same entries through psycopg directly, tuples in binary, keyset batches of 5,000
             (the leanest way this process reads them, and the reader verify_ledger uses since
             issue #22's h-verify; defined here, so every checkout is measured with the same one)
  read_dicts the same entries as main's audit slice export read them before issue #22's h-export
             (dicts through a named psycopg cursor, binary, fetchmany batches of 1,000; these
             columns); since h-export the export reads them as tuples, as read_rows does
  verify   verify.verify_ledger (ratio 7)
  export   builder.render of an AUDIT_SLICE (EVIDENCE) in JSON and in CSV to a sink that only
           counts and hashes (ratio 6 without the gRPC call and the chunk inserts)

each as wall and CPU seconds of the child. Ratios: each step's rate ÷ read's (``ratios``, what
suite_bench's items 6 and 7 are), ÷ read_rows' (``ratios_to_read_rows``: verification's own reader,
and the export's since h-export) and ÷ read_dicts' (``ratios_to_read_dicts``: the export's reader
before h-export). Rounds alternate between the checkouts, so the
machine's load falls on both alike. The artifacts' SHA-256 must be equal across checkouts
(the run stops otherwise): the same rows give the same bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


LEDGER_COLUMNS = ("seq, content_hash, prev_hash, chain_hash, hash_version, commitments, id, tenant_id, event_type, "
                  "entity_type, entity_id, actor_type, actor_id, action_reason, correlation_id, created_at, "
                  "before_state, after_state")


def _read_rows(conn, tenant: str, entries: int, batch: int = 5000) -> int:
    """The ledger's entries 1..entries as tuples through psycopg in binary, keyset batches."""
    driver, after, count = conn.connection.driver_connection, 0, 0
    with driver.cursor(binary=True) as cursor:
        while True:
            cursor.execute(f"SELECT {LEDGER_COLUMNS} FROM audit_ledger WHERE tenant_id = %(t)s AND seq > %(a)s "
                           "AND seq <= %(to)s ORDER BY seq LIMIT %(n)s", {"t": tenant, "a": after, "to": entries,
                                                                         "n": batch})
            rows = cursor.fetchall()
            count += len(rows)
            if len(rows) < batch:
                return count
            after = rows[-1][0]


def _read_dicts(conn, tenant: str, entries: int, batch: int = 1000) -> int:
    """The ledger's entries 1..entries as an audit slice export reads them: dicts through a named
    (server-side) cursor in binary, fetchmany batches."""
    from psycopg.rows import dict_row

    driver, count = conn.connection.driver_connection, 0
    with driver.cursor(name="bench_read_dicts", row_factory=dict_row, binary=True) as cursor:
        cursor.execute(f"SELECT {LEDGER_COLUMNS} FROM audit_ledger WHERE tenant_id = %(t)s AND seq <= %(to)s "
                       "ORDER BY seq", {"t": tenant, "to": entries})
        while True:
            rows = cursor.fetchmany(batch)
            count += len(rows)
            if len(rows) < batch:
                return count


def child(producer_url: str, tenant: str, entries: int, formats: list[str]) -> dict:
    """Runs in the checkout under test (its code first on sys.path)."""
    from aos_evidence.kinds import BundleType, ExportFormat, ExportScope
    from aos_recording import dsse, store, verify
    from aos_recording.writers import Producer
    from services.export import artifacts, builder

    out: dict = {}

    def timed(name: str, run) -> object:
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        out[name] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
        return result

    producer = Producer(producer_url, pool_size=1)
    key = dsse.SigningKey.generate()
    try:
        with producer.transaction(tenant) as conn:
            rows = timed("read", lambda: sum(1 for _ in store.iter_ledger(conn, tenant, to_seq=entries)))
            lean = timed("read_rows", lambda: _read_rows(conn, tenant, entries))
            if lean != rows:
                raise SystemExit(f"read {rows} rows, read_rows {lean}")
            dicts = timed("read_dicts", lambda: _read_dicts(conn, tenant, entries))
            if dicts != rows:
                raise SystemExit(f"read {rows} rows, read_dicts {dicts}")
            report = timed("verify", lambda: verify.verify_ledger(conn, tenant, to_seq=entries))
            if rows != entries or not report.ok or report.checked != entries:
                raise SystemExit(f"read {rows}, verified {report.checked} ok={report.ok}, expected {entries}")
            for fmt in formats:
                plan = builder.Plan(tenant_id=tenant, scope=ExportScope.AUDIT_SLICE, bundle_type=BundleType.EVIDENCE,
                                    format=ExportFormat[fmt])
                sink = artifacts.Sink(lambda n, data: None)
                rendered = timed(f"export_{fmt}", lambda plan=plan, sink=sink: builder.render(conn, plan, key, sink,
                                                                                            {"max_seq": entries}))
                out[f"export_{fmt}"].update(checksum=rendered.checksum.hex(), size=rendered.size,
                                            records=rendered.records)
    finally:
        producer.close()
    return out


READERS = ("read", "read_rows", "read_dicts")


def _ratios(med: dict, reader: str) -> dict:
    """Each step's rate ÷ ``reader``'s (the reader's seconds ÷ the step's), wall and CPU."""
    base = med[reader]
    return {step: {"wall": round(base["wall_s"] / v["wall_s"], 3), "cpu": round(base["cpu_s"] / v["cpu_s"], 3)}
            for step, v in med.items() if step not in READERS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--formats", default="JSON,CSV")
    parser.add_argument("--copy", action="append", default=[], metavar="NAME=PATH",
                        help="a checkout to measure (repeatable; default: this one)")
    parser.add_argument("--child", nargs=3, metavar=("URL", "TENANT", "ENTRIES"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--keep", type=Path, help="keep the loaded database in this directory (a later run "
                                                  "with the same --keep and --entries reuses it)")
    args = parser.parse_args()
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]), formats)))
        return

    from aos_recording import bulk
    from scratch import scratch_database, service_logins

    copies = dict(c.split("=", 1) for c in args.copy) or {"this": str(BENCH.parent)}
    results: dict[str, list[dict]] = {name: [] for name in copies}
    load_before = os.getloadavg()
    with scratch_database("aos-bench-exv-", keep=args.keep) as (url, work):
        tenant = bulk.tenant_ids(1)[0]
        loaded = work / f"loaded-{args.entries}"
        if not loaded.exists():
            bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
            loaded.write_text("bulk-loaded\n")
        producer_url = service_logins(url, work / "aos")["producer"]
        for n in range(args.rounds):
            for name, path in (copies.items() if n % 2 == 0 else reversed(copies.items())):
                root = Path(path).resolve()
                env = {**os.environ, "PYTHONPATH": f"{root}:{root / 'gen'}:{BENCH}"}
                done = subprocess.run([sys.executable, str(BENCH / "export_verify_cost.py"), "--formats", args.formats,
                                       "--child", producer_url, tenant, str(args.entries)],
                                      cwd=root, env=env, capture_output=True, text=True, check=False)
                if done.returncode:
                    raise SystemExit(f"{name}: {done.stderr[-3000:]}")
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                results[name].append(figures)
                print(f"round {n + 1} {name} (load {os.getloadavg()[0]:.1f}): " + ", ".join(
                    f"{k} {v['wall_s']:.2f}s/{v['cpu_s']:.2f}cpu" for k, v in figures.items()), file=sys.stderr)
    digests = {(name, fmt): {r[f"export_{fmt}"]["checksum"] for r in runs} for name, runs in results.items()
               for fmt in formats}
    for fmt in formats:
        found = set().union(*(digests[(name, fmt)] for name in copies))
        if len(found) != 1:
            raise SystemExit(f"export {fmt}: the checkouts' artifacts differ: {digests}")
    summary = {"entries": args.entries, "rounds": args.rounds, "load_average_before": load_before,
               "load_average": os.getloadavg(), "copies": {}}
    for name, runs in results.items():
        med = {step: {k: statistics.median(r[step][k] for r in runs) for k in ("wall_s", "cpu_s")} for step in runs[0]}
        summary["copies"][name] = {
            "median": med,
            "ratios": _ratios(med, "read"),
            "ratios_to_read_rows": _ratios(med, "read_rows"),
            "ratios_to_read_dicts": _ratios(med, "read_dicts"),
            "artifact_sha256": {fmt: runs[0][f"export_{fmt}"]["checksum"] for fmt in formats}}
    text = json.dumps(summary, indent=2)
    print(text)
    for name, figures in summary["copies"].items():  # the ratios the targets are about, CPU
        r, rows, dicts = figures["ratios"], figures["ratios_to_read_rows"], figures["ratios_to_read_dicts"]
        exports = "; ".join(f"export {fmt} ÷ read {r[f'export_{fmt}']['cpu']}×, ÷ read_rows "
                            f"{rows[f'export_{fmt}']['cpu']}×, ÷ read_dicts {dicts[f'export_{fmt}']['cpu']}×"
                            for fmt in formats)
        print(f"{name}: verify ÷ read {r['verify']['cpu']}×, ÷ read_rows (its reader) {rows['verify']['cpu']}×; "
              f"{exports} (CPU, medians)", file=sys.stderr)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
