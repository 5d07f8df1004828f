"""The integrity verifier: one library for the Logs and Export services and the offline verifier.

The checks are pure functions over rows (mappings), so the same code verifies a
tenant's chain read from the database and the copy inside an export bundle that an
auditor holds offline. Each anomaly is located precisely: the sequence number (or
step index) and its kind.
"""
from __future__ import annotations

import contextvars
import functools
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from aos_recording import hashing

B = TypeVar("B")  # a batch of rows, as a reader gives them

# Anomaly kinds (the names aos.evidence.v1's anomaly enum carries without its prefix).
CONTENT_MISMATCH = "CONTENT_MISMATCH"   # the row's fields do not hash to its content_hash
BROKEN_LINK = "BROKEN_LINK"             # prev_hash is not the previous entry's chain_hash
CHAIN_MISMATCH = "CHAIN_MISMATCH"       # chain_hash is not SHA-256(prev_hash ‖ content_hash)
SEQUENCE_GAP = "SEQUENCE_GAP"           # sequence numbers missing before this entry
SEQUENCE_DISORDER = "SEQUENCE_DISORDER"  # a sequence number repeats or goes backwards
TRUNCATION = "TRUNCATION"               # the chain ends before a held checkpoint
CHECKPOINT_MISMATCH = "CHECKPOINT_MISMATCH"  # the entry a checkpoint names has another chain hash


@dataclass(frozen=True)
class Anomaly:
    seq: int
    kind: str
    expected: str = ""
    actual: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Checkpoint:
    """What an auditor keeps: the chain head at some moment."""
    seq: int
    chain_hash: bytes


@dataclass
class ChainReport:
    checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_hash: bytes | None = None
    anomalies: list[Anomaly] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.anomalies


