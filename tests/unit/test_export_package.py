"""A ZIP evidence package streams (no in-memory assembly, no record cap) and still comes out
byte for byte as the package built whole in memory did before: a package made before
streaming re-renders identically (VerifyExport's reproducibility check), and the same
request over the same records gives the same bytes (SPEC INV-LOGS-004).

The reference below is the former in-memory construction, kept here as the oracle."""
from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest

from aos_evidence.kinds import BundleType, ExportScope
from aos_recording import dsse
from aos_recording.hashing import canonical_json, sha256
from services.export import artifacts, bundles
from services.export.redaction import PROFILE
from services.export.render import ZipStream, render_csv, render_pdf
from tests.unit.samples import ledger_entries as ledger, system_records

TENANT = "tenant-unit"


def _old_zip(members: list[tuple[str, bytes]], timestamp: datetime) -> bytes:
    when = max(timestamp, datetime.fromisoformat("1980-01-01T00:00:00+00:00"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(when.year, when.month, when.day, when.hour, when.minute,
                                                    when.second))
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return out.getvalue()


def _old_package(members: list[tuple[str, bytes]], bundle: Mapping[str, Any], key: dsse.SigningKey) -> bytes:
    manifest = canonical_json({
        "format_version": "aos.evidence-package/v1", "tenant_id": bundle["tenant_id"], "scope": bundle["scope"],
        "subject": bundle["subject"], "bundle_type": bundle["bundle_type"], "redaction": bundle["redaction"],
        "files": [{"name": name, "size": len(data), "sha256": sha256(data).hex()} for name, data in members]})
    envelope = dsse.envelope_json(dsse.sign_envelope(dsse.PACKAGE_PAYLOAD_TYPE, manifest, key)).encode()
    members = members + [("package-manifest.json", manifest), ("package-manifest.dsse.json", envelope)]
    sums = "".join(f"{sha256(data).hex()}  {name}\n" for name, data in members).encode()
    stamp = datetime.fromisoformat(artifacts.newest_time(bundle).replace("Z", "+00:00"))
    return _old_zip(members + [("SHA256SUMS", sums)], stamp)


def _old_slice_zip(head: dict[str, Any], kind: str, records: list[dict[str, Any]], key: dsse.SigningKey) -> bytes:
    """The slice package as it was assembled in memory (before streaming)."""
    summary = bundles.SliceSummary(kind)
    bundle_type = BundleType(head["bundle_type"])
    soc2, executive = bundle_type is BundleType.SOC2, bundle_type is BundleType.EXECUTIVE
    kept = []
    for record in records:
        summary.add(record)
        if soc2:
            record["control"] = bundles.slice_control(kind, record)
        kept.append(record)
    done = summary.as_dict()
    bundle = {**head, "redaction": {"profile": PROFILE, "counts": {}}, "summary": done}
    if soc2:
        bundle["soc2"] = bundles.soc2({c: summary.by_control[c] for c in bundles.SOC2_CONTROLS},
                                      str(head["subject"]), done["last_created_at"])
    if executive:
        bundle["debrief"] = bundles.slice_debrief(ExportScope(head["scope"]), done)
    else:
        bundle["records"] = kept
    columns = artifacts.SLICE_COLUMNS[kind] + (("control",) if soc2 else ())
    members = [("evidence.json", canonical_json(bundle)),
               ("records.csv", render_csv(columns, [[r.get(c) for c in columns] for r in kept])),
               ("report.pdf", render_pdf(artifacts.slice_report(bundle, kind, kept[:artifacts.PDF_TABLE_ROWS])))]
    return _old_package(members, bundle, key)


def _streamed(head: dict[str, Any], kind: str, records: list[dict[str, Any]], key: dsse.SigningKey) -> bytes:
    chunks: list[bytes] = []
    sink = artifacts.Sink(lambda n, data: chunks.append(data))
    rendered = artifacts.render_slice(head, kind, iter([dict(r) for r in records]),
                                      artifacts.ExportFormat.ZIP, bundles.RecordWriter(), key, sink)
    data = b"".join(chunks)
    assert (rendered.size, rendered.checksum) == (len(data), sha256(data))
    return data


@pytest.fixture(scope="module")
def key() -> dsse.SigningKey:
    return dsse.SigningKey.generate()


@pytest.mark.parametrize("bundle_type", ["EVIDENCE", "SOC2", "EXECUTIVE"])
@pytest.mark.parametrize("scope", ["AUDIT_SLICE", "SYSTEM_SLICE"])
def test_a_streamed_slice_package_is_the_package_built_in_memory(key, scope, bundle_type):
    # More records than the report lists, so the report's cut and the CSV's whole both show.
    n = artifacts.PDF_TABLE_ROWS + 37
    records, kind = (ledger(n), "audit_entry") if scope == "AUDIT_SLICE" else (system_records(n), "system_record")
    head = {"format_version": bundles.FORMAT_VERSION, "tenant_id": TENANT, "scope": scope,
            "subject": {"event_type": "PolicyRuleCreated"}, "bundle_type": bundle_type}
    data = _streamed(head, kind, records, key)
    assert data == _old_slice_zip(dict(head), kind, [dict(r) for r in records], key)
    assert _streamed(head, kind, records, key) == data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["evidence.json", "records.csv", "report.pdf", "package-manifest.json",
                                      "package-manifest.dsse.json", "SHA256SUMS"]


def test_an_empty_slice_package_is_the_package_built_in_memory(key):
    head = {"format_version": bundles.FORMAT_VERSION, "tenant_id": TENANT, "scope": "AUDIT_SLICE",
            "subject": {}, "bundle_type": "EVIDENCE"}
    assert _streamed(head, "audit_entry", [], key) == _old_slice_zip(dict(head), "audit_entry", [], key)


def test_zip_members_larger_than_the_spool_stream_through_temporary_files():
    # Members past the 1 MiB spool, given in odd chunks: the same bytes as writestr of each whole.
    big = b"".join(b"%08d,ledger entry,PolicyRuleCreated\r\n" % i for i in range(90_000))
    members = [("records.csv", big), ("small.txt", b"x"), ("empty", b"")]
    stamp = datetime.fromisoformat("2026-11-01T12:00:00+00:00")
    out = bytearray()
    stream = ZipStream(out.extend, stamp)
    for name, data in members:
        stream.add(name, (data[i:i + 65_537] for i in range(0, len(data), 65_537)), len(data))
    stream.close()
    assert bytes(out) == _old_zip(members, stamp)


def test_a_member_shorter_than_announced_is_refused():
    stream = ZipStream(bytearray().extend, datetime.fromisoformat("2026-11-01T12:00:00+00:00"))
    with pytest.raises(ValueError, match="announced"):
        stream.add("a.txt", [b"abc"], 4)


def _lazy_ledger(n: int):
    """n ledger entries made one at a time (as a server-side cursor hands them over)."""
    for seq in range(1, n + 1):
        yield {"id": f"aud-{seq}", "tenant_id": TENANT, "event_type": "PolicyRuleCreated", "entity_type": "POLICY_RULE",
               "entity_id": f"rule-{seq}", "actor_type": "HUMAN", "actor_id": "u-1", "action_reason": "reviewed " * 20,
               "correlation_id": None, "created_at": f"2026-11-01T12:{seq % 60:02d}:00.000000Z",
               "before_state": {"n": seq - 1, "note": "x" * 200}, "after_state": {"n": seq, "note": "y" * 200},
               "seq": seq, "content_hash": "ab" * 32, "prev_hash": "cd" * 32, "chain_hash": "ef" * 32,
               "redacted": False}


def _peak_while_packaging(n: int, key: dsse.SigningKey) -> tuple[int, int]:
    """(the Python heap's peak while a slice of n records is packaged, the package's size)."""
    import tracemalloc

    head = {"format_version": bundles.FORMAT_VERSION, "tenant_id": TENANT, "scope": "AUDIT_SLICE", "subject": {},
            "bundle_type": "EVIDENCE"}
    size = 0

    def flush(_n: int, data: bytes) -> None:
        nonlocal size
        size += len(data)

    tracemalloc.start()
    try:
        artifacts.render_slice(head, "audit_entry", _lazy_ledger(n), artifacts.ExportFormat.ZIP,
                               bundles.RecordWriter(), key, artifacts.Sink(flush))
        return tracemalloc.get_traced_memory()[1], size
    finally:
        tracemalloc.stop()


def test_packaging_a_slice_holds_no_more_memory_for_six_times_the_records(key):
    # Measured: a 6.6 MiB peak for 2,000 records and 6.4 MiB for 12,000 (the report's 500 rows the most).
    # Streaming: the heap holds one record, the report's first rows and the buffers, whatever the
    # slice's size (the in-memory package held every record, its JSON, its CSV and the ZIP).
    small, _ = _peak_while_packaging(2_000, key)
    large, size = _peak_while_packaging(12_000, key)
    assert size > 256 * 1024              # compressed from members of ~13 MiB (JSON) and ~12 MiB (CSV)
    assert large < small + 1024 * 1024, (small, large)
    assert large < 12 * 1024 * 1024, large
