"""O4 replay: the window around a run's inflection point (shared by LLM and system replay)."""
from __future__ import annotations

from datetime import timedelta

from aos.logs.v1 import llm_runs_service_pb2 as runs_pb, records_pb2, system_logs_service_pb2 as system_pb
from aos_evidence import queries as evidence
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


def _replay(conn, tenant: str, run_id: str, seconds: int, llm: bool, policy: bool):
    trace, _ = evidence.get_trace(conn, tenant, run_id)
    if trace is None:
        return None, None
    center, _ = replay_center(trace)
    delta = timedelta(seconds=seconds)
    return trace, store.replay_events(conn, tenant, trace["trace_id"], center - delta, center + delta,
                                      include_llm=llm, include_policy=policy)


async def load_replay(ctx: ServiceContext, request: runs_pb.GetLlmRunReplayRequest | system_pb.GetSystemReplayRequest,
                      *, llm: bool, policy: bool) -> records_pb2.ReplayWindow:
    """The replay of a run (LLM replay: everything; system replay: system records only)."""
    r = Request()
    run_id = r.resource_id(request.run_id, "run_id")
    seconds = window_seconds(r, request.window_seconds)
    r.done()
    tenant = auth.principal().tenant_id
    trace, found = await ctx.db.run(tenant, _replay, tenant, run_id, seconds, llm, policy)
    if trace is None:
        raise errors.not_found(errors.Resource.TRACE, run_id)
    return replay_window(trace, seconds, found)
