"""Evidence bundles: what an export says, built from records, before any format.

A bundle is plain JSON-able data, a function of the request and the records only
(never of the export's id, time or requester — those are in the manifest), so the
same request over the same records gives the same bytes. Each record carries the
fields its content hash covers (SPEC section 5), spelled as hashed, so an auditor
can recompute the hash; a record whose content was redacted says so, and then only
its links (chain, trace root) can be re-checked, not its content.

Bundle types (seed 003 section 6.3):
- EVIDENCE: the records, the run's trace with its inflection point and hashes, its
  policy and incident context.
- SOC2: EVIDENCE plus the mapping to controls CC7.2, CC7.3 and CC7.4 and an
  attestation statement drawn from the records.
- EXECUTIVE: a debrief a person reads in a minute: what happened, impact, outcome.
"""
from __future__ import annotations

import array
import functools
import heapq
import operator
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from aos_evidence.kinds import ExportScope
from aos_recording.hashing import (
    LEDGER_FIELDS,
    LEDGER_ROW_COLUMNS,
    LLM_RUN_FIELDS,
    STEP_FIELDS,
    SYSTEM_RECORD_FIELDS,
    canonical_json,
    canonical_json_joined,
    json_plain,
    rfc3339,
)
from services.export import render
from services.export.redaction import Redactor

FORMAT_VERSION = "aos.evidence-bundle/v1"
EPOCH = "1970-01-01T00:00:00.000000Z"

# Free text and payloads, where secrets and personal data hide; ids, enums, times
# and hashes are left as recorded so the evidence stays linkable.
_REDACTED_FIELDS = {
    "audit_entry": ("actor_id", "action_reason", "before_state", "after_state"),
    "system_record": ("summary", "details", "actor_id"),
    "trace_step": ("input_data", "output_data", "metadata"),
    "llm_run": ("termination_reason",),
    "trace": ("termination_reason", "violation_reason", "policy_snapshot"),
    "incident": ("title", "description"),
    "proposal": ("proposal_name", "rationale", "proposed_rule"),
    "limit_breach": ("details",),
}


def _plain(value: Any) -> Any:
    # Exact types first (every field of every exported record passes here): the same results
    # as the isinstance chain below, which the rest still takes.
    kind = type(value)
    if kind is str or value is None or kind is int or kind is bool or kind is float:
        return value
    if kind is datetime:
        return rfc3339(value)
    if kind is bytes:
        return value.hex()
    if kind is dict:  # a state (jsonb): the isinstance branch below, without its checks before it
        return {k: v if type(v) in _AS_IS else _plain(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _AS_IS else _plain(v) for v in value]
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "as_integer_ratio") and not isinstance(value, (int, float)):  # Decimal
        return str(value)
    return value


# A v2 record (docs/ERASURE.md) carries, beside its fields, what verifies it without its
# payloads: its hash_version and commitments; with them the payloads still held, their salts
# (so the holder can open each commitment) and the fields erased. A v1 record carries none of
# these keys, so an export of v1 records keeps its bytes.
_V2_KEYS = ("hash_version", "commitments", "salts", "erased", "missing")

# Opens a v2 row's payloads (kind, row) -> row filled; None: rows go out as stored.
Opener = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]


_AS_IS = frozenset((str, int, bool, float, type(None)))
_PLAIN_LEAVES = frozenset((str, int, bool, type(None)))
_AUDIT_FIELDS = LEDGER_FIELDS + ("seq", "content_hash", "prev_hash", "chain_hash")
_SEQ_OF = operator.itemgetter("seq")
# A ledger row's fields that go out as stored (text, and seq), by their place in LEDGER_ROW_COLUMNS.
_ROW_AS_IS = operator.itemgetter(*(LEDGER_ROW_COLUMNS.index(c) for c in (
    "id", "tenant_id", "event_type", "entity_type", "entity_id", "actor_type", "actor_id", "action_reason",
    "correlation_id", "seq")))


