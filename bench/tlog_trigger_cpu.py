"""The tree trigger's database CPU per appended row (issue #20): PostgreSQL backend CPU
(/proc, user + system), robust to a shared machine's load where wall time is not.

    .venv/bin/python bench/tlog_trigger_cpu.py [--entries 5000] [--rounds 4] [--urls FILE]

In each round, per variant: one INSERT … SELECT of --entries ledger entries of a fresh tenant
as the admin, with the tree trigger (audit_ledger_tlog) and with it disabled (another fresh
tenant), the backend's CPU read before and after each. Variants: ``head`` (the trigger
functions as migrated) and ``empty`` (the same functions, SECURITY DEFINER and SET clauses,
with an empty body: what calling the trigger costs by itself); the order alternates by
round, and the head functions are put back at the end. On a scratch database (embedded,
non-durable, or DATABASE_URL), or ``--urls``: a JSON file {"url": admin URL} of a database
already loaded (e.g. by bench/tlog.py's load_without_tree), next to whose tenants the rows go.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import psycopg

from aos_runtime.db import libpq_url
from scratch import scratch_database
from tlog import cpu_s
from tlog_trigger import INSERT

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


def _functions() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("m0018", MIGRATIONS / "0018_tlog_lookups.py")
    m0018 = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(m0018)  # type: ignore[union-attr]
    return {"empty": m0018.functions("    unused integer;", "    RETURN{nothing};")}


@contextmanager
def database(urls: Path | None):
    if urls:
        yield json.loads(urls.read_text())["url"]
        return
    with scratch_database(prefix="aos-bench-tlog-trigger-cpu-") as (url, _work):
        yield url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--urls", type=Path)
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    cpu: dict[str, dict[str, float]] = {}
    with database(args.urls) as url, psycopg.connect(libpq_url(url), autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        # the head functions' definitions, to put back (pg_get_functiondef: exactly as migrated)
        head = {name: conn.execute("SELECT pg_get_functiondef(%s::regprocedure)", (name,)).fetchone()[0]  # type: ignore[index]
                for name in ("aos_tlog_append()",
                             "aos_tlog_add(text, text, bigint, text, bytea, timestamptz, timestamptz)")}
        variants = {"head": ";\n".join(head.values()), **_functions()}

        def insert(tree: bool) -> float:
            tenant = f"bench-{uuid.uuid4().hex[:8]}"
            conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant, tenant))
            if not tree:
                conn.execute("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_tlog")
            try:
                before = cpu_s([pid])
                conn.execute(INSERT, (f"{tenant}-", tenant, args.entries))
                return cpu_s([pid]) - before
            finally:
                if not tree:
                    conn.execute("ALTER TABLE audit_ledger ENABLE ALWAYS TRIGGER audit_ledger_tlog")

        try:
            for r in range(args.rounds):
                for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                    conn.execute(variants[name])
                    insert(True)  # warm-up, untimed
                    for tree in (False, True):
                        key = "with_tree" if tree else "without_tree"
                        cpu.setdefault(name, {"with_tree": 0.0, "without_tree": 0.0})[key] += insert(tree)
        finally:
            conn.execute(variants["head"])
    rows = args.entries * args.rounds
    report = {name: {"cpu_us_per_row_with_tree": round(v["with_tree"] / rows * 1e6, 1),
                     "cpu_us_per_row_without_tree": round(v["without_tree"] / rows * 1e6, 1),
                     "tree_cpu_us_per_row": round((v["with_tree"] - v["without_tree"]) / rows * 1e6, 1)}
              for name, v in cpu.items()}
    print(json.dumps({"entries_per_insert": args.entries, "rounds": args.rounds, **report,
                      "load_average_before": load_before,
                      "load_average_after": [round(x, 2) for x in os.getloadavg()]}, indent=2))


if __name__ == "__main__":
    main()
