"""The ledger's transparency log: an RFC 6962 / RFC 9162 Merkle tree and its proofs.

A port of Go's ``golang.org/x/mod/sumdb/tlog`` (tlog.go; BSD-3-Clause, The Go Authors),
the module checksum database's log, whose proofs are those of Certificate Transparency:

- hashes (RFC 6962 §2.1): a leaf's hash is SHA-256(0x00 ‖ data), an interior node's
  SHA-256(0x01 ‖ left ‖ right), the empty tree's SHA-256("");
- the *stored hash* layout (Crosby & Wallach, "Efficient Data Structures for
  Tamper-Evident Logging", §3.3): every hash of a complete subtree has a dense index
  (``stored_hash_index(level, n)``); appending record ``n`` stores ``stored_hashes(n, …)``
  (on average just under two hashes) at ``stored_hash_index(0, n)`` onwards, so the
  stored hashes of a log of ``n`` records are exactly indexes ``0 ≤ i <
  stored_hash_count(n)``, written once, never rewritten;
- tree hashes, inclusion proofs ("audit paths") and consistency proofs computed from
  O(log n) stored hashes, read with one call of a ``HashReader`` (one SQL query for a
  server); the proofs are RFC 9162 §2.1.3 / §2.1.4 proofs, byte for byte what Go's
  ``tlog.ProveRecord`` / ``tlog.ProveTree``, transparency-dev/merkle and CT logs serve;
- verification (``check_record`` / ``check_tree``) with no storage at all: what an
  auditor runs offline.

Records are numbered from 0 here as in Go and RFC 9162 (the ledger's leaf index is
``seq - 1``; SPEC §5). Sizes and indexes are Python ints (no 63-bit limit, but the
arithmetic is Go's). Nothing here imports the server: an auditor runs it alone.
"""
from __future__ import annotations

import array
import bisect
import hashlib
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence

HASH_SIZE = 32
MAX_SIZE = (1 << 63) - 1  # Go's int64 sizes; a verifier refuses larger ones before any work
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 6962 §2.1: the hash of the empty tree

# Stored-hash indexes -> their hashes, in the same order (Go's HashReader.ReadHashes).
HashReader = Callable[[Sequence[int]], Sequence[bytes]]


class ProofError(ValueError):
    """A proof, a root or a hash does not verify (or is malformed: a hash not 32 bytes,
    sizes out of range). Anything an untrusted party sends that fails lands here."""


class HashReaderError(RuntimeError):
    """The ``HashReader`` answered something other than one 32-byte hash per index asked:
    storage is missing hashes (or holds corrupt ones). A fault of the store, not of a caller."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash, SHA-256(0x00 ‖ data) (Go ``RecordHash``)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash, SHA-256(0x01 ‖ left ‖ right) (Go ``NodeHash``)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _maxpow2(n: int) -> tuple[int, int]:
    """(k, l): k = 2**l, the largest power of two smaller than ``n`` (n ≥ 2; Go ``maxpow2``)."""
    level = (n - 1).bit_length() - 1
    if level < 0:
        level = 0
    return 1 << level, level


def _trailing_zeros(n: int) -> int:
    """Trailing zero bits of ``n`` > 0."""
    return (n & -n).bit_length() - 1


# --- the stored-hash layout -------------------------------------------------------------------

def stored_hash_index(level: int, n: int) -> int:
    """The dense storage index of the ``n``-th hash at ``level`` (Go ``StoredHashIndex``).

    Level L's n-th hash is stored right after level L+1's (2n+1)-th; level 0's n-th hash
    at n + n/2 + n/4 + … (plus the level)."""
    if level < 0 or n < 0:
        raise ValueError(f"stored_hash_index({level}, {n}): level and n must be ≥ 0")
    n = ((n + 1) << level) - 1  # level times n := 2n + 1
    # Go sums n + n/2 + n/4 + … in a loop; the sum of n >> i over all i is 2n - popcount(n)
    # (each 1 bit at position j contributes 2^(j+1) - 1). Closed form: a proof computes
    # tens of these (bench/profile_tlog.py).
    return 2 * n - n.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The (level, n) whose ``stored_hash_index`` is ``index`` (Go ``SplitStoredHashIndex``)."""
    if index < 0:
        raise ValueError(f"split_stored_hash_index({index}): index must be ≥ 0")
    # stored_hash_index(0, n) < 2n, so the record that stored ``index`` is in
    # [index/2, index/2 + log2(index)].
    n = index // 2
    index_n = stored_hash_index(0, n)
    while True:
        # Record n stores 1 + trailing_zeros(n + 1) hashes.
        following = index_n + 1 + _trailing_zeros(n + 1)
        if following > index:
            break
        n += 1
        index_n = following
    # The hash was stored with record n: it is one of (0, n), (1, n/2), (2, n/4), …
    level = index - index_n
    return level, n >> level


