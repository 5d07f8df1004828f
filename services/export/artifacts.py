"""Artifacts: a bundle in its format — JSON, CSV, PDF or the ZIP evidence package.

Everything here is a pure function of the bundle (or of the slice's records): no
clock, no export id, no randomness, so the bytes are reproducible. Slices stream:
their records are redacted, written and forgotten as they come (an audit slice's a batch
of rows at a time: the 1,000 its reader fetches), so an export of a million ledger entries
holds one batch (and counters) in memory, not a million.
A run or incident bundle holds its few records (run, incidents, breaches, ledger
entries) but not its trace's steps, of which a run may have any number: they were
spooled as they were redacted (bundles.Steps) and are streamed into its JSON.

The ZIP package holds the evidence (evidence.json), the report (report.pdf), for
slices the records as CSV, a package manifest listing every member's SHA-256, that
manifest's DSSE envelope, and SHA256SUMS. It is signed inside with the same key
as the export (Ed25519 is deterministic, so the package is reproducible too). A slice's
package streams as well: its members are written to spools (temporary files past 1 MiB)
as the records pass, with their checksums, then zipped member by member into the sink.
No size limit; memory holds one record, the report's first PDF_TABLE_ROWS, and buffers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aos_evidence.kinds import BundleType, ExportFormat, ExportScope
from aos_recording import dsse
from aos_recording.hashing import artifact_digest, canonical_json
from services.export import bundles
from services.export.dbthread import ConnectionThread
from services.export.redaction import PROFILE
from services.export.render import (
    PDF_MAX_ROWS,
    Report,
    Section,
    Spool,
    ZipStream,
    csv_lines,
    csv_row,
    render_csv,
    render_pdf,
)

CHUNK_BYTES = 1024 * 1024  # one log_export_artifacts row, one DownloadExport message at most
PDF_TABLE_ROWS = PDF_MAX_ROWS  # a report lists this many records; the JSON and CSV carry all
EPOCH = bundles.EPOCH
newest_time = bundles.newest_time  # the latest RFC 3339 time in a bundle or record: dates its report and package


class Sink:
    """Receives an artifact's bytes, hands them on in chunks of CHUNK_BYTES and
    keeps the running size and checksum.

    With ``thread`` (an audit slice's export, dbthread), each chunk is hashed and handed on
    by that helper thread, behind the renderer: hashlib lets go of the GIL over a chunk, so
    the artifact's SHA-256 runs on the other core (the digest of the chunks in order is the
    digest of the bytes written); ``close`` waits for them all."""

    def __init__(self, flush: Callable[[int, bytes], None], thread: ConnectionThread | None = None) -> None:
        self._flush = flush
        self._thread = thread
        self._buffer = bytearray()
        self._digest = artifact_digest()
        self._chunks = 0
        self.size = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= CHUNK_BYTES:
            self._emit(bytes(self._buffer[:CHUNK_BYTES]))
            del self._buffer[:CHUNK_BYTES]

    def _emit(self, chunk: bytes) -> None:
        if self._thread is not None:
            self._thread.write(self._hand_on, self._chunks, chunk)
        else:
            self._hand_on(self._chunks, chunk)
        self._chunks += 1

    def _hand_on(self, number: int, chunk: bytes) -> None:
        self._digest.update(chunk)
        self._flush(number, chunk)

    def close(self) -> bytes:
        if self._buffer or not self._chunks:
            if self._buffer:
                self._emit(bytes(self._buffer))
            self._buffer.clear()
        if self._thread is not None:
            self._thread.drain()
        return self._digest.digest()


@dataclass(frozen=True)
class Rendered:
    size: int
    checksum: bytes
    redaction: dict[str, Any]    # {"profile": ..., "counts": {...}}
    records: int                 # records the artifact carries
    # Per record type, the entries the export covers: {"count"}, and for ledger entries
    # the seq range {"first_seq", "last_seq"} ("contiguous" when no filter can leave a
    # gap). Signed in the manifest, so a verifier finds a dropped, added or reordered entry.
    contents: dict[str, Any]


# --- run and incident bundles (their steps streamed) -------------------------------

def render_bundle(bundle: dict[str, Any], fmt: ExportFormat, counts: Mapping[str, int], key: dsse.SigningKey,
                  sink: Sink) -> Rendered:
    """A run or incident bundle's artifact. Its trace's steps, any number, come as
    bundles.Steps (spooled as they were written; a list is taken too) and are streamed into
    the JSON; the report reads what Steps kept for it. Closes the steps."""
    redaction = {"profile": PROFILE, "counts": dict(counts)}
    bundle = {**bundle, "redaction": redaction}
    trace = bundle.get("trace")
    if isinstance(trace, dict) and isinstance(trace.get("steps"), list):
        bundle["trace"] = {**trace, "steps": bundles.Steps.of(trace["steps"])}
    try:
        if fmt is ExportFormat.JSON:
            bundles.write_json(bundle, sink.write)
        elif fmt is ExportFormat.PDF:
            sink.write(render_pdf(bundle_report(bundle)))
        elif fmt is ExportFormat.ZIP:
            evidence = Spool()
            try:
                bundles.write_json(bundle, evidence.write)
                report = Spool.of(render_pdf(bundle_report(bundle)))
            except BaseException:
                evidence.close()
                raise
            package([("evidence.json", evidence), ("report.pdf", report)], bundle, newest_time(bundle), key, sink)
        else:
            raise ValueError(f"{fmt} is not a format for a {bundle['scope']} bundle")
    finally:
        if isinstance(bundle.get("trace"), dict) and isinstance(bundle["trace"].get("steps"), bundles.Steps):
            bundle["trace"]["steps"].close()
    return Rendered(sink.size, sink.close(), redaction, bundle_record_count(bundle), bundle_contents(bundle))


def seq_range(seqs: list[int], contiguous: bool = False) -> dict[str, Any]:
    stated: dict[str, Any] = {"count": len(seqs), "first_seq": min(seqs) if seqs else None,
                              "last_seq": max(seqs) if seqs else None}
    if contiguous:
        stated["contiguous"] = True
    return stated


def bundle_contents(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """What a run or incident bundle carries, per record type (an executive bundle: the
    ledger entries whose hashes it lists)."""
    contents: dict[str, Any] = {}
    if bundle.get("trace"):
        contents["trace_step"] = {"count": len(bundle["trace"]["steps"])}  # a list or bundles.Steps
    ledger = bundle["governance"] if "governance" in bundle else (bundle.get("evidence_hashes") or {}).get("ledger")
    if ledger is not None:
        contents["audit_entry"] = seq_range([e["seq"] for e in ledger])
    for name, kind in (("incidents", "incident"), ("limit_breaches", "limit_breach"), ("proposals", "proposal")):
        if name in bundle:
            contents[kind] = {"count": len(bundle[name])}
    if "run" in bundle:
        contents["llm_run"] = {"count": 1 if bundle["run"] else 0}
    return contents


def bundle_record_count(bundle: Mapping[str, Any]) -> int:
    trace = bundle.get("trace") or {}
    return (len(trace.get("steps", [])) + len(bundle.get("governance", [])) + len(bundle.get("incidents", []))
            + len(bundle.get("limit_breaches", [])) + len(bundle.get("proposals", []))
            + (1 if bundle.get("run") else 0))


def bundle_report(bundle: Mapping[str, Any]) -> Report:
    trace = bundle.get("trace") or {}
    sections, timeline, hashes = [], [], []
    if bundle.get("debrief"):
        d = bundle["debrief"]
        sections.append(Section("Debrief", paragraphs=[d["headline"]], columns=["Item", "Value"], rows=[
            [k, canonical_json(v).decode() if not isinstance(v, str) else v] for k, v in sorted(d.items())
            if k != "headline"]))
    if bundle.get("incident"):
        i = bundle["incident"]
        sections.append(Section("Incident", columns=["Field", "Value"],
                                rows=[[k, "" if v is None else str(v)] for k, v in i.items()]))
    hidden = 0  # the steps past the first PDF_MAX_ROWS: counted, not held
    if trace:
        point = trace["inflection_point"]
        steps: bundles.Steps = trace["steps"]
        sections.append(Section(
            "Trace", paragraphs=[f"Trace {trace['trace_id']} ({trace['status']}): inflection point "
                                 f"{point['kind']} at {point['at']}"
                                 + (f", step {point['step_index']} (marked *)" if point["step_index"] is not None
                                    else "")],
            columns=["Step", "Type", "Time", "Level", "Content hash"],
            rows=[[str(s["step_index"]) + (" *" if s["step_index"] == point["step_index"] else ""), s["step_type"],
                   s["timestamp"], s["level"], s["content_hash"]] for s in steps.first], total_rows=steps.count))
        hashes.append((f"trace {trace['trace_id']}", trace["content_hash"] or ""))
        hashes += [(f"step {s['step_index']}", s["content_hash"]) for s in steps.first]
        timeline += steps.events()
        hidden = steps.count - len(steps.first)
    for name, title, columns in (
            ("incidents", "Incidents", ("id", "severity", "lifecycle_state", "created_at")),
            ("limit_breaches", "Limit breaches", ("id", "limit_id", "value_at_breach", "limit_value", "breached_at")),
            ("proposals", "Policy proposals", ("id", "status", "created_at")),
            ("governance", "Audit ledger", ("seq", "event_type", "entity_type", "actor_type", "created_at"))):
        rows = bundle.get(name) or []
        if rows:
            sections.append(Section(title, columns=list(columns), rows=[[str(r[c]) for c in columns] for r in rows]))
    for entry in bundle.get("governance") or []:
        timeline.append((entry["created_at"], entry["event_type"], f"{entry['entity_type']} {entry['entity_id']}"))
        hashes.append((f"ledger seq {entry['seq']}", entry["chain_hash"]))
    for breach in bundle.get("limit_breaches") or []:
        timeline.append((breach["breached_at"], "LimitBreach", f"{breach['limit_id']}: {breach['value_at_breach']}"))
    if bundle.get("soc2"):
        sections.append(_soc2_section(bundle["soc2"]))
    # Past the first PDF_MAX_ROWS steps no step's hash is shown (the trace's comes first, then the
    # steps', then the ledger's), nor a step's event past the PDF_MAX_ROWS earliest (Steps.events).
    return Report(title=_TITLES[BundleType(bundle["bundle_type"])], subtitle=f"{bundle['scope']} {bundle['subject']}",
                  generated_from=newest_time(bundle), summary=_summary(bundle), sections=sections,
                  timeline=sorted(timeline), hashes=hashes, how_to_verify=HOW_TO_VERIFY,
                  timeline_total=len(timeline) + (steps.count - len(steps.events()) if trace else 0),
                  hashes_total=len(hashes) + hidden)


_TITLES = {BundleType.EVIDENCE: "Evidence bundle", BundleType.SOC2: "SOC 2 evidence (CC7.2, CC7.3, CC7.4)",
           BundleType.EXECUTIVE: "Executive debrief"}

HOW_TO_VERIFY = [
    "This report is one artifact of a signed export. Its SHA-256 is the checksum in the export's manifest, "
    "and the manifest is signed (DSSE, Ed25519) by the export signing key.",
    "Obtain that key's id out of band (not from a file that came with this report). Save the export's "
    "envelope (GetExport: dsse_envelope) as export.dsse.json and the public keys (ListSigningKeys) as "
    "keys.json, then run, with no database and no service:",
    "python -m aos_recording.verify_export ARTIFACT --envelope export.dsse.json --keys keys.json --key KEY_ID",
    "It answers VALID (exit 0) only for a signature by the key you pinned, made inside its validity, over "
    "this very artifact; UNSIGNED, UNTRUSTED_KEY, KEY_NOT_VALID_AT_SIGNING_TIME, SIGNATURE_INVALID or "
    "TAMPERED (non-zero) otherwise.",
]


def _summary(bundle: Mapping[str, Any]) -> list[tuple[str, str]]:
    counts = bundle["redaction"]["counts"]
    rows = [("Tenant", bundle["tenant_id"]), ("Scope", bundle["scope"]), ("Subject", str(bundle["subject"])),
            ("Bundle type", bundle["bundle_type"]),
            ("Redaction", f"{bundle['redaction']['profile']}: "
                          + (", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing redacted"))]
    if bundle.get("summary"):
        rows += [(k.replace("_", " "), canonical_json(v).decode() if isinstance(v, (dict, list)) else str(v))
                 for k, v in bundle["summary"].items()]
    return rows


def _soc2_section(soc2: Mapping[str, Any]) -> Section:
    return Section("SOC 2 control mapping", paragraphs=[soc2["attestation"]],
                   columns=["Control", "Evidenced", "Evidence"],
                   rows=[[c["control"], "yes" if c["evidenced"] else "no",
                          ", ".join(c["evidence"]) if isinstance(c["evidence"], list) else f"{c['evidence']} records"]
                         for c in soc2["controls"]])


def package(members: list[tuple[str, Spool]], bundle: Mapping[str, Any], newest: str, key: dsse.SigningKey,
            sink: Sink) -> None:
    """The ZIP evidence package into ``sink``: members, a signed manifest of them, SHA256SUMS.
    ``newest`` is the latest time in the bundle and its records (every entry's date)."""
    try:
        manifest = canonical_json({
            "format_version": "aos.evidence-package/v1", "tenant_id": bundle["tenant_id"], "scope": bundle["scope"],
            "subject": bundle["subject"], "bundle_type": bundle["bundle_type"], "redaction": bundle["redaction"],
            "files": [{"name": name, "size": spool.size, "sha256": spool.sha256} for name, spool in members]})
        envelope = dsse.envelope_json(dsse.sign_envelope(dsse.PACKAGE_PAYLOAD_TYPE, manifest, key)).encode()
        members = members + [("package-manifest.json", Spool.of(manifest)),
                             ("package-manifest.dsse.json", Spool.of(envelope))]
        sums = "".join(f"{spool.sha256}  {name}\n" for name, spool in members).encode()
        members.append(("SHA256SUMS", Spool.of(sums)))
        archive = ZipStream(sink.write, datetime.fromisoformat(newest.replace("Z", "+00:00")))
        for name, spool in members:
            archive.add(name, spool.chunks(), spool.size)
        archive.close()
    finally:
        for _, spool in members:
            spool.close()


# --- slices (large: streamed) -----------------------------------------------------

SLICE_COLUMNS = {
    "audit_entry": ("seq", "id", "created_at", "event_type", "entity_type", "entity_id", "actor_type", "actor_id",
                    "action_reason", "correlation_id", "before_state", "after_state", "content_hash", "prev_hash",
                    "chain_hash", "redacted"),
    "system_record": ("id", "tenant_id", "created_at", "component", "event_type", "severity", "summary", "details",
                      "caused_by", "actor_id", "correlation_id", "run_id", "environment_id", "content_hash",
                      "redacted"),
}


def render_slice(head: dict[str, Any], kind: str, records: Iterable[dict[str, Any]], fmt: ExportFormat,
                 writer: bundles.RecordWriter, key: dsse.SigningKey, sink: Sink) -> Rendered:
    """A slice's artifact. ``head`` is the bundle without its records (scope, filter,
    tenant, bundle type); ``records`` are already redacted, in order."""
    summary = bundles.SliceSummary(kind)
    bundle_type = BundleType(head["bundle_type"])
    soc2 = bundle_type is BundleType.SOC2
    executive = bundle_type is BundleType.EXECUTIVE

    def visit(record: dict[str, Any]) -> None:
        summary.add(record)
        if soc2:
            record["control"] = bundles.slice_control(kind, record)

    def visit_all(batch: list[dict[str, Any]]) -> None:  # an audit slice's batch of records
        summary.add_all(batch)
        if soc2:
            for record in batch:
                record["control"] = bundles.slice_control(kind, record)

    def counted() -> Iterator[dict[str, Any]]:
        for record in records:
            visit(record)
            yield record

    def redaction() -> dict[str, Any]:
        return {"profile": PROFILE, "counts": dict(writer.redactor.counts)}

    def tail() -> dict[str, Any]:
        done = summary.as_dict()
        extra = {"redaction": redaction(), "summary": done}
        if soc2:
            extra["soc2"] = bundles.soc2({c: summary.by_control[c] for c in bundles.SOC2_CONTROLS},
                                         str(head["subject"]), done["last_created_at"])
        if executive:
            extra["debrief"] = bundles.slice_debrief(ExportScope(head["scope"]), done)
        return extra

    if fmt is ExportFormat.JSON and not executive:
        if isinstance(records, bundles.AuditRecords):  # the records' JSON a batch at a time
            _stream_json(head, records.json_batches(visit_all), tail, sink, batches=True)
        else:
            _stream_json(head, counted(), tail, sink)
    elif fmt is ExportFormat.CSV:
        if executive:
            for _ in counted():
                pass
            rows = [("event_type", k, v) for k, v in sorted(summary.by_type.items())]
            rows += [("control", k, v) for k, v in sorted(summary.by_control.items())]
            sink.write(render_csv(("group", "key", "count"), rows))
        else:
            columns = SLICE_COLUMNS[kind] + (("control",) if soc2 else ())
            _write_batched(sink, csv_lines(columns, ([record.get(c) for c in columns] for record in counted())))
    elif fmt in (ExportFormat.JSON, ExportFormat.PDF):
        # Executive JSON, or any PDF: one pass, then the whole (small) document.
        shown: list[dict[str, Any]] = []
        for record in counted():
            if len(shown) < PDF_TABLE_ROWS and not executive:
                shown.append(record)
        bundle = {**head, **tail()}
        if fmt is ExportFormat.JSON:
            sink.write(canonical_json(bundle))
        else:
            sink.write(render_pdf(slice_report(bundle, kind, shown)))
    elif fmt is ExportFormat.ZIP:
        _slice_package(head, kind, counted(), tail, executive, soc2, key, sink)
    else:
        raise ValueError(f"unknown format {fmt}")
    if kind == "audit_entry":
        # An unfiltered audit slice is the ledger from its first kept entry on: no gap is legitimate.
        first, last = summary.first_seq, summary.last_seq  # both None, or both set
        seqs = [] if first is None or last is None else [first, last]
        contents = {kind: {**seq_range(seqs, contiguous=not head["subject"]), "count": summary.count}}
    else:
        contents = {kind: {"count": summary.count}}
    return Rendered(sink.size, sink.close(), redaction(), summary.count, contents)


def _slice_package(head: Mapping[str, Any], kind: str, records: Iterator[dict[str, Any]],
                   tail: Callable[[], dict[str, Any]], executive: bool, soc2: bool, key: dsse.SigningKey,
                   sink: Sink) -> None:
    """A slice's ZIP package in one pass over its records: evidence.json (without the records
    for an executive bundle) and records.csv spooled side by side, the report from the first
    PDF_TABLE_ROWS records, then the package. Same bytes as the whole bundle built in memory."""
    evidence, table = Spool(), Spool()
    columns = SLICE_COLUMNS[kind] + (("control",) if soc2 else ())
    shown: list[dict[str, Any]] = []
    newest = [EPOCH]

    def passing() -> Iterator[dict[str, Any]]:
        table.write(csv_row(columns))
        for record in records:
            table.write(csv_row([record.get(c) for c in columns]))
            if len(shown) < PDF_TABLE_ROWS:
                shown.append(record)
            newest[0] = max(newest[0], newest_time(record))
            yield record

    try:
        if executive:
            for _ in passing():
                pass
            bundle = {**head, **tail()}
            evidence.write(canonical_json(bundle))
        else:
            bundle = {**head, **_stream_json(head, passing(), tail, evidence)}
        report = render_pdf(slice_report(bundle, kind, shown))
    except BaseException:
        evidence.close()
        table.close()
        raise
    package([("evidence.json", evidence), ("records.csv", table), ("report.pdf", Spool.of(report))], bundle,
            max(newest[0], newest_time(bundle)), key, sink)


class _Writable(Protocol):
    def write(self, data: bytes) -> Any: ...


_BATCH_BYTES = 64 * 1024


def _write_batched(sink: _Writable, parts: Iterable[bytes]) -> None:
    """``parts`` into ``sink`` joined in batches of about _BATCH_BYTES: a sink write per record
    (its buffer, its digest, its chunking) cost more than the record's canonical JSON. The
    bytes are the same; a Sink re-cuts them into the same CHUNK_BYTES chunks."""
    batch: list[bytes] = []
    held = 0
    for data in parts:
        batch.append(data)
        held += len(data)
        if held >= _BATCH_BYTES:
            sink.write(b"".join(batch))
            batch.clear()
            held = 0
    if batch:
        sink.write(b"".join(batch))


def _stream_json(head: Mapping[str, Any], records: Iterator[Any], tail: Callable[[], dict[str, Any]],
                 sink: _Writable, *, batches: bool = False) -> dict[str, Any]:
    """RFC 8785 JSON of ``head`` + records + tail, written as it goes. JCS orders an
    object's members by key: the members before "records" come from ``head``, the
    records stream, and the members after (counted on the way) from ``tail``. With
    ``batches``, ``records`` gives the records' JSON already written, comma-separated, a
    batch at a time (bundles.AuditRecords.json_batches)."""
    before = {k: v for k, v in head.items() if k < "records"}
    sink.write(canonical_json(before)[:-1] + (b',"records":[' if before else b'{"records":['))
    if batches:
        first = True
        for batch in records:
            if batch:
                sink.write(batch if first else b"," + batch)
                first = False
    else:
        _write_batched(sink, (b"," + canonical_json(record) if n else canonical_json(record)
                              for n, record in enumerate(records)))
    after = {**{k: v for k, v in head.items() if k > "records"}, **tail()}
    if any(k < "records" for k in after):
        raise AssertionError("a member computed after the records must sort after them")
    sink.write(b"]" + (b"," + canonical_json(after)[1:] if after else b"}"))
    return after


def slice_report(bundle: Mapping[str, Any], kind: str, shown: Sequence[Mapping[str, Any]]) -> Report:
    columns = ("seq", "created_at", "event_type", "entity_type", "actor_type") if kind == "audit_entry" else \
        ("created_at", "component", "event_type", "severity", "caused_by")
    count = bundle["summary"]["count"]
    sections = []
    if bundle.get("debrief"):
        d = bundle["debrief"]
        sections.append(Section("Debrief", paragraphs=[d["headline"]], columns=["Event type", "Count"],
                                rows=[[t["event_type"], str(t["count"])] for t in d["top_event_types"]]))
    else:
        note = (f"The first {len(shown):,} of {count:,} records; the JSON and CSV exports carry all of them."
                if count > len(shown) else f"All {count:,} records.")
        sections.append(Section("Records", paragraphs=[note], columns=list(columns),
                                rows=[[str(r.get(c) if r.get(c) is not None else "") for c in columns]
                                      for r in shown]))
    if bundle.get("soc2"):
        sections.append(_soc2_section(bundle["soc2"]))
    hashes = [(f"ledger seq {r['seq']}", r["chain_hash"]) for r in shown[-20:]] if kind == "audit_entry" else []
    return Report(title=_TITLES[BundleType(bundle["bundle_type"])],
                  subtitle=f"{bundle['scope']} of tenant {bundle['tenant_id']}",
                  generated_from=bundle["summary"]["last_created_at"] or EPOCH, summary=_summary(bundle),
                  sections=sections, timeline=[], hashes=hashes, how_to_verify=HOW_TO_VERIFY)

