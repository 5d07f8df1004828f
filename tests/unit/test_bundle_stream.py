"""Run and incident bundles stream their steps (issue #19): same bytes as when they were built
whole in memory, memory that does not grow with the run's steps.

The digests in PINNED were computed with main at b51d5bb (the bundle assembled in memory:
``writer.trace(trace, list_of_steps)``, ``_views``, ``artifacts.render_bundle``) from the rows
of tests/unit/bundle_rows.py: a run of 0, 30 and 700 steps (700: past the report's 500-row
cut in its trace table, timeline and hashes) and its incident, every bundle type and format.
VerifyExport re-renders a stored export and compares, so these bytes must never change.
"""
from __future__ import annotations

import tracemalloc

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aos_evidence.kinds import BundleType, ExportFormat, ExportScope
from aos_recording import dsse
from aos_recording.hashing import canonical_json
from services.export import artifacts, builder, bundles, render as render_module
from tests.unit import bundle_rows

MAX_SEQ = 50
KEY = dsse.SigningKey.from_private(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))

# sha256 of each artifact as main at b51d5bb rendered it: (scope, bundle type, format, steps).
PINNED = {
    ("LLM_RUN", "EVIDENCE", "JSON", 0): "ad571b7c30472102c7dc8081d88c0a8e357ee2e79927586cea2cfc2227fe764b",
    ("LLM_RUN", "EVIDENCE", "PDF", 0): "1e378c40ece41b7ac1ab3f05f464742277b6a677284539beeebc89c9d2092fcc",
    ("LLM_RUN", "EVIDENCE", "ZIP", 0): "da610ebc69b43ed3c5d4d40301304d2fe9d739bbdc23517b14efa1029fe19618",
    ("LLM_RUN", "SOC2", "JSON", 0): "f920f69e93ecc15f60faa25d20488938002705b71e3fe91e9ac44db0aa1e147d",
    ("LLM_RUN", "EVIDENCE", "JSON", 30): "63ae2310cacf65b8d728e5c9608d38541a33219a567b3416136c12cd762a81d4",
    ("LLM_RUN", "EVIDENCE", "PDF", 30): "382891fc51ba1579d4eac1c783c5c880dbb48e4ec6ae9626b765952c4d3b6756",
    ("LLM_RUN", "EVIDENCE", "ZIP", 30): "9a3e61ccd87b85b7fbd83ae20467f807469198df00702f69e840e200dcd381ba",
    ("LLM_RUN", "SOC2", "JSON", 30): "ff381ea8d47cb2775d8ab20aee6d5ebfdd3d7277c65ff4a5c2c25cecfbb29cb0",
    ("LLM_RUN", "SOC2", "PDF", 30): "20585b856e844f92db254b9b961caf20ddd8d9045330f7d4b3b042661705ebcc",
    ("LLM_RUN", "SOC2", "ZIP", 30): "e85adde339f047caf3f1e734c555daf7ba45217a2664666fb0efa601df5dde66",
    ("LLM_RUN", "EXECUTIVE", "JSON", 30): "48ae97546aed34af1e842172a62103a2b64116eaffabda8f12471ec81d92ca8d",
    ("LLM_RUN", "EXECUTIVE", "PDF", 30): "8ecccb7445d04f63639afb16e6dfe4c168f9380da63b22efae479afedcc08f32",
    ("LLM_RUN", "EXECUTIVE", "ZIP", 30): "0224e13cdcafe505010cf975eb90335f2d861d670f32df89497ea199610e87bf",
    ("INCIDENT", "EVIDENCE", "JSON", 30): "84839d53caa82fbac822a24a416f4aeda777b67b3c924a4aa3ee6b6ebafeca35",
    ("INCIDENT", "EVIDENCE", "PDF", 30): "6c31721b3e12a9e67d01a4303453409d83070a124af441d0b0c34bb78ffc7810",
    ("INCIDENT", "EVIDENCE", "ZIP", 30): "5c35a9e32272f52aea7a7975b7174dd3cdcfbbd2a756703fe5f04fc25b5873b5",
    ("INCIDENT", "SOC2", "JSON", 30): "6d164b36fe51a4909fc0deea102ec697e462c994adbb910b45a0e68e0dd325ae",
    ("INCIDENT", "SOC2", "PDF", 30): "91033288d9ad565df5ebc06cd2ba890f6d0515e2784d10b83ae3790e2ab12d8a",
    ("INCIDENT", "SOC2", "ZIP", 30): "9115a0f882bb900f0440d70cda35c1e267d351c5995409e2089c6b1a1e565625",
    ("INCIDENT", "EXECUTIVE", "JSON", 30): "64d7932cf3a2590b7137a0c36f123bc47ce2cd249494949ce0f2e70761b51588",
    ("INCIDENT", "EXECUTIVE", "PDF", 30): "ce28517fc76e7e79fa34a28bd26c934a3a092bf0446b2993d1afacf9b0f24eec",
    ("INCIDENT", "EXECUTIVE", "ZIP", 30): "31fa7823e0af9f7dea1b978240d0fa590747523ac416f692280a7ed696b7a689",
    ("LLM_RUN", "EVIDENCE", "JSON", 700): "f305ebb8bd8237cfc69e3f48fa801b7c72b7fc109fc8c7563d2c3b3bfe22236f",
    ("LLM_RUN", "EVIDENCE", "PDF", 700): "dd42fa9927fccd5f9604729280c47343a2ffd1fea4c91a114dc1dee25e3d0ba6",
    ("LLM_RUN", "EVIDENCE", "ZIP", 700): "255adc3ef3446c2124b03f7a9719b146bea810c4847922859eb95bf459d768f7",
    ("LLM_RUN", "SOC2", "JSON", 700): "e9545383d4f53d7dbba7b3d7028631228f2411ecd2dc066bcfe9c6504592b899",
    ("LLM_RUN", "EXECUTIVE", "JSON", 700): "b7a19dfd3885c96b55b49f60d65f8396410c82e51b559842105dbe438b7c18ac",
    ("INCIDENT", "EVIDENCE", "JSON", 700): "cd42af7d958e1a1ca974344c60bbd6985c43aea713a80025e729d7248cc1bb96",
    ("INCIDENT", "SOC2", "JSON", 700): "acbb2d55c1679bc9d90e35ea16d3b1ea59d47e13fdf057be24259e4bf1607bac",
    ("INCIDENT", "SOC2", "ZIP", 700): "008fe7c34d78284947a65a60ce5667cabc64367093360586184dd9e217bd7089",
    ("INCIDENT", "EXECUTIVE", "JSON", 700): "40c902b94109dbb1e436e2135b64acbb6495d1b6a4e4ac39804c409899b7c174",
}