def stored_hash_count(n: int) -> int:
    """How many hashes a log of ``n`` records stores (Go ``StoredHashCount``)."""
    if n < 0:
        raise ValueError(f"stored_hash_count({n}): n must be ≥ 0")
    if n == 0:
        return 0
    count = stored_hash_index(0, n - 1) + 1  # up to the last leaf hash
    i = n - 1
    while i & 1:  # and the subtrees that leaf completed
        count += 1
        i >>= 1
    return count


def _read(read: HashReader, indexes: Sequence[int]) -> list[bytes]:
    hashes = list(read(indexes))
    if len(hashes) != len(indexes):
        raise HashReaderError(f"read({len(indexes)} indexes) returned {len(hashes)} hashes")
    for index, h in zip(indexes, hashes, strict=True):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise HashReaderError(f"read returned no {HASH_SIZE}-byte hash for stored index {index}")
    return hashes


def stored_hashes_indexes(n: int) -> list[int]:
    """The stored indexes ``stored_hashes(n, …)`` reads (ascending; empty when n is even)."""
    if n < 0:
        raise ValueError(f"stored_hashes_indexes({n}): n must be ≥ 0")
    m = _trailing_zeros(n + 1)
    # Each trailing 1 bit of n completes a subtree and consumes the hash of its left sibling.
    return [stored_hash_index(i, (n >> i) - 1) for i in reversed(range(m))]


def stored_hashes(n: int, data: bytes, read: HashReader) -> list[bytes]:
    """The hashes to store when appending record ``n`` with leaf data ``data``
    (Go ``StoredHashes``), to be stored from ``stored_hash_index(0, n)`` on.

    At most 1 + log2(n) hashes; reads the ≤ log2(n) earlier subtree hashes it needs with at
    most one call of ``read``."""
    return stored_hashes_for_leaf_hash(n, leaf_hash(data), read)


def stored_hashes_for_leaf_hash(n: int, record_hash: bytes, read: HashReader) -> list[bytes]:
    """``stored_hashes`` given ``leaf_hash(data)`` instead of the data (Go ``StoredHashesForRecordHash``)."""
    _check_hash_arg(record_hash)
    indexes = stored_hashes_indexes(n)
    old = _read(read, indexes) if indexes else []
    hashes = [record_hash]
    h = record_hash
    for left in reversed(old):
        h = node_hash(left, h)
        hashes.append(h)
    return hashes


def append_hashes(n: int, record_hashes: Iterable[bytes], read: HashReader) -> list[bytes]:
    """The hashes to store when appending records ``n``, ``n + 1``, … (their leaf hashes in
    order) to a log of ``n`` records, concatenated in storage order from
    ``stored_hash_index(0, n)`` on: the same hashes as ``stored_hashes`` called record by
    record, but with one ``read`` of the ≤ log2(n) + 1 roots ``tree_hash_indexes(n)`` names
    for the whole batch (a batch insert's one query), whatever the batch's length."""
    if n < 0:
        raise ValueError(f"append_hashes({n}): n must be ≥ 0")
    # The complete subtrees covering records [0, n), left to right (levels decreasing):
    # the only earlier hashes any append from n on combines with.
    indexes = tree_hash_indexes(n)
    roots = _read(read, indexes) if indexes else []
    stack = [(split_stored_hash_index(i)[0], h) for i, h in zip(indexes, roots, strict=True)]
    out: list[bytes] = []
    for record_hash in record_hashes:
        _check_hash_arg(record_hash)
        h, level = record_hash, 0
        out.append(h)
        while stack and stack[-1][0] == level:
            h = node_hash(stack.pop()[1], h)
            level += 1
            out.append(h)
        stack.append((level, h))
    return out


# --- tree hashes and proofs, from stored hashes -----------------------------------------------

