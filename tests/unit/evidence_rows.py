"""Generated evidence rows (hypothesis strategies) as the stores return them: every column the
converters read, joins included, with values the database can hold (tests/unit/test_wire.py,
tests/gateway/test_stored_json.py)."""
from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import strategies as st

from aos_evidence.messages import (
    ACTORS,
    CAUSES,
    ENTITIES,
    EVENTS,
    EXECUTORS,
    OUTCOMES,
    RUN_STATUSES,
    SEVERITIES,
    STEP_LEVELS,
    STEP_TYPES,
    SYSTEM_EVENTS,
    TRACE_STATUSES,
)

ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
maybe_ids = st.none() | ids
# Naive bounds, aware values: hypothesis's own convention for datetimes().
times = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 31),  # noqa: DTZ001
                     timezones=st.just(timezone.utc))
hashes = st.binary(min_size=32, max_size=32)
json_values = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) |
                           st.text(max_size=20), lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
states = st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=4)


@st.composite
def audit_rows(draw, tenant: str = "tenant-a", states_too: bool = False) -> dict:
    """A row as AUDIT_SELECT returns it (the column order is the query's)."""
    row = {
        "id": draw(ids), "tenant_id": tenant, "seq": draw(st.integers(1, 2**62)),
        "event_type": draw(st.sampled_from(sorted(EVENTS))), "entity_type": draw(st.sampled_from(sorted(ENTITIES))),
        "entity_id": draw(ids), "actor_type": draw(st.sampled_from(sorted(ACTORS))), "actor_id": draw(maybe_ids),
        "action_reason": draw(maybe_ids), "correlation_id": draw(maybe_ids), "created_at": draw(times),
        "recorded_at": draw(times), "content_hash": draw(hashes), "prev_hash": draw(hashes),
        "chain_hash": draw(hashes), "is_synthetic": draw(st.booleans()), "run_id": draw(maybe_ids),
        "state_policy_id": draw(maybe_ids), "state_incident_id": draw(maybe_ids), "trace_id": draw(maybe_ids),
        "violation_policy_id": draw(maybe_ids), "trace_incident_id": draw(maybe_ids),
    }
    if states_too:
        row["before_state"], row["after_state"] = draw(states), draw(states)
    return row


@st.composite
def run_rows(draw, tenant: str = "tenant-a") -> dict:
    """A row as RUN_SELECT returns it (llm_run_records.* and the trace join)."""
    started = draw(times)
    return {
        "id": draw(ids), "tenant_id": tenant, "run_id": draw(ids), "trace_id": draw(maybe_ids),
        "agent_id": draw(maybe_ids), "project_id": draw(maybe_ids), "provider": draw(ids), "model": draw(ids),
        "execution_status": draw(st.sampled_from(sorted(RUN_STATUSES))),
        "executor_type": draw(st.sampled_from(sorted(EXECUTORS))),
        "outcome": draw(st.none() | st.sampled_from(sorted(OUTCOMES))), "termination_reason": draw(maybe_ids),
        "input_tokens": draw(st.integers(0, 2**62)), "output_tokens": draw(st.integers(0, 2**62)),
        "cost_cents": draw(st.integers(0, 2**62)), "source": draw(ids), "started_at": started,
        "completed_at": draw(st.none() | st.just(started)), "is_synthetic": draw(st.booleans()),
        "synthetic_scenario_id": draw(maybe_ids), "created_at": draw(times), "content_hash": draw(hashes),
        "recorded_at": draw(times), "joined_trace_id": draw(maybe_ids),
        "violation_step_index": draw(st.none() | st.integers(0, 2**31 - 1)), "violation_policy_id": draw(maybe_ids),
        "trace_incident_id": draw(maybe_ids),
    }


@st.composite
def system_rows(draw, tenant: str = "tenant-a") -> dict:
    """A system_records or platform_records row (tenant_id None: system-wide)."""
    return {
        "id": draw(ids), "tenant_id": draw(st.none() | st.just(tenant)), "component": draw(ids),
        "event_type": draw(st.sampled_from(sorted(SYSTEM_EVENTS))),
        "severity": draw(st.sampled_from(sorted(SEVERITIES))), "summary": draw(st.text(max_size=60)),
        "details": draw(states), "caused_by": draw(st.sampled_from(sorted(CAUSES))), "actor_id": draw(maybe_ids),
        "correlation_id": draw(maybe_ids), "run_id": draw(maybe_ids), "environment_id": draw(maybe_ids),
        "is_synthetic": draw(st.booleans()), "synthetic_scenario_id": draw(maybe_ids), "created_at": draw(times),
        "content_hash": draw(hashes), "recorded_at": draw(times),
    }


@st.composite
def traces(draw, tenant: str = "tenant-a") -> tuple[dict, list[dict]]:
    """An aos_traces row and its steps' rows (aos_trace_steps.*), as get_trace returns them."""
    trace_id = draw(ids)
    steps = [{"id": f"{trace_id}-{i}", "trace_id": trace_id, "tenant_id": tenant, "step_index": i,
              "step_type": draw(st.sampled_from(sorted(STEP_TYPES))), "level": draw(st.sampled_from(sorted(STEP_LEVELS))),
              "source": draw(ids), "timestamp": draw(times), "tokens": draw(st.integers(0, 2**40)),
              "cost_cents": draw(st.integers(0, 2**40)), "duration_ms": draw(st.integers(0, 2**40)),
              "input_data": draw(st.none() | json_values), "output_data": draw(st.none() | json_values),
              "metadata": draw(states), "content_hash": draw(hashes), "created_at": draw(times),
              "recorded_at": draw(times)} for i in range(draw(st.integers(0, 6)))]
    trace = {
        "trace_id": trace_id, "tenant_id": tenant, "run_id": draw(ids), "agent_id": draw(maybe_ids),
        "status": draw(st.sampled_from(sorted(TRACE_STATUSES))), "started_at": draw(times),
        "completed_at": draw(st.none() | times), "step_count": len(steps), "total_tokens": draw(st.integers(0, 2**40)),
        "total_cost_cents": draw(st.integers(0, 2**40)), "total_duration_ms": draw(st.integers(0, 2**40)),
        "is_synthetic": draw(st.booleans()), "termination_reason": draw(maybe_ids),
        "policy_snapshot_id": draw(maybe_ids), "incident_id": draw(maybe_ids),
        "violation_step_index": draw(st.none() | st.integers(0, 6)), "violation_policy_id": draw(maybe_ids),
        "violation_reason": draw(maybe_ids), "violation_timestamp": draw(st.none() | times),
        "policy_snapshot": draw(states), "content_hash": draw(st.none() | hashes), "recorded_at": draw(times),
    }
    return trace, steps