class ChainVerifier:
    """Feeds on rows in ``seq`` order; keeps O(1) state so any chain length streams through.

    ``content_hash_of(row)`` recomputes a row's content hash from its fields; rows
    carry ``seq``, ``content_hash``, ``prev_hash`` and ``chain_hash`` (bytes).
    Start it with the chain hash before ``start_seq`` (genesis for seq 1).
    """

    def __init__(self, content_hash_of: Callable[[Mapping[str, Any]], bytes], *, start_seq: int = 1,
                 prev_hash: bytes = hashing.GENESIS) -> None:
        self._content_hash_of = content_hash_of
        self._expected_seq = start_seq
        self._prev_hash = prev_hash
        self.report = ChainReport()

    def _flag(self, seq: int, kind: str, expected: bytes | int | str = "", actual: bytes | int | str = "",
              detail: str = "") -> None:
        self.report.anomalies.append(Anomaly(seq, kind, _show(expected), _show(actual), detail))

    def feed(self, row: Mapping[str, Any]) -> None:
        content = bytes(row["content_hash"])
        self._check(int(row["seq"]), content, bytes(row["prev_hash"]), bytes(row["chain_hash"]),
                    lambda: self._content_hash_of(row))

    def feed_ledger_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """``feed`` for ledger rows as tuples in ``hashing.LEDGER_ROW_COLUMNS`` order (the content
        hash through ``hashing.ledger_row_content_hash``, whatever ``content_hash_of`` says).

        One loop for the whole batch: an entry whose seq, link, content hash and chain hash are
        all as expected only moves the state on (what ``feed`` does for it); any other goes
        through ``feed``'s checks, which flag it exactly as they would have."""
        report = self.report
        if report.first_seq is None and rows:
            report.first_seq = rows[0][0]
        expected, prev_hash = self._expected_seq, self._prev_hash
        hash_input, content_hash_of, sha256 = hashing.ledger_row_hash_input, hashing.ledger_row_content_hash, \
            hashlib.sha256
        checked, last = 0, None
        for row in rows:
            seq, content, prev, chain, version = row[0], row[1], row[2], row[3], row[4]
            recomputed = sha256(hash_input(row)).digest() if version == hashing.HASH_V1 else content_hash_of(row)
            if (seq == expected and prev == prev_hash and recomputed == content
                    and sha256(prev + content).digest() == chain):
                expected, prev_hash, last = seq + 1, chain, row
                checked += 1
                continue
            if last is not None:
                report.last_seq, report.head_hash = last[0], bytes(last[3])
            report.checked += checked
            checked, last = 0, None
            self._expected_seq, self._prev_hash = expected, prev_hash
            self._check(int(seq), bytes(content), bytes(prev), bytes(chain), functools.partial(bytes, recomputed))
            expected, prev_hash = self._expected_seq, self._prev_hash
        if last is not None:
            report.last_seq, report.head_hash = last[0], bytes(last[3])
        report.checked += checked
        self._expected_seq, self._prev_hash = expected, prev_hash

    def _check(self, seq: int, content: bytes, prev: bytes, chain: bytes, recompute: Callable[[], bytes]) -> None:
        report = self.report
        if report.first_seq is None:
            report.first_seq = seq
        if seq > self._expected_seq:
            missing = f"{self._expected_seq}" if seq - 1 == self._expected_seq else f"{self._expected_seq}..{seq - 1}"
            self._flag(seq, SEQUENCE_GAP, self._expected_seq, seq, f"entries {missing} are missing")
        elif seq < self._expected_seq:
            self._flag(seq, SEQUENCE_DISORDER, self._expected_seq, seq, "sequence number repeats or goes back")
        recomputed = recompute()
        if recomputed != content:
            self._flag(seq, CONTENT_MISMATCH, recomputed, content, "fields do not hash to content_hash")
        if prev != self._prev_hash:
            self._flag(seq, BROKEN_LINK, self._prev_hash, prev, "prev_hash is not the previous chain_hash")
        expected_chain = hashing.chain_hash(prev, content)
        if chain != expected_chain:
            self._flag(seq, CHAIN_MISMATCH, expected_chain, chain, "chain_hash is not SHA-256(prev ‖ content)")
        report.checked += 1
        report.last_seq = seq
        report.head_hash = chain
        self._expected_seq = max(self._expected_seq, seq) + 1
        self._prev_hash = chain

    def against_checkpoint(self, checkpoint: Checkpoint, chain_hash_at: bytes | None) -> None:
        """A held checkpoint proves the chain was neither cut nor rewritten before it.

        ``chain_hash_at`` is the stored chain hash of the entry at ``checkpoint.seq``
        (None when that entry no longer exists).
        """
        last = self.report.last_seq or 0
        if chain_hash_at is None or last < checkpoint.seq:
            self._flag(checkpoint.seq, TRUNCATION, checkpoint.seq, last,
                       f"the checkpoint names entry {checkpoint.seq}; the chain ends at {last}")
        elif bytes(chain_hash_at) != checkpoint.chain_hash:
            self._flag(checkpoint.seq, CHECKPOINT_MISMATCH, checkpoint.chain_hash, chain_hash_at,
                       "the chain before the checkpoint was rewritten")


def verify_chain(rows: Iterable[Mapping[str, Any]], content_hash_of: Callable[[Mapping[str, Any]], bytes], *,
                 start_seq: int = 1, prev_hash: bytes = hashing.GENESIS) -> ChainReport:
    verifier = ChainVerifier(content_hash_of, start_seq=start_seq, prev_hash=prev_hash)
    for row in rows:
        verifier.feed(row)
    return verifier.report


def ledger_content_hash_of(row: Mapping[str, Any]) -> bytes:
    """v1 rows from their fields, v2 rows from their fields and commitments (docs/ERASURE.md):
    an erased payload changes nothing here."""
    return hashing.stored_ledger_content_hash(row)


def export_content_hash_of(row: Mapping[str, Any]) -> bytes:
    return hashing.manifest_hash(row["manifest"])


@dataclass(frozen=True)
class StepAnomaly:
    step_index: int | None
    kind: str
    detail: str