def newest_time(value: Any) -> str:
    """The latest RFC 3339 time anywhere in the bundle: the report's date, from the records
    (a trace's Steps: the latest of theirs, kept as they were written)."""
    newest = EPOCH
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and len(item) == 27 and item.endswith("Z") and item[10:11] == "T":
            newest = max(newest, item)
        elif isinstance(item, Steps):
            newest = max(newest, item.newest)
    return newest


_BATCH_BYTES = 64 * 1024


class Steps:
    """A trace's steps, one record at a time, never all held (a run may have any number).

    Each record's canonical JSON goes to a spool (a temporary file past SPOOL_BYTES),
    comma-separated as inside the bundle's "steps" array; ``json=False`` (an executive
    bundle, which carries no steps) keeps none. Kept beside it: what the views and the
    report read of the steps — their count and newest time, the first ``report_rows``
    steps' report fields (step_index, step_type, timestamp, level, content_hash), the
    ``report_rows`` earliest timeline events, and the content hashes of the policy checks
    (SOC2 CC7.2 lists them all; the only part that grows with the run, 64 characters each).
    ``close()`` drops the spool."""

    def __init__(self, *, json: bool = True, report_rows: int | None = None) -> None:
        self._spool = tempfile.SpooledTemporaryFile(max_size=render.SPOOL_BYTES) if json else None
        self._batch: list[bytes] = []
        self._held = 0
        self._report_rows = render.PDF_MAX_ROWS if report_rows is None else report_rows
        self._events: list[tuple[str, str, str]] = []
        self.count = 0
        self.newest = EPOCH
        self.first: list[dict[str, Any]] = []
        self.policy_checks: list[str] = []

    @classmethod
    def of(cls, records: Iterable[dict[str, Any]]) -> Steps:
        steps = cls()
        for record in records:
            steps.add(record)
        return steps

    def add(self, record: dict[str, Any]) -> None:
        if self._spool is not None:
            data = canonical_json(record)
            self._batch.append(b"," + data if self.count else data)
            self._held += len(data) + 1
            if self._held >= _BATCH_BYTES:
                self._flush()
        self.count += 1
        self.newest = max(self.newest, newest_time(record))
        if len(self.first) < self._report_rows:
            self.first.append({k: record[k] for k in ("step_index", "step_type", "timestamp", "level",
                                                       "content_hash")})
        if record["step_type"] == "policy_check":
            self.policy_checks.append(record["content_hash"])
        # The report's timeline event of this step (artifacts.bundle_report): only the earliest
        # report_rows are ever shown, so no more than twice that are held.
        self._events.append((record["timestamp"], record["step_type"], f"step {record['step_index']} "
                                                                        f"({record['level']})"))
        if len(self._events) >= 2 * self._report_rows:
            self._events = heapq.nsmallest(self._report_rows, self._events)

    def events(self) -> list[tuple[str, str, str]]:
        """The ``report_rows`` earliest timeline events of the steps, in order."""
        return heapq.nsmallest(self._report_rows, self._events)

    def _flush(self) -> None:
        if self._spool is not None and self._batch:
            self._spool.write(b"".join(self._batch))
        self._batch.clear()
        self._held = 0

    def json_chunks(self) -> Iterator[bytes]:
        """The records' JSON, comma-separated, as written (read again from the start each call)."""
        if self._spool is None:
            raise ValueError("these steps were written without their JSON (json=False)")
        self._flush()
        self._spool.seek(0)
        while chunk := self._spool.read(render.SPOOL_BYTES):
            yield chunk

    def __len__(self) -> int:
        return self.count

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def write_json(bundle: Mapping[str, Any], write: Callable[[bytes], Any]) -> None:
    """RFC 8785 JSON of ``bundle`` into ``write``, its trace's Steps streamed from their spool:
    the same bytes as canonical_json of the bundle with the steps as a list. JCS orders an
    object's members by key (all ASCII here): "trace" is the bundle's last member, and the
    trace's members before "steps" are written, then the steps, then the members after."""
    trace = bundle.get("trace")
    steps = trace.get("steps") if isinstance(trace, dict) else None
    if not isinstance(trace, dict) or not isinstance(steps, Steps):
        write(canonical_json(bundle))
        return
    rest = {k: v for k, v in bundle.items() if k != "trace"}
    before = {k: v for k, v in trace.items() if k < "steps"}
    after = {k: v for k, v in trace.items() if k > "steps"}
    if any(k > "trace" for k in rest) or not before or not after:
        raise AssertionError("a run bundle's trace is its last member and has members around its steps")
    write((canonical_json(rest)[:-1] + b',"trace":' if rest else b'{"trace":')
          + canonical_json(before)[:-1] + b',"steps":[')
    for chunk in steps.json_chunks():
        write(chunk)
    write(b"]," + canonical_json(after)[1:] + b"}")