def _sub_tree_index(lo: int, hi: int, need: list[int]) -> list[int]:
    """Append the stored indexes needed for the hash of records [lo, hi) (Go ``subTreeIndex``)."""
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        if lo & (k - 1):
            raise AssertionError("tlog: bad math in _sub_tree_index")
        need.append(stored_hash_index(level, lo >> level))
        lo += k
    return need


def _sub_tree_hash(lo: int, hi: int, hashes: list[bytes], at: int) -> tuple[bytes, int]:
    """The hash of records [lo, hi) from ``hashes[at:]`` as ``_sub_tree_index`` listed them;
    returns it and the position after the hashes used (Go ``subTreeHash``)."""
    num_tree = 0
    while lo < hi:
        k, _ = _maxpow2(hi - lo + 1)
        if lo & (k - 1):
            raise AssertionError("tlog: bad math in _sub_tree_hash")
        num_tree += 1
        lo += k
    if len(hashes) - at < num_tree or num_tree == 0:
        raise AssertionError("tlog: bad index math in _sub_tree_hash")
    h = hashes[at + num_tree - 1]
    for i in range(num_tree - 2, -1, -1):
        h = node_hash(hashes[at + i], h)
    return h, at + num_tree


def tree_hash_indexes(n: int) -> list[int]:
    """The stored indexes ``tree_hash(n, …)`` reads: the roots of the ≤ 1 + log2(n) complete
    subtrees covering records [0, n), left to right (ascending)."""
    if n < 0:
        raise ValueError(f"tree_hash_indexes({n}): n must be ≥ 0")
    return _sub_tree_index(0, n, [])


def tree_hash(n: int, read: HashReader, indexes: Sequence[int] | None = None) -> bytes:
    """The root hash of the tree of the first ``n`` records (Go ``TreeHash``): one ``read``
    of ``tree_hash_indexes(n)`` (``indexes``: that list, when the caller has it);
    ``EMPTY_ROOT`` (no read) when n = 0."""
    if n < 0:
        raise ValueError(f"tree_hash({n}): n must be ≥ 0")
    if n == 0:
        return EMPTY_ROOT
    indexes = tree_hash_indexes(n) if indexes is None else indexes
    h, used = _sub_tree_hash(0, n, _read(read, indexes), 0)
    if used != len(indexes):
        raise AssertionError("tlog: bad index math in tree_hash")
    return h


def _leaf_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if not lo <= n < hi:
        raise AssertionError("tlog: bad math in _leaf_proof_index")
    if lo + 1 == hi:
        return need
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        _leaf_proof_index(lo, lo + k, n, need)
        _sub_tree_index(lo + k, hi, need)
    else:
        _sub_tree_index(lo, lo + k, need)
        _leaf_proof_index(lo + k, hi, n, need)
    return need


def _leaf_proof(lo: int, hi: int, n: int, hashes: list[bytes], at: int) -> tuple[list[bytes], int]:
    """The audit path of leaf n within records [lo, hi), bottom up (Go ``leafProof``)."""
    if not lo <= n < hi:
        raise AssertionError("tlog: bad math in _leaf_proof")
    if lo + 1 == hi:  # the leaf itself: the verifier knows its hash
        return [], at
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:  # n on the left: the right subtree's hash is on the path
        proof, at = _leaf_proof(lo, lo + k, n, hashes, at)
        th, at = _sub_tree_hash(lo + k, hi, hashes, at)
    else:
        th, at = _sub_tree_hash(lo, lo + k, hashes, at)
        proof, at = _leaf_proof(lo + k, hi, n, hashes, at)
    proof.append(th)
    return proof, at


def record_proof_indexes(t: int, n: int) -> list[int]:
    """The stored indexes ``prove_record(t, n, …)`` reads (ascending, ≤ 2·log2(t))."""
    if not 0 <= n < t:
        raise ValueError(f"record_proof_indexes({t}, {n}): need 0 ≤ n < t")
    return _leaf_proof_index(0, t, n, [])


