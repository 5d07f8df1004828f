"""CPU of a list call's paging work per call (issue #22): ``Listing.of`` (the filters sealed and
their token scope), reading a first page's (empty) token and issuing the next one.

    PYTHONPATH=.:gen .venv/bin/python bench/listing_cost.py [--calls 20000] [--repeat 5]

Best of --repeat rounds of --calls, in microseconds; run it in two checkouts to compare.
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone

from aos_runtime.keyset import Page
from aos_runtime.pagination import Listing, PageTokens
from services.logs import store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tokens = PageTokens(b"k" * 32)
    filters = store.AuditFilters()
    row = {"created_at": datetime(2026, 12, 7, tzinfo=timezone.utc), "id": "aud-0123456789"}
    page = Page(rows=[row] * 51, has_more=True, total=20_000, total_is_estimate=False)

    def one() -> None:
        listing = Listing.of(tokens, "tenant-0001", "audit", filters)
        listing.after("")
        listing.next_token(page)

    rounds = []
    for _ in range(args.repeat):
        started = time.process_time()
        for _ in range(args.calls):
            one()
        rounds.append((time.process_time() - started) / args.calls * 1e6)
    print(json.dumps({"us_per_call_best": round(min(rounds), 2), "rounds": [round(r, 2) for r in rounds]}))


if __name__ == "__main__":
    main()
