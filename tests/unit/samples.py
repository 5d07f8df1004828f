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


def ledger_entries(n: int, tenant: str = "tenant-unit") -> list[dict]:
    """n ledger entries as an audit slice carries them, with their real hashes and links
    (times spread over days, so dates differ)."""
    from aos_recording import hashing

    prev, out = hashing.GENESIS, []
    for seq in range(1, n + 1):
        entry = {"id": f"aud-{seq}", "tenant_id": tenant, "event_type": "PolicyRuleCreated",
                 "entity_type": "POLICY_RULE", "entity_id": f"rule-{seq}", "actor_type": "HUMAN", "actor_id": "u-1",
                 "action_reason": "reviewed", "correlation_id": None,
                 "created_at": f"2026-11-{1 + seq // 1440 % 28:02d}T{seq // 60 % 24:02d}:{seq % 60:02d}:00.000000Z",
                 "before_state": None, "after_state": {"n": seq}}
        content = hashing.ledger_content_hash(entry)
        chain = hashing.chain_hash(prev, content)
        out.append({**entry, "seq": seq, "content_hash": content.hex(), "prev_hash": prev.hex(),
                    "chain_hash": chain.hex(), "redacted": False})
        prev = chain
    return out


def system_records(n: int, tenant: str = "tenant-unit") -> list[dict]:
    """n system records as a system slice carries them, in (created_at, id) order."""
    return [{"id": f"sys-{i:06d}", "tenant_id": tenant,
             "created_at": f"2026-11-{1 + i // 1440 % 28:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00.000000Z",
             "component": "api", "event_type": "DEPLOY", "severity": ("INFO", "ERROR", "CRITICAL")[i % 3],
             "summary": "s", "details": {"i": i}, "caused_by": "SYSTEM", "actor_id": None, "correlation_id": None,
             "run_id": None, "environment_id": None, "content_hash": "ab" * 32, "redacted": False}
            for i in range(n)]