def bundle(scope: ExportScope, bundle_type: BundleType, steps: int, writer: bundles.RecordWriter) -> dict:
    """The bundle as builder._gather makes it, from bundle_rows' rows (the steps a generator)."""
    plan = builder.Plan(tenant_id="t", scope=scope, bundle_type=bundle_type, format=ExportFormat.JSON,
                        run_id="run-1" if scope is ExportScope.LLM_RUN else None,
                        incident_id="inc-1" if scope is ExportScope.INCIDENT else None)
    rows = bundle_rows.run_rows(steps)
    run = builder.run_evidence(writer, rows["run"], rows["trace"], rows["steps"](), governance=rows["governance"],
                               incidents=rows["incidents"], breaches=rows["breaches"], max_seq=MAX_SEQ)
    if scope is ExportScope.INCIDENT:
        incident = bundle_rows.incident_rows()
        run = builder.incident_evidence(writer, incident["incident"], run, incident["entries"],
                                        incident["proposals"], MAX_SEQ)
    return builder._views({**builder._head(plan), **run})


def render(scope: ExportScope, bundle_type: BundleType, fmt: ExportFormat, steps: int,
           out: bytearray | None = None) -> artifacts.Rendered:
    writer = bundles.RecordWriter(step_json=bundle_type is not BundleType.EXECUTIVE)
    made = bundle(scope, bundle_type, steps, writer)
    sink = artifacts.Sink(lambda _n, data: out.extend(data) if out is not None else None)
    return artifacts.render_bundle(made, fmt, writer.redactor.counts, KEY, sink)


@pytest.mark.parametrize("case", sorted(PINNED), ids=lambda c: "-".join(map(str, c)))
def test_bundle_bytes_are_main_s(case):
    scope, bundle_type, fmt, steps = case
    rendered = render(ExportScope[scope], BundleType[bundle_type], ExportFormat[fmt], steps)
    assert rendered.checksum.hex() == PINNED[case]
    if bundle_type != "EXECUTIVE":
        assert rendered.contents["trace_step"] == {"count": steps}


