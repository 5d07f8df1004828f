"""O4 replay: the window around a run's inflection point (shared by LLM and system replay)."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import grpc

from aos.logs.v1 import llm_runs_service_pb2 as runs_pb, records_pb2, system_logs_service_pb2 as system_pb
from aos_evidence import queries as evidence
from aos_evidence.messages import audit_entry, breach_message, money, step_message
from aos_recording.hashing import trace_content_hash
from aos_runtime import auth, errors
from aos_runtime.server import ServiceContext
from aos_runtime.validation import Request
from services.logs import store
from services.logs.messages import replay_center, replay_window

DEFAULT_WINDOW_S, MAX_WINDOW_S = 30, 600


def window_seconds(r: Request, requested: int) -> int:
    if requested == 0:
        return DEFAULT_WINDOW_S
    if not 1 <= requested <= MAX_WINDOW_S:
        r.violations.add("window_seconds", f"must be between 1 and {MAX_WINDOW_S} (0 means {DEFAULT_WINDOW_S})")
    return requested


def _replay(conn, tenant: str, run_id: str, seconds: int, llm: bool, policy: bool, at_step: int | None):
    # The run's trace without its steps (the window reads its own; a state reads a prefix).
    trace = store.find_trace(conn, tenant, run_id, None)
    if trace is None:
        return None, None, None
    state = None
    center: tuple[datetime, records_pb2.ReplayCenter] = replay_center(trace)
    if at_step is not None:
        state = store.state_at_step(conn, tenant, trace["trace_id"], at_step)
        if state["step"] is None:
            return trace, None, state
        center = (state["step"]["timestamp"], records_pb2.REPLAY_CENTER_STEP)
        at = state["step"]["timestamp"]
        # O3's correlated entries and the run's breaches, as far as the step's time.
        state["audit"] = store.opened_audit(conn, tenant, [e for e in evidence.run_audit_entries(conn, tenant, run_id)
                                                           if e["created_at"] <= at])
        state["breaches"] = [b for b in evidence.run_breaches(conn, tenant, run_id) if b["breached_at"] <= at]
    delta = timedelta(seconds=seconds)
    found = store.replay_events(conn, tenant, trace["trace_id"], center[0] - delta, center[0] + delta,
                                include_llm=llm, include_policy=policy)
    return trace, (found, center), state


def state_message(trace: Mapping[str, Any], state: Mapping[str, Any]) -> runs_pb.ReplayState:
    """The state at a step (seed 003 section 9.1's get_state_at_step), with its hashes."""
    violation = trace["violation_step_index"]
    totals = state["totals"]
    return runs_pb.ReplayState(
        trace_id=trace["trace_id"], step_index=state["step"]["step_index"], last_step_index=state["last"],
        step=step_message(state["step"], violation), steps_so_far=totals["steps"], tokens=totals["tokens"],
        cost=money(totals["cost_cents"]), duration_ms=totals["duration_ms"],
        steps_hash=trace_content_hash(state["hashes"]).hex(),
        policy_steps=[step_message(row, violation) for row in state["policy_steps"]],
        audit_entries=[audit_entry(row) for row in state["audit"]],
        limit_breaches=[breach_message(row) for row in state["breaches"]])


def step_out_of_range(at_step: int, last: int | None) -> errors.ApiError:
    where = "the run's trace has no steps" if last is None else f"the run's trace ends at step {last}"
    return errors.ApiError(grpc.StatusCode.OUT_OF_RANGE, "STEP_OUT_OF_RANGE",
                           f"at_step {at_step} is beyond the trace: {where}",
                           violations=[("at_step", f"must be at most the last step index ({where})")],
                           metadata={"at_step": str(at_step),
                                     "last_step_index": "" if last is None else str(last)})


async def load_replay(ctx: ServiceContext, request: runs_pb.GetLlmRunReplayRequest | system_pb.GetSystemReplayRequest,
                      *, llm: bool, policy: bool) -> tuple[records_pb2.ReplayWindow, runs_pb.ReplayState | None]:
    """The replay of a run (LLM replay: everything; system replay: system records only), and
    the state at the requested step (LLM replay's at_step; None without one)."""
    r = Request()
    run_id = r.resource_id(request.run_id, "run_id")
    seconds = window_seconds(r, request.window_seconds)
    at_step = None
    if isinstance(request, runs_pb.GetLlmRunReplayRequest) and request.HasField("at_step"):
        at_step = request.at_step
        r.violations.check(at_step >= 0, "at_step", "must be 0 or more (a step index)")
    r.done()
    tenant = auth.principal().tenant_id
    trace, window, state = await ctx.db.run(tenant, _replay, tenant, run_id, seconds, llm, policy, at_step)
    if trace is None:
        raise errors.not_found(errors.Resource.TRACE, run_id)
    if state is not None and state["step"] is None and at_step is not None:
        last = state["last"]
        if last is None or at_step > last:
            raise step_out_of_range(at_step, last)
        raise errors.not_found(errors.Resource.TRACE_STEP, f"{run_id}#{at_step}")  # a gap in the trace
    found, center = window
    return (replay_window(trace, seconds, found, center),
            state_message(trace, state) if state is not None else None)