class RecordWriter:
    """Turns rows into bundle records, redacting as it goes and counting what it redacted.
    A trace's steps become Steps (their JSON spooled unless ``step_json`` is False)."""

    def __init__(self, opener: Opener | None = None, *, step_json: bool = True) -> None:
        self.redactor = Redactor()
        self.opener = opener
        self.step_json = step_json

    def record(self, kind: str, row: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
        # row[...] rather than .get: a RowMapping's .get is the Mapping ABC's, in Python.
        v2 = ("hash_version" in row and row["hash_version"]) == 2
        if v2 and self.opener is not None:
            row = self.opener(kind, row)
        # Values _plain returns unchanged are not passed to it (one call per field of every
        # exported record was most of an export's own time).
        record = {name: value if type(value) in _AS_IS else _plain(value)
                  for name, value in zip(fields, map(row.__getitem__, fields), strict=True)}
        if v2:
            record.update({name: _plain(row[name]) for name in _V2_KEYS if name in row})
        before = self.redactor.total
        for name in _REDACTED_FIELDS.get(kind, ()):
            if record.get(name) is not None:
                record[name] = self.redactor.redact(record[name])
        record["redacted"] = self.redactor.total != before
        return record

    def audit_entry(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return self.record("audit_entry", row, _AUDIT_FIELDS)

    def audit_row(self, row: Sequence[Any]) -> dict[str, Any]:
        """``audit_entry`` of a ledger row given as a tuple in ``LEDGER_ROW_COLUMNS`` order."""
        record = self.plain_audit_rows([row])[0]
        return record if record is not None else self.generic_audit_row(row)

    def generic_audit_row(self, row: Sequence[Any]) -> dict[str, Any]:
        return self.record("audit_entry", dict(zip(LEDGER_ROW_COLUMNS, row, strict=True)), _AUDIT_FIELDS)

    def plain_audit_rows(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any] | None]:
        """``audit_row`` of each v1 row as the ledger holds one — text and integer fields,
        created_at a datetime, the three hashes bytes, states that are null or plain JSON
        (``hashing.json_plain``: no float) — made without the generic conversions, each plain
        JSON itself (redaction gives text for text); None for any other row (a v2 row, a float
        anywhere, another type), which ``generic_audit_row`` takes. The same records: for a
        plain JSON value ``_plain`` is a copy, so redacting the value is redacting its copy
        (tests/unit/test_export_fast.py compares the two on generated rows)."""
        redactor = self.redactor
        redact, text, state = redactor.redact, redactor.redact_text, redactor.redact_dict
        made: list[dict[str, Any] | None] = []
        append = made.append
        for row in rows:
            (seq, content, prev, chain, version, _commitments, id_, tenant_id, event_type, entity_type, entity_id,
             actor_type, actor_id, reason, correlation_id, created, before, after) = row
            if (version == 2 or not _PLAIN_LEAVES.issuperset(map(type, _ROW_AS_IS(row)))
                    or type(created) is not datetime or type(content) is not bytes or type(prev) is not bytes
                    or type(chain) is not bytes or not json_plain(before) or not json_plain(after)):
                append(None)
                continue
            total = redactor.total
            # redact() of each, by its type (the row's text fields are str, int, bool or None; a
            # state is None or plain JSON), in the order of the record's members.
            if type(actor_id) is str:
                actor_id = text(actor_id)
            if type(reason) is str:
                reason = text(reason)
            if before is not None:
                before = state(before) if type(before) is dict else redact(before)
            if after is not None:
                after = state(after) if type(after) is dict else redact(after)
            append({"id": id_, "tenant_id": tenant_id, "event_type": event_type, "entity_type": entity_type,
                    "entity_id": entity_id, "actor_type": actor_type, "actor_id": actor_id, "action_reason": reason,
                    "correlation_id": correlation_id, "created_at": rfc3339(created), "before_state": before,
                    "after_state": after, "seq": seq, "content_hash": content.hex(), "prev_hash": prev.hex(),
                    "chain_hash": chain.hex(), "redacted": redactor.total != total})
        return made

    def system_record(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return self.record("system_record", row, SYSTEM_RECORD_FIELDS + ("content_hash",))

    def llm_run(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return self.record("llm_run", row, LLM_RUN_FIELDS + ("content_hash",))

    def step(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return self.record("trace_step", row, STEP_FIELDS + ("level", "source", "tokens", "cost_cents", "duration_ms",
                                                            "metadata", "content_hash"))

    def trace(self, row: Mapping[str, Any], steps: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        trace = self.record("trace", row, (
            "trace_id", "run_id", "agent_id", "status", "started_at", "completed_at", "termination_reason",
            "step_count", "total_tokens", "total_cost_cents", "content_hash", "policy_snapshot_id", "policy_snapshot",
            "incident_id", "violation_step_index", "violation_timestamp", "violation_policy_id", "violation_reason"))
        written = trace["steps"] = Steps(json=self.step_json)
        try:
            for step in steps:
                written.add(self.step(step))
        except BaseException:
            written.close()
            raise
        # The inflection point: where the run turned (its violation), else its end.
        trace["inflection_point"] = {
            "step_index": row["violation_step_index"],
            "at": _plain(row["violation_timestamp"] or row["completed_at"] or row["started_at"]),
            "kind": "violation" if row["violation_step_index"] is not None else
            ("completion" if row["completed_at"] else "start")}
        return trace

    def incident(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return self.record("incident", row, ("id", "title", "description", "category", "severity", "lifecycle_state",
                                             "source_run_id", "trace_id", "policy_id", "created_at",
                                             "acknowledged_at", "resolved_at"))

    def proposal(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return self.record("proposal", row, ("id", "proposal_name", "proposal_type", "rationale", "status",
                                             "triggering_incident_id", "policy_id", "proposed_rule", "created_at",
                                             "reviewed_at", "reviewed_by"))

    def breach(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return self.record("limit_breach", row, ("id", "limit_id", "run_id", "breach_type", "value_at_breach",
                                                 "limit_value", "details", "breached_at"))


class AuditRecords:
    """An audit slice's records, in order, from its rows as they are read: batches of tuples in
    ``LEDGER_ROW_COLUMNS`` order (``writer.audit_row`` makes each record). Iterated one record at a
    time, or by ``json_batches`` a batch at a time with the records' RFC 8785 text (the records
    RecordWriter.plain_audit_rows makes, plain JSON all of them, are written with one orjson call
    per batch instead of one canonical_json walk each). ``seqs``, when given, collects each
    record's seq as it passes. Taken once."""

    def __init__(self, writer: RecordWriter, batches: Iterable[Sequence[Sequence[Any]]],
                 seqs: array.array | None = None) -> None:
        self._writer = writer
        self._batches = batches
        self.seqs = seqs

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for records, _plain_ones in self._made():
            yield from records

    def _made(self) -> Iterator[tuple[list[dict[str, Any]], list[bool]]]:
        """Per batch of rows: its records, and which of them plain_audit_rows made (plain JSON)."""
        writer, seqs = self._writer, self.seqs
        for batch in self._batches:
            made = writer.plain_audit_rows(batch)
            if None in made:
                plain = [record is not None for record in made]
                records = [record if record is not None else writer.generic_audit_row(row)
                           for record, row in zip(made, batch, strict=True)]
            else:  # every record plain JSON (the usual batch): no copies
                plain, records = [True] * len(made), made  # type: ignore[assignment]
            if seqs is not None:
                seqs.extend(map(_SEQ_OF, records))
            yield records, plain

    def json_batches(self, visit: Callable[[list[dict[str, Any]]], None]) -> Iterator[bytes]:
        """The records' canonical_json, comma-separated, one batch of rows at a time (no comma
        between batches; an empty batch gives nothing). ``visit`` sees each batch's records, in
        order, before they are written; it may add plain members (text, integers) and nothing else."""
        for records, plain in self._made():
            if records:
                visit(records)
                yield canonical_json_joined(records, plain)


# --- SOC2 and executive views ---------------------------------------------------

SOC2_CONTROLS = {
    "CC7.2": "The entity monitors system components and the operation of those components for anomalies "
             "that are indicative of malicious acts, natural disasters, and errors.",
    "CC7.3": "The entity evaluates security events to determine whether they could or have resulted in a "
             "failure of the entity to meet its objectives (security incidents).",
    "CC7.4": "The entity responds to identified security incidents by executing a defined incident response "
             "program to understand, contain, remediate, and communicate security incidents.",
}


def soc2(evidence: Mapping[str, list[str] | int], subject: str, newest: str | None) -> dict[str, Any]:
    """Control mappings: for each control, the ids of the records that evidence it (a
    run or an incident) or how many of the slice's records do (each record of a SOC2
    slice names its control)."""
    controls: list[dict[str, Any]] = []
    for control, description in SOC2_CONTROLS.items():
        found = evidence.get(control) or 0
        controls.append({"control": control, "description": description, "evidenced": bool(found),
                         "evidence": sorted(found) if isinstance(found, list) else found})
    met = [c["control"] for c in controls if c["evidenced"]]
    return {"controls": controls, "attestation": (
        f"The AOS Evidence Plane attests that the records in this bundle for {subject} are reproduced as "
        f"recorded in its append-only, hash-chained stores{f' up to {newest}' if newest else ''}, "
        f"redacted only where declared, and that they evidence control(s) {', '.join(met) or 'none'}. "
        "The bundle's integrity is proven by its signed manifest, not by this statement.")}


def run_controls(bundle: Mapping[str, Any]) -> dict[str, list[str]]:
    """Which records evidence which control, for a run or incident bundle."""
    trace = bundle.get("trace") or {}
    steps = trace.get("steps", ())
    monitoring = list(steps.policy_checks) if isinstance(steps, Steps) else \
        [s["content_hash"] for s in steps if s["step_type"] == "policy_check"]
    monitoring += [b["id"] for b in bundle.get("limit_breaches", [])]
    evaluated = [i["id"] for i in bundle.get("incidents", [])]
    if trace.get("violation_step_index") is not None:
        evaluated.append(trace["trace_id"])
    responded = [a["id"] for a in bundle.get("governance", []) if a["event_type"].startswith(("Incident", "Limit",
                                                                                              "PolicyProposal",
                                                                                              "Emergency"))]
    responded += [p["id"] for p in bundle.get("proposals", [])]
    return {"CC7.2": monitoring, "CC7.3": evaluated, "CC7.4": responded}


def slice_control(kind: str, record: Mapping[str, Any]) -> str:
    """The control one slice record evidences: responses are CC7.4, evaluations CC7.3, the rest monitoring."""
    if kind == "audit_entry":
        return _audit_control(record["event_type"])
    return "CC7.3" if record["severity"] in ("ERROR", "CRITICAL") else "CC7.2"


@functools.lru_cache(maxsize=1024)  # a ledger has a few dozen event types
def _audit_control(event: str) -> str:
    """An audit entry's control: a function of its event type alone."""
    if event.startswith(("IncidentAcknowledged", "IncidentResolved", "IncidentManuallyClosed", "Emergency",
                         "LimitOverride", "PolicyProposal", "PolicyRule")):
        return "CC7.4"
    if event in ("LimitBreached", "AccessDenied"):
        return "CC7.3"
    return "CC7.2"


def run_debrief(bundle: Mapping[str, Any]) -> dict[str, Any]:
    run, trace = bundle.get("run") or {}, bundle.get("trace") or {}
    violated = trace.get("violation_step_index") is not None
    headline = (f"Run {bundle['subject']} was stopped at step {trace['violation_step_index']} by policy "
                f"{trace.get('violation_policy_id')}" if violated else
                f"Run {bundle['subject']} finished with status {run.get('execution_status') or trace.get('status')}")
    return {
        "headline": headline,
        "outcome": run.get("outcome") or trace.get("status"),
        "impact": {"cost_cents": run.get("cost_cents", trace.get("total_cost_cents")),
                   "input_tokens": run.get("input_tokens"), "output_tokens": run.get("output_tokens"),
                   "steps": len(trace.get("steps", ()))},
        "policy": {"violated": violated, "policy_id": trace.get("violation_policy_id"),
                   "reason": trace.get("violation_reason")},
        "incidents": [{"id": i["id"], "severity": i["severity"], "state": i["lifecycle_state"]}
                      for i in bundle.get("incidents", [])],
        "decisions": [{"at": a["created_at"], "event": a["event_type"], "by": a["actor_type"]}
                      for a in bundle.get("governance", [])],
    }


class SliceSummary:
    """Counted while a slice streams by: nothing but counters is kept."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.count = 0
        self.first: str | None = None
        self.last: str | None = None
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.by_type: Counter[str] = Counter()
        self._by_control: Counter[str] = Counter()  # system records' (an audit entry's follows its event type)
        self.redacted = 0

    @property
    def by_control(self) -> Counter[str]:
        """Records per control (slice_control)."""
        if self.kind != "audit_entry":
            return self._by_control
        controls: Counter[str] = Counter()
        for event, count in self.by_type.items():
            controls[_audit_control(event)] += count
        return controls

    def add_all(self, records: Sequence[Mapping[str, Any]]) -> None:
        """``add`` of each record, in order (one loop for a batch: the same counters)."""
        if self.kind != "audit_entry":
            for record in records:
                self.add(record)
            return
        first, last, first_seq, last_seq, by_type = self.first, self.last, self.first_seq, self.last_seq, self.by_type
        redacted = 0
        for record in records:
            at = record["created_at"]
            if first is None or at < first:
                first = at
            if last is None or at > last:
                last = at
            if "seq" in record:
                if first_seq is None:
                    first_seq = record["seq"]
                last_seq = record["seq"]
            by_type[record["event_type"]] += 1
            if record["redacted"]:
                redacted += 1
        self.count += len(records)
        self.first, self.last, self.first_seq, self.last_seq = first, last, first_seq, last_seq
        self.redacted += redacted

    def add(self, record: Mapping[str, Any]) -> None:
        self.count += 1
        at = record["created_at"]
        self.first = at if self.first is None or at < self.first else self.first
        self.last = at if self.last is None or at > self.last else self.last
        if "seq" in record:
            self.first_seq = record["seq"] if self.first_seq is None else self.first_seq
            self.last_seq = record["seq"]
        self.by_type[record["event_type"]] += 1
        if self.kind != "audit_entry":
            self._by_control[slice_control(self.kind, record)] += 1
        self.redacted += bool(record["redacted"])

    def as_dict(self) -> dict[str, Any]:
        summary = {"count": self.count, "first_created_at": self.first, "last_created_at": self.last,
                   "by_event_type": dict(sorted(self.by_type.items())), "redacted_records": self.redacted}
        if self.kind == "audit_entry":
            summary.update(first_seq=self.first_seq, last_seq=self.last_seq)
        return summary


def slice_debrief(scope: ExportScope, summary: Mapping[str, Any]) -> dict[str, Any]:
    what = "audit ledger entries" if scope is ExportScope.AUDIT_SLICE else "system records"
    top = sorted(summary["by_event_type"].items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    return {"headline": f"{summary['count']} {what} from {summary['first_created_at'] or '-'} "
                        f"to {summary['last_created_at'] or '-'}",
            "top_event_types": [{"event_type": k, "count": v} for k, v in top],
            "redacted_records": summary["redacted_records"]}