@pytest.mark.parametrize("scope", [ExportScope.LLM_RUN, ExportScope.INCIDENT])
def test_streamed_json_is_the_whole_bundle_s_canonical_json(scope):
    """The oracle without pins: canonical_json of the bundle with its steps as a list (how it
    was rendered before) — over 3,000 steps, so the spools roll over to their files."""
    out = bytearray()
    rendered = render(scope, BundleType.SOC2, ExportFormat.JSON, 3000, out)
    writer = bundles.RecordWriter()
    whole = bundle(scope, BundleType.SOC2, 3000, writer)
    steps = whole["trace"]["steps"]
    rows = bundle_rows.run_rows(3000)
    whole["trace"] = {**whole["trace"], "steps": [writer.step(s) for s in rows["steps"]()]}
    steps.close()
    assert bytes(out) == canonical_json({**whole, "redaction": rendered.redaction})
    assert rendered.records == bundle_rows_count(whole)
    assert whole["soc2"]["controls"][0]["evidence"][:3] == sorted(
        s["content_hash"] for s in whole["trace"]["steps"] if s["step_type"] == "policy_check")[:3]


def bundle_rows_count(whole: dict) -> int:
    return (len(whole["trace"]["steps"]) + len(whole["governance"]) + len(whole["incidents"])
            + len(whole["limit_breaches"]) + len(whole.get("proposals", [])) + 1)


def _peak(fmt: ExportFormat, bundle_type: BundleType, steps: int) -> int:
    tracemalloc.start()
    try:
        render(ExportScope.LLM_RUN, bundle_type, fmt, steps)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("fmt", "bundle_type"), [(ExportFormat.JSON, BundleType.EVIDENCE),
                                                  (ExportFormat.JSON, BundleType.SOC2),
                                                  (ExportFormat.ZIP, BundleType.EVIDENCE)])
def test_memory_does_not_grow_with_the_steps(fmt, bundle_type, monkeypatch):
    """A run of 4,000 steps renders in about the memory one of 1,000 does: < 256 KiB more for
    3,000 more steps, while their JSON alone is ~1 MB and their records as dicts several times
    that. What grows: the policy checks' hashes (a fifth of these steps, ~113 bytes each), which
    SOC2's CC7.2 lists. The buffers that are constant (spools held in memory up to SPOOL_BYTES,
    the sink's CHUNK_BYTES) are made 64 KiB and the report's tables 20 rows (reportlab under
    tracemalloc is slow; the report's size does not depend on the steps past its cut), so that
    what is left to grow is what the steps would hold."""
    monkeypatch.setattr(render_module, "PDF_MAX_ROWS", 20)
    monkeypatch.setattr(render_module, "SPOOL_BYTES", 64 * 1024)
    monkeypatch.setattr(artifacts, "CHUNK_BYTES", 64 * 1024)
    small, large = _peak(fmt, bundle_type, 1000), _peak(fmt, bundle_type, 4000)
    assert large - small < 256 * 1024, (small, large)


def test_steps_keep_the_report_s_earliest_events_and_first_rows():
    steps = bundles.Steps(json=False, report_rows=3)
    for i, at in enumerate(["2026-01-01T00:00:05.000000Z", "2026-01-01T00:00:01.000000Z",
                            "2026-01-01T00:00:09.000000Z", "2026-01-01T00:00:03.000000Z",
                            "2026-01-01T00:00:02.000000Z", "2026-01-01T00:00:07.000000Z",
                            "2026-01-01T00:00:00.000000Z"]):
        steps.add({"step_index": i, "step_type": "policy_check" if i % 2 else "llm_call", "timestamp": at,
                   "level": "INFO", "content_hash": f"h{i}"})
    assert [e[0][17:19] for e in steps.events()] == ["00", "01", "02"]
    assert [s["step_index"] for s in steps.first] == [0, 1, 2]
    assert steps.count == len(steps) == 7 and steps.policy_checks == ["h1", "h3", "h5"]
    assert steps.newest == "2026-01-01T00:00:09.000000Z"
    with pytest.raises(ValueError, match="without their JSON"):
        list(steps.json_chunks())