def prove_record(t: int, n: int, read: HashReader, indexes: Sequence[int] | None = None) -> list[bytes]:
    """The inclusion proof (RFC 9162 §2.1.3 audit path) of record ``n`` in the tree of size
    ``t`` (Go ``ProveRecord``): one ``read`` of ``record_proof_indexes(t, n)`` (none for t = 1).
    ``indexes``: that list when the caller computed it already (to read every hash of an
    answer at once), so that it is not computed twice."""
    indexes = record_proof_indexes(t, n) if indexes is None else indexes
    if not indexes:
        return []
    proof, used = _leaf_proof(0, t, n, _read(read, indexes), 0)
    if used != len(indexes):
        raise AssertionError("tlog: bad index math in prove_record")
    return proof


def _tree_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if not lo < n <= hi:
        raise AssertionError("tlog: bad math in _tree_proof_index")
    if n == hi:
        return need if lo == 0 else _sub_tree_index(lo, hi, need)
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        _tree_proof_index(lo, lo + k, n, need)
        _sub_tree_index(lo + k, hi, need)
    else:
        _sub_tree_index(lo, lo + k, need)
        _tree_proof_index(lo + k, hi, n, need)
    return need


def _tree_proof(lo: int, hi: int, n: int, hashes: list[bytes], at: int) -> tuple[list[bytes], int]:
    """The consistency sub-proof for records [lo, hi) against the old size n (Go ``treeProof``)."""
    if not lo < n <= hi:
        raise AssertionError("tlog: bad math in _tree_proof")
    if n == hi:  # common ground
        if lo == 0:  # exactly the old tree: the verifier knows its hash
            return [], at
        th, at = _sub_tree_hash(lo, hi, hashes, at)
        return [th], at
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        proof, at = _tree_proof(lo, lo + k, n, hashes, at)
        th, at = _sub_tree_hash(lo + k, hi, hashes, at)
    else:
        th, at = _sub_tree_hash(lo, lo + k, hashes, at)
        proof, at = _tree_proof(lo + k, hi, n, hashes, at)
    proof.append(th)
    return proof, at


def tree_proof_indexes(t: int, n: int) -> list[int]:
    """The stored indexes ``prove_tree(t, n, …)`` reads (ascending, ≤ 2·log2(t))."""
    if not 1 <= n <= t:
        raise ValueError(f"tree_proof_indexes({t}, {n}): need 1 ≤ n ≤ t")
    return _tree_proof_index(0, t, n, [])


def prove_tree(t: int, n: int, read: HashReader, indexes: Sequence[int] | None = None) -> list[bytes]:
    """The consistency proof (RFC 9162 §2.1.4) that the tree of size ``t`` extends the tree
    of size ``n`` (Go ``ProveTree``; 1 ≤ n ≤ t, empty when n = t): one ``read`` of
    ``tree_proof_indexes(t, n)`` (``indexes``: that list, when the caller has it)."""
    indexes = tree_proof_indexes(t, n) if indexes is None else indexes
    if not indexes:
        return []
    proof, used = _tree_proof(0, t, n, _read(read, indexes), 0)
    if used != len(indexes):
        raise AssertionError("tlog: bad index math in prove_tree")
    return proof


# --- verification: no storage, what an auditor runs -------------------------------------------

def _check_hash_arg(h: object) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise ValueError(f"a tlog hash is {HASH_SIZE} bytes")


def _checked(name: str, h: object) -> bytes:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise ProofError(f"{name} is not a {HASH_SIZE}-byte hash")
    return h


def _run_record_proof(p: list[bytes], lo: int, hi: int, n: int, h: bytes) -> bytes:
    """The root of records [lo, hi) implied by proof p for leaf n (Go ``runRecordProof``)."""
    if lo + 1 == hi:
        if p:  # no unneeded hashes
            raise ProofError("inclusion proof has extra hashes")
        return h
    if not p:
        raise ProofError("inclusion proof is too short")
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        return node_hash(_run_record_proof(p[:-1], lo, lo + k, n, h), p[-1])
    return node_hash(p[-1], _run_record_proof(p[:-1], lo + k, hi, n, h))


