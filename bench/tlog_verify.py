"""What verifying one ledger entry offline costs with the transparency log (issue #20).

    .venv/bin/python bench/tlog_verify.py [--size 10000000] [--samples 2000]

An auditor holding a checkpoint (size t, root) verifies an entry with its inclusion
proof (aos_recording.tlog.check_record), and a newer checkpoint with a consistency proof
(check_tree). Both cost O(log t) hashes whatever the log holds, so no tree is built: for
a random leaf of a log of --size entries, a proof of the right shape is drawn at random
(prove_record over a reader that answers random hashes) and the root it implies computed
with RFC 9162's pseudocode; check_record must then accept it, which is the work timed.
Consistency proofs likewise, from a random older size. Prints p50/p99 in microseconds
and the proof sizes in bytes. Pure CPU, one core, no database: the service's cost (the
SQL read of the stored hashes) is measured elsewhere.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aos_recording import tlog


def implied_root(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2's root for an audit path (any path of the right length)."""
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if fn & 1 or fn == sn:
            r = tlog.node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = tlog.node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r


def implied_roots(first: int, second: int, path: list[bytes]) -> tuple[bytes, bytes]:
    """RFC 9162 §2.1.4.2's (old root, new root) for a consistency path (0 < first < second)."""
    if first & (first - 1) == 0:  # a power of two: the old root is the path's implicit first hash
        path = [random.Random(first).randbytes(32)] + path
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if fn & 1 or fn == sn:
            fr, sr = tlog.node_hash(c, fr), tlog.node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = tlog.node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr, sr


def random_reader(rng: random.Random):
    """A HashReader answering random hashes: proofs of the right shape for any size."""
    return lambda indexes: [rng.randbytes(32) for _ in indexes]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(20)
    size = args.size

    inclusion, inclusion_bytes = [], []
    consistency, consistency_bytes = [], []
    for _ in range(args.samples):
        index = rng.randrange(size)
        leaf = tlog.leaf_hash(rng.randbytes(32))
        path = tlog.prove_record(size, index, random_reader(rng))
        root = implied_root(index, size, leaf, path)
        start = time.perf_counter()
        tlog.check_record(path, size, root, index, leaf)
        inclusion.append((time.perf_counter() - start) * 1e6)
        inclusion_bytes.append(32 * len(path))

        old = rng.randrange(1, size)
        proof = tlog.prove_tree(size, old, random_reader(rng))
        old_root, new_root = implied_roots(old, size, proof)
        start = time.perf_counter()
        tlog.check_tree(proof, size, new_root, old, old_root)
        consistency.append((time.perf_counter() - start) * 1e6)
        consistency_bytes.append(32 * len(proof))

    print(f"check_record at size {size:,}: p50 {percentile(inclusion, 50):.1f} µs, "
          f"p99 {percentile(inclusion, 99):.1f} µs; proof {min(inclusion_bytes)}–{max(inclusion_bytes)} bytes "
          f"(32·log2 n = {32 * (size - 1).bit_length()})")
    print(f"check_tree to size {size:,}: p50 {percentile(consistency, 50):.1f} µs, "
          f"p99 {percentile(consistency, 99):.1f} µs; proof {min(consistency_bytes)}–{max(consistency_bytes)} bytes")


if __name__ == "__main__":
    main()
