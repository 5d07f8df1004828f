"""Sample inputs shared by the unit tests (and the child interpreters some of them start)."""
from __future__ import annotations

from dataclasses import replace

from services.export.render import Report, Section


def sample_report(**changes) -> Report:
    """A small report with every part filled; ``changes`` replace its fields."""
    report = Report(
        title="Evidence bundle",
        subtitle="Evidence bundle — LLM run run-123",
        generated_from="2026-01-13T12:00:00.123456Z",
        summary=[("Run", "run-123"), ("Records", "3")],
        sections=[Section("Ledger", paragraphs=["Entries in sequence order."], columns=["seq", "event", "state"],
                          rows=[["1", "LimitCreated", '{"max_value":5}'], ["2", "LimitUpdated", '{"max_value":6}']])],
        timeline=[("2026-01-13T11:59:00.000000Z", "step", "prompt sent"),
                  ("2026-01-13T12:00:00.000000Z", "step", "completion received")],
        hashes=[("Trace content hash", "ab" * 32), ("Chain head", "0123456789abcdef" * 8)],
        how_to_verify=["Recompute every hash with the offline verifier:", "aos-verify bundle.zip"],
    )
    return replace(report, **changes)