def check_record(proof: Sequence[bytes], t: int, th: bytes, n: int, h: bytes) -> None:
    """Verify that ``proof`` shows the tree of size ``t`` with root ``th`` has as record
    ``n`` (0-based) the leaf whose *hash* is ``h`` (``leaf_hash(data)``; Go ``CheckRecord``,
    RFC 9162 §2.1.3.2). Returns None; raises ``ProofError`` when it does not verify."""
    if not isinstance(t, int) or not isinstance(n, int) or not 0 <= n < t <= MAX_SIZE:
        raise ProofError(f"inclusion proof inputs out of range: index {n}, tree size {t}")
    th = _checked("the tree hash", th)
    h = _checked("the leaf hash", h)
    p = [_checked(f"proof hash #{i}", x) for i, x in enumerate(proof)]
    if len(p) > 2 * t.bit_length():  # far longer than any path: refuse before recursing
        raise ProofError("inclusion proof is too long")
    if _run_record_proof(p, 0, t, n, h) != th:
        raise ProofError(f"inclusion proof of record {n} does not lead to the root of tree size {t}")


def _run_tree_proof(p: list[bytes], lo: int, hi: int, n: int, old: bytes) -> tuple[bytes, bytes]:
    """(old root, new root) of records [lo, hi) implied by proof p (Go ``runTreeProof``)."""
    if n == hi:
        if lo == 0:
            if p:
                raise ProofError("consistency proof has extra hashes")
            return old, old
        if len(p) != 1:
            raise ProofError("consistency proof has the wrong length")
        return p[0], p[0]
    if not p:
        raise ProofError("consistency proof is too short")
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        oh, th = _run_tree_proof(p[:-1], lo, lo + k, n, old)
        return oh, node_hash(th, p[-1])
    oh, th = _run_tree_proof(p[:-1], lo + k, hi, n, old)
    return node_hash(p[-1], oh), node_hash(p[-1], th)


def check_tree(proof: Sequence[bytes], t: int, th: bytes, n: int, h: bytes) -> None:
    """Verify that ``proof`` shows the tree of size ``t`` with root ``th`` extends (has as a
    prefix) the tree of size ``n`` with root ``h`` (Go ``CheckTree``, RFC 9162 §2.1.4.2;
    1 ≤ n ≤ t). Returns None; raises ``ProofError`` when it does not verify."""
    if not isinstance(t, int) or not isinstance(n, int) or not 1 <= n <= t <= MAX_SIZE:
        raise ProofError(f"consistency proof inputs out of range: sizes {n} → {t}")
    th = _checked("the new tree hash", th)
    h = _checked("the old tree hash", h)
    p = [_checked(f"proof hash #{i}", x) for i, x in enumerate(proof)]
    if len(p) > 2 * t.bit_length():
        raise ProofError("consistency proof is too long")
    old, new = _run_tree_proof(p, 0, t, n, h)
    if old != h or new != th:
        raise ProofError(f"consistency proof from tree size {n} to {t} does not verify")


# --- several records at once: one proof for a set of leaves -----------------------------------
#
# An export carries some of the ledger's entries (a run's governance entries, a filtered audit
# slice) and wants to prove them all in the tree of one checkpoint. One RFC 6962 audit path
# per entry repeats the hashes near the root in every path; this proof lists each hash once:
# walking the tree top-down by RFC 9162's split (the largest power of two below the size),
# the hash of every maximal subtree holding no proved leaf, in that walk's order (left to
# right). A contiguous range of leaves needs about 2·log2(n) hashes, k scattered leaves at most
# k·log2(n/k) + k. From it and the leaves, every subtree on the leaves' paths is known, so the
# standard audit path of each leaf can be derived (``record_audit_path``) and checked by any
# RFC 9162 verifier. No library we know of ships such a multi-leaf proof for RFC 6962 trees
# in Python; this one is the RFC's own recursion (MTH / PATH, §2.1.1, §2.1.3.1).

def _proved_indexes(indexes: Iterable[int], n: int) -> Sequence[int]:
    """The record indexes sorted, each once. An array('q') already strictly increasing (an
    export's ledger entries, in seq order) is used as it is: 8 bytes an index, where a sorted
    list of a set of Python ints takes ~100 — at 200,000 records, ~20 MB at an export's end."""
    out: Sequence[int]
    if isinstance(indexes, array.array) and indexes.typecode == "q" and all(
            a < b for a, b in itertools.pairwise(indexes)):
        out = indexes
    else:
        out = sorted(set(indexes))
    if not isinstance(n, int) or not 0 < n <= MAX_SIZE:
        raise ProofError(f"tree size {n!r} out of range")
    if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n for i in out):
        raise ProofError(f"record indexes must lie in [0, {n})")
    return out