def verify_trace(trace: Mapping[str, Any], steps: Iterable[Mapping[str, Any]]) -> list[StepAnomaly]:
    """A trace's step hashes, their order, the trace hash and its inflection point."""
    anomalies = []
    ordered = sorted(steps, key=lambda s: s["step_index"])
    for expected_index, step in enumerate(ordered):
        if step["step_index"] != expected_index:
            anomalies.append(StepAnomaly(step["step_index"], SEQUENCE_GAP,
                                         f"step {expected_index} is missing before step {step['step_index']}"))
            break
    for step in ordered:
        if hashing.stored_step_content_hash(step) != bytes(step["content_hash"]):
            anomalies.append(StepAnomaly(step["step_index"], CONTENT_MISMATCH,
                                         "step fields do not hash to its content_hash"))
    if trace.get("content_hash") is not None:
        recomputed = hashing.trace_content_hash(bytes(s["content_hash"]) for s in ordered)
        if recomputed != bytes(trace["content_hash"]):
            anomalies.append(StepAnomaly(None, CHAIN_MISMATCH,
                                         "the trace hash is not the hash of its step hashes in order"))
    violation = trace.get("violation_step_index")
    if violation is not None and violation not in {s["step_index"] for s in ordered}:
        anomalies.append(StepAnomaly(violation, SEQUENCE_GAP, "the inflection step is missing"))
    return anomalies


def _show(value: bytes | int | str) -> str:
    return value.hex() if isinstance(value, (bytes, bytearray, memoryview)) else str(value)


def _read_ahead(batches: Iterator[B]) -> Iterator[B]:
    """``batches``, each next one read by a helper thread while the caller checks the current one.

    Hashing a batch holds the GIL; reading the next one mostly waits for the database (the
    driver releases the GIL while it waits), so the database's time and the hashing overlap
    instead of adding up. Only the helper touches the connection, one query at a time, and
    the caller's context (tracing, deadlines) goes with each read. Leaving early waits for
    the read in flight, so the connection is idle again when this returns."""
    context = contextvars.copy_context()

    def read() -> B | None:
        return context.run(next, batches, None)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-read-ahead") as pool:
        pending = pool.submit(read)
        while True:
            batch = pending.result()
            if batch is None:
                return
            pending = pool.submit(read)
            yield batch


def verify_ledger(conn: Connection, tenant_id: str, *, from_seq: int = 1, to_seq: int | None = None,
                  checkpoint: Checkpoint | None = None, anchor: Checkpoint | None = None) -> ChainReport:
    """Verify a tenant's audit chain (whole, or the range from_seq..to_seq) read from the database.

    ``anchor``: when retention dropped the chain's beginning, the seq and chain hash of
    the last dropped entry (recorded before the drop, aos_recording.retention); the
    chain is verified from the entry after it. Without an anchor, a chain whose first
    entries are gone is a TRUNCATION: nothing vouches for what was cut.
    """
    from aos_recording import store

    prev: bytes | None
    if anchor is not None and from_seq <= anchor.seq + 1:
        from_seq, prev = anchor.seq + 1, anchor.chain_hash
    elif from_seq <= 1:
        prev = hashing.GENESIS
    else:
        prev = store.chain_hash_before(conn, "audit_ledger", tenant_id, from_seq)
    verifier = ChainVerifier(ledger_content_hash_of, start_seq=max(1, from_seq),
                             prev_hash=prev if prev is not None else hashing.GENESIS)
    for rows in _read_ahead(store.iter_ledger_rows(conn, tenant_id, from_seq=from_seq, to_seq=to_seq)):
        verifier.feed_ledger_rows(rows)
    first = verifier.report.first_seq
    if from_seq <= 1 and first is not None and first > 1:
        verifier.report.anomalies.insert(0, Anomaly(first, TRUNCATION, "1", str(first),
                                                    f"the chain begins at {first}: entries 1..{first - 1} are gone "
                                                    "and no retention anchor covers them"))
    if checkpoint is not None:
        verifier.against_checkpoint(checkpoint, store.chain_hash_at(conn, "audit_ledger", tenant_id, checkpoint.seq))
    return verifier.report


def verify_exports(conn: Connection, tenant_id: str) -> ChainReport:
    """Verify a tenant's export chain: each row's manifest hash and its link."""
    from aos_recording import store

    return verify_chain(store.iter_exports(conn, tenant_id), export_content_hash_of)
