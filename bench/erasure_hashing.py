"""CPU time per ledger content hash, format 1 vs format 2 (docs/ERASURE.md): what committing the
payloads (three salts from the CSPRNG, three extra SHA-256 over JCS) adds to each write.

    .venv/bin/python bench/erasure_hashing.py [--n 20000]

Reports process CPU time per call (robust on a shared, loaded machine), best of 5 rounds."""
from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone

from aos_recording import hashing

ENTRY = {"id": "aud_0123456789abcdef", "tenant_id": "tenant-demo", "event_type": "LimitUpdated",
         "entity_type": "LIMIT", "entity_id": "lim-1", "actor_type": "HUMAN", "actor_id": "user-7",
         "action_reason": "raised after review with the customer", "correlation_id": "run-1",
         "created_at": datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc),
         "before_state": {"max_value": 100, "owner": "subject-42", "tags": ["a", "b"]},
         "after_state": {"max_value": 500, "owner": "subject-42", "tags": ["a", "b"]}}


def v1() -> bytes:
    return hashing.ledger_content_hash(ENTRY)


def v2() -> bytes:
    commitments, _ = hashing.commit_payloads(ENTRY, hashing.LEDGER_PAYLOAD_FIELDS)
    return hashing.ledger_content_hash_v2(ENTRY, commitments)


def cpu_per_call(fn, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - start) / n)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    n = parser.parse_args().n
    a, b = cpu_per_call(v1, n), cpu_per_call(v2, n)
    print(f"format 1: {a * 1e6:.1f} µs CPU per entry hash")
    print(f"format 2: {b * 1e6:.1f} µs CPU per entry hash (commitments included), ×{b / a:.2f}")


if __name__ == "__main__":
    main()