def _empty_subtrees(lo: int, hi: int, leaves: Sequence[int], i0: int, i1: int, out: list[tuple[int, int]]) -> None:
    """The maximal subtrees of [lo, hi) that hold none of leaves[i0:i1], left to right."""
    if i0 == i1:
        out.append((lo, hi))
        return
    if hi - lo == 1:
        return
    mid = lo + _maxpow2(hi - lo)[0]
    j = bisect.bisect_left(leaves, mid, i0, i1)
    _empty_subtrees(lo, mid, leaves, i0, j, out)
    _empty_subtrees(mid, hi, leaves, j, i1, out)


def prove_records(indexes: Iterable[int], n: int, read: HashReader) -> list[bytes]:
    """The proof that records ``indexes`` (0-based, any order; an array('q') in increasing
    order is read in place) are in the tree of size ``n``:
    the hashes of the maximal subtrees holding none of them, left to right, read with one call
    of ``read``. Verify with ``check_records``."""
    leaves = _proved_indexes(indexes, n)
    ranges: list[tuple[int, int]] = []
    _empty_subtrees(0, n, leaves, 0, len(leaves), ranges)
    need: list[int] = []
    for lo, hi in ranges:
        _sub_tree_index(lo, hi, need)
    hashes = _read(read, need) if need else []
    proof, at = [], 0
    for lo, hi in ranges:
        h, at = _sub_tree_hash(lo, hi, hashes, at)
        proof.append(h)
    if at != len(hashes):
        raise AssertionError("tlog: bad index math in prove_records")
    return proof


def check_records(proof: Sequence[bytes], t: int, th: bytes, leaf_hashes: Mapping[int, bytes], *,
                  keep: bool = True) -> dict[tuple[int, int], bytes]:
    """Verify that ``proof`` (``prove_records``) shows the tree of size ``t`` with root ``th``
    has, for each record index i of ``leaf_hashes``, the leaf whose hash is
    ``leaf_hashes[i]`` (``leaf_hash(data)``). Returns the hash of every subtree [lo, hi) the
    check computed or read (for ``record_audit_path``), or with ``keep=False`` nothing (an
    export's 200,000 leaves would keep ~400,000 subtrees a verifier never asks for); raises
    ``ProofError``."""
    try:
        leaves = _proved_indexes(leaf_hashes, t)
    except TypeError:
        raise ProofError("record indexes must be integers") from None
    th = _checked("the tree hash", th)
    hashes = {i: _checked(f"the leaf hash of record {i}", leaf_hashes[i]) for i in leaves}
    p = [_checked(f"proof hash #{i}", x) for i, x in enumerate(proof)]
    if len(p) > (len(leaves) + 1) * t.bit_length() + 1:  # more than any such proof: refuse before walking
        raise ProofError("multi-record proof is too long")
    known: dict[tuple[int, int], bytes] = {}
    at = 0

    def run(lo: int, hi: int, i0: int, i1: int) -> bytes:
        nonlocal at
        if i0 == i1:
            if at >= len(p):
                raise ProofError("multi-record proof is too short")
            h = p[at]
            at += 1
        elif hi - lo == 1:
            h = hashes[leaves[i0]]
        else:
            mid = lo + _maxpow2(hi - lo)[0]
            j = bisect.bisect_left(leaves, mid, i0, i1)
            left = run(lo, mid, i0, j)
            h = node_hash(left, run(mid, hi, j, i1))
        if keep:
            known[(lo, hi)] = h
        return h

    root = run(0, t, 0, len(leaves))
    if at != len(p):
        raise ProofError("multi-record proof has extra hashes")
    if root != th:
        raise ProofError(f"the records' proof does not lead to the root of tree size {t}")
    return known


def record_audit_path(known: Mapping[tuple[int, int], bytes], t: int, n: int) -> list[bytes]:
    """The RFC 9162 inclusion proof (audit path, the leaf's sibling first) of record ``n`` in
    the tree of size ``t``, from the subtree hashes ``check_records`` returned (n must be one
    of the records it checked)."""
    path: list[bytes] = []
    lo, hi = 0, t
    while hi - lo > 1:
        mid = lo + _maxpow2(hi - lo)[0]
        if n < mid:
            path.append(known[(mid, hi)])
            hi = mid
        else:
            path.append(known[(lo, mid)])
            lo = mid
    return path[::-1]
