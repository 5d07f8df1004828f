"""A verification's own CPU per ledger entry, piece by piece, without a database (issue #22).

    PYTHONPATH=.:gen .venv/bin/python bench/ledger_entry_cost.py [--entries 20000] [--repeat 7]

Over a synthetic chain shaped like the bulk loader's (half the entries with a small after_state,
times in psycopg's Etc/UTC zone, whole seconds as bulk.py writes them; --micro adds microseconds),
the minimum of --repeat runs of time.process_time, in microseconds per entry:

  rfc3339 (isoformat)       the isoformat code rfc3339 had before
  rfc3339                   today's (orjson for UTC and naive times)
  content hash, general     hashing.stored_ledger_content_hash of a dict row (the path for any row;
                            with today's rfc3339 inside it)
  content hash, row         hashing.ledger_row_content_hash of a tuple in LEDGER_ROW_COLUMNS order
  feed, dict rows           ChainVerifier.feed per dict entry (what verify_ledger did per RowMapping,
                            less the RowMapping's own cost)
  feed_ledger_rows          ChainVerifier.feed_ledger_rows per batch of 5,000 tuples (what it does now)
"""
from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from aos_recording import hashing, verify


def _isoformat(value: datetime) -> str:
    if value.tzinfo is None:
        return value.isoformat(timespec="microseconds") + "Z"
    if value.utcoffset():
        value = value.astimezone(ZoneInfo("UTC"))
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def chain(n: int, micro: bool) -> list[dict]:
    start, prev, rows = datetime(2026, 1, 1, tzinfo=ZoneInfo("Etc/UTC")), hashing.GENESIS, []
    for i in range(1, n + 1):
        row = {"id": f"bulk-00001.aud-{i}", "tenant_id": "bulk-00001", "seq": i, "event_type": "RunCompleted",
               "entity_type": "RUN", "entity_id": f"bulk-00001.run-{i // 7}", "actor_type": "SYSTEM",
               "actor_id": f"actor-{i % 50}", "action_reason": None, "correlation_id": f"bulk-00001.run-{i // 7}",
               "created_at": start + timedelta(seconds=i, microseconds=(i * 7919) % 1_000_000 if micro else 0),
               "before_state": None, "after_state": {"n": i, "run_id": f"bulk-00001.run-{i // 7}"} if i % 2 else None,
               "hash_version": 1, "commitments": None}
        row["content_hash"] = hashing.ledger_content_hash(row)
        row["prev_hash"] = prev
        row["chain_hash"] = prev = hashing.chain_hash(prev, row["content_hash"])
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--micro", action="store_true", help="times with microseconds (bulk.py's are whole seconds)")
    args = parser.parse_args()
    rows = chain(args.entries, args.micro)
    tuples = [tuple(r[c] for c in hashing.LEDGER_ROW_COLUMNS) for r in rows]
    batches = [tuples[i:i + 5000] for i in range(0, len(tuples), 5000)]

    def feed() -> None:
        verifier = verify.ChainVerifier(verify.ledger_content_hash_of)
        for row in rows:
            verifier.feed(row)
        assert verifier.report.ok and verifier.report.checked == len(rows)

    def feed_rows() -> None:
        verifier = verify.ChainVerifier(verify.ledger_content_hash_of)
        for batch in batches:
            verifier.feed_ledger_rows(batch)
        assert verifier.report.ok and verifier.report.checked == len(rows)

    def each(call, items) -> None:  # results dropped as they come (a list of them would time the allocator)
        for item in items:
            call(item)

    times = [r["created_at"] for r in rows]
    cases = {
        "rfc3339 (isoformat)": lambda: each(_isoformat, times),
        "rfc3339": lambda: each(hashing.rfc3339, times),
        "content hash, general": lambda: each(hashing.stored_ledger_content_hash, rows),
        "content hash, row": lambda: each(hashing.ledger_row_content_hash, tuples),
        "feed, dict rows": feed,
        "feed_ledger_rows": feed_rows,
    }
    print(f"{args.entries:,} entries, min of {args.repeat}, load {os.getloadavg()[0]:.1f}")
    for name, run in cases.items():
        best = float("inf")
        for _ in range(args.repeat):
            cpu = time.process_time()
            run()
            best = min(best, time.process_time() - cpu)
        print(f"  {name:24s} {best / args.entries * 1e6:6.2f} us/entry")


if __name__ == "__main__":
    main()
