"""One proof for a set of records (tlog.prove_records / check_records): it verifies exactly when
every proved leaf is in the tree, every hash of it matters, and the standard RFC 9162 audit
path of each leaf derived from it is Go's (prove_record) and verifies with aics-tlog."""
import random

import pytest
from aics_tlog import tree as aics_tree

from aos_recording import tlog


class Log:
    def __init__(self, leaves):
        self.leaves = list(leaves)
        self.hashes = tlog.append_hashes(0, [tlog.leaf_hash(d) for d in self.leaves], lambda ix: [])
        self.reads = 0

    def read(self, indexes):
        self.reads += 1
        return [self.hashes[i] for i in indexes]


def subsets(rng, n):
    yield [0]
    yield [n - 1]
    yield list(range(n))
    yield list(range(n // 3, n // 3 + max(1, n // 4)))
    yield sorted(rng.sample(range(n), min(n, 5)))
    yield sorted(rng.sample(range(n), max(1, n // 2)))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 100, 257, 1000])
def test_records_proofs_verify_and_give_go_s_audit_paths(size):
    rng = random.Random(size)
    log = Log(rng.randbytes(32) for _ in range(size))
    root = tlog.tree_hash(size, log.read)
    for indexes in subsets(rng, size):
        log.reads = 0
        proof = tlog.prove_records(indexes, size, log.read)
        assert log.reads <= 1  # one read of the stored hashes
        known = tlog.check_records(proof, size, root, {i: tlog.leaf_hash(log.leaves[i]) for i in indexes})
        for i in indexes[:20]:
            path = tlog.record_audit_path(known, size, i)
            assert path == tlog.prove_record(size, i, log.read)
            assert aics_tree.verify_leaf_inclusion(log.leaves[i], i, size, path, root)


def test_a_range_costs_about_two_paths_and_scattered_leaves_k_log_n_over_k():
    size = 100_000
    rng = random.Random(7)
    log = Log(rng.randbytes(32) for _ in range(size))
    assert len(tlog.prove_records(range(20_000, 60_000), size, log.read)) <= 2 * 17
    assert len(tlog.prove_records(range(size), size, log.read)) == 0
    scattered = rng.sample(range(size), 100)
    assert len(tlog.prove_records(scattered, size, log.read)) <= 100 * 10 + 100


def test_every_hash_leaf_and_root_matters():
    size = 77
    rng = random.Random(3)
    log = Log(rng.randbytes(32) for _ in range(size))
    root = tlog.tree_hash(size, log.read)
    indexes = [3, 4, 40, 76]
    leaves = {i: tlog.leaf_hash(log.leaves[i]) for i in indexes}
    proof = tlog.prove_records(indexes, size, log.read)
    tlog.check_records(proof, size, root, leaves)

    def refused(*args):
        with pytest.raises(tlog.ProofError):
            tlog.check_records(*args)

    for at in range(len(proof)):
        for bit in (0, 7):
            bad = list(proof)
            bad[at] = bytes([bad[at][0] ^ (1 << bit)]) + bad[at][1:]
            refused(bad, size, root, leaves)
    for i in indexes:
        refused(proof, size, root, {**leaves, i: tlog.leaf_hash(b"another entry")})
    refused(proof, size, bytes(32), leaves)
    refused(proof[:-1], size, root, leaves)
    refused([*proof, proof[0]], size, root, leaves)
    refused(proof, size + 1, root, leaves)
    refused(proof, size, root, {**leaves, 5: tlog.leaf_hash(log.leaves[5])})  # a leaf the proof is not for
    refused(proof, size, root, {**leaves, size: tlog.leaf_hash(b"x")})        # outside the tree
    refused(proof, 0, root, leaves)


def test_an_increasing_array_of_indexes_is_proved_in_place_with_the_same_proof():
    """Issue #19: an export proves its 200,000 entries at its end; as an array('q') in seq order
    they are read in place (8 bytes each) instead of becoming a sorted list of a set of ints."""
    import array
    import tracemalloc

    rng = random.Random(7)
    size = 1000
    log = Log(rng.randbytes(32) for _ in range(size))
    for indexes in subsets(rng, size):
        assert tlog.prove_records(array.array("q", indexes), size, log.read) == tlog.prove_records(
            list(indexes), size, log.read)
    # Not increasing (or repeated): sorted and deduplicated as any other iterable.
    assert tlog.prove_records(array.array("q", [5, 3, 3]), size, log.read) == tlog.prove_records([3, 5], size,
                                                                                                  log.read)
    n = 200_000
    big = array.array("q", range(n))

    def peak(indexes) -> int:
        tracemalloc.start()
        try:
            tlog.prove_records(indexes, n, lambda ix: [b"\0" * 32 for _ in ix])
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    in_place, as_list = peak(big), peak(list(big))
    assert in_place < 100_000 and as_list > 5_000_000, (in_place, as_list)  # measured: ~1 KB, ~12 MB
