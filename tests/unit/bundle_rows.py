"""Rows of one run and one incident, as the export's queries return them, for the run and
incident bundle tests (tests/unit/test_bundle_stream.py): a run of many steps whose payloads
carry text to redact, nested states, floats, non-BMP text and controls; steps out of time
order; policy checks; breaches; governance entries of the run and of the incident.
Deterministic: the same arguments give the same rows."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

from aos_recording import hashing

T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=timezone.utc)
TEXTS = ["plain", "é and ü", "\U0001f602 emoji", "\ufb33 dalet", "tab\there", "line\nbreak", "quote \" back \\",
         "=SUM(A1)", "-5", "ctl \x01\x1f\x7f", "alice@example.com", "Bearer sk-proj-abcdefghijklmnopqrstuvwxyz012345",
         "", "comma, and \"quotes\"", "\u2028\u2029", "2026-03-01T09:00:00.000000Z"]
STEP_TYPES = ["llm_call", "tool_call", "policy_check", "decision", "output"]


# The keys of generated states: redacted ones, non-BMP and presentation forms (RFC 8785 sorts by
# UTF-16 units), and "steps" (a bundle's own member name) unless a caller passes its own list.
KEYS = ("n", "password", "api_key", "input_tokens", "\U0001f602", "\ufb33", "z", "a", "Authorization", "é", "steps")


def state(rng: random.Random, depth: int = 0, keys: tuple[str, ...] = KEYS, texts: list[str] = TEXTS) -> Any:
    """A random JSON value of the shapes evidence states take (test_export_bytes pins artifacts
    made from these: the draws must not change)."""
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return rng.randrange(-10**6, 10**6)
    if kind == 1:
        return rng.choice([0.5, 1.0, 1e21, 1e-7, 2.5e-3, -0.0, 123456.789, 1 / 3])
    if kind == 2:
        return rng.choice(texts)
    if kind == 3:
        return rng.choice([None, True, False])
    if kind in (4, 5):
        return rng.choice([2 ** 53 - 1, -(2 ** 53 - 1), 0, 7])
    if kind == 6:
        return [state(rng, depth + 1, keys, texts) for _ in range(rng.randrange(4))]
    return {rng.choice(keys): state(rng, depth + 1, keys, texts) for _ in range(rng.randrange(5))}


def _hash(rng: random.Random) -> str:
    return rng.randbytes(32).hex()


def link(row: dict[str, Any], prev: str) -> str:
    """Gives ``row`` its content hash and its place after ``prev`` in the chain; returns its chain hash."""
    row["content_hash"] = hashing.ledger_content_hash(row)
    row["prev_hash"] = prev
    row["chain_hash"] = hashing.chain_hash(prev, row["content_hash"])
    return row["chain_hash"]


def ledger(rng: random.Random, first_seq: int, count: int, run_id: str, prefix: str) -> list[dict[str, Any]]:
    rows, prev = [], hashing.GENESIS
    for seq in range(first_seq, first_seq + count):
        row = {"id": f"t.{prefix}-{seq}", "tenant_id": "t", "seq": seq,
               "event_type": rng.choice(["RunCompleted", "LimitBreached", "PolicyRuleUpdated", "IncidentResolved",
                                         "EmergencyStop", "PolicyProposalCreated"]),
               "entity_type": rng.choice(["RUN", "LIMIT", "POLICY_RULE", "INCIDENT"]),
               "entity_id": f"e-{rng.randrange(50)}", "actor_type": rng.choice(["AGENT", "HUMAN", "SYSTEM"]),
               "actor_id": rng.choice(TEXTS + ["actor-1"]), "action_reason": rng.choice([None, *TEXTS]),
               "correlation_id": run_id,
               "created_at": T0 + timedelta(seconds=seq * 37, microseconds=rng.randrange(10**6)),
               "before_state": rng.choice([None, state(rng)]), "after_state": state(rng), "hash_version": 1}
        prev = link(row, prev)
        rows.append(row)
    return rows


def run_rows(steps: int, seed: int = 19, run_id: str = "run-1") -> dict[str, Any]:
    """{"run", "trace", "governance", "incidents", "breaches"} and a function giving the steps
    (``"steps"``: called again, it gives the same rows afresh, so a test holds none of them)."""
    rng = random.Random(seed)
    trace_id = f"tr-{run_id}"
    run = {"id": f"llm-{run_id}", "tenant_id": "t", "run_id": run_id, "trace_id": trace_id, "agent_id": "agent-7",
           "project_id": "p-1", "provider": "openai", "model": "gpt-x", "execution_status": "FAILED",
           "executor_type": "AGENT", "outcome": "STOPPED", "termination_reason": "Bearer sk-proj-" + "a" * 30,
           "input_tokens": 1234, "output_tokens": 567, "cost_cents": 89, "source": "sdk",
           "started_at": T0, "completed_at": T0 + timedelta(hours=2), "created_at": T0, "content_hash": _hash(rng)}
    violation = steps // 2 if steps else None
    trace = {"trace_id": trace_id, "tenant_id": "t", "run_id": run_id, "agent_id": "agent-7", "status": "VIOLATED",
             "started_at": T0, "completed_at": T0 + timedelta(hours=2), "termination_reason": "stopped by policy",
             "step_count": steps, "total_tokens": 99, "total_cost_cents": 12, "content_hash": _hash(rng),
             "policy_snapshot_id": "ps-1", "policy_snapshot": {"rules": [{"id": "r1", "password": "hunter2"}],
                                                               "steps": []},
             "incident_id": "inc-1", "violation_step_index": violation,
             "violation_timestamp": T0 + timedelta(minutes=30) if steps else None,
             "violation_policy_id": "pol-1", "violation_reason": "alice@example.com exceeded"}
    step_seed = rng.randrange(2**32)

    def step_rows():
        srng = random.Random(step_seed)
        for i in range(steps):
            yield {"id": f"{trace_id}-{i}", "trace_id": trace_id, "tenant_id": "t", "step_index": i,
                   "step_type": srng.choice(STEP_TYPES), "level": srng.choice(["INFO", "WARN", "ERROR"]),
                   "source": "sdk",
                   # Out of time order now and then: the report's timeline sorts.
                   "timestamp": T0 + timedelta(seconds=i * 3 - srng.randrange(40), microseconds=srng.randrange(10**6)),
                   "tokens": srng.randrange(1000), "cost_cents": srng.randrange(100), "duration_ms": srng.randrange(5000),
                   "input_data": srng.choice([None, state(srng)]), "output_data": state(srng),
                   "metadata": srng.choice([None, {"note": srng.choice(TEXTS)}]), "content_hash": _hash(srng),
                   "hash_version": 1}

    incidents = [{"id": f"inc-{n}", "title": rng.choice(TEXTS), "description": rng.choice(TEXTS),
                  "category": "POLICY", "severity": rng.choice(["HIGH", "LOW"]), "lifecycle_state": "OPEN",
                  "source_run_id": run_id, "trace_id": trace_id, "policy_id": "pol-1",
                  "created_at": T0 + timedelta(minutes=31 + n), "acknowledged_at": None, "resolved_at": None}
                 for n in (1, 2)]
    breaches = [{"id": f"br-{n}", "limit_id": "lim-1", "run_id": run_id, "breach_type": "COST",
                 "value_at_breach": 1.5 + n, "limit_value": 1.0, "details": {"why": rng.choice(TEXTS)},
                 "breached_at": T0 + timedelta(minutes=29, seconds=n)} for n in range(3)]
    return {"run": run, "trace": trace, "steps": step_rows, "incidents": incidents, "breaches": breaches,
            "governance": ledger(rng, 1, 40, run_id, "run")}


def incident_rows(seed: int = 23) -> dict[str, Any]:
    """The incident of run_rows' run, its own ledger entries (some shared with the run's) and proposals."""
    rng = random.Random(seed)
    incident = {"id": "inc-1", "title": "Cost over limit: Bearer sk-proj-" + "b" * 30, "description": "see run",
                "category": "POLICY", "severity": "HIGH", "lifecycle_state": "ACKNOWLEDGED",
                "source_run_id": "run-1", "trace_id": "tr-run-1", "policy_id": "pol-1",
                "created_at": T0 + timedelta(minutes=31), "acknowledged_at": T0 + timedelta(minutes=40),
                "resolved_at": None}
    proposals = [{"id": f"prop-{n}", "proposal_name": rng.choice(TEXTS), "proposal_type": "RULE",
                  "rationale": rng.choice(TEXTS), "status": "PENDING", "triggering_incident_id": "inc-1",
                  "policy_id": "pol-1", "proposed_rule": {"max_cost": n, "api_key": "secret-value-1234567890"},
                  "created_at": T0 + timedelta(minutes=50 + n), "reviewed_at": None, "reviewed_by": None}
                 for n in range(2)]
    return {"incident": incident, "proposals": proposals, "entries": ledger(rng, 35, 20, "inc-1", "run")}
