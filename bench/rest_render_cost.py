"""The gateway's CPU to render one ListAuditEntries answer (50 entries) as its REST body (issue #22).

    .venv/bin/python bench/rest_render_cost.py

Before: the answer deserialized, ``MessageToDict``, ``JSONResponse`` (what gateway/app.py did for
every call); after: gateway.stored_json (items' JSON from the store, by their bytes). Both bodies
are checked equal first. In-process, one thread, best of 5 rounds of 300 (CPU time).
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

from starlette.responses import JSONResponse

from aos.logs.v1 import audit_ledger_service_pb2 as pb
from aos_evidence.messages import audit_entry
from aos_runtime.keyset import Page
from aos_runtime.pagination import Listing, PageTokens
from gateway import stored_json, transcode
from services.logs.messages import list_answer

AT = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
METHOD = pb.DESCRIPTOR.services_by_name["AuditLedgerService"].methods_by_name["ListAuditEntries"]


def row(i: int) -> dict:
    return {"id": f"entry-{i}", "tenant_id": "tenant-a", "seq": i, "event_type": "PolicyRuleCreated",
            "entity_type": "POLICY_RULE", "entity_id": "rule-1", "actor_type": "HUMAN", "actor_id": "ann",
            "action_reason": None, "correlation_id": "corr-1", "created_at": AT, "recorded_at": AT,
            "content_hash": bytes([i % 256]) * 32, "prev_hash": b"\2" * 32, "chain_hash": b"\3" * 32,
            "is_synthetic": False, "run_id": "run-1", "state_policy_id": "rule-1", "state_incident_id": None,
            "trace_id": "tr-1", "violation_policy_id": None, "trace_incident_id": None}


def best(work, number: int = 300, rounds: int = 5) -> float:
    """Least CPU ms per run of ``work`` over ``rounds`` rounds of ``number``."""
    out = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(number):
            work()
        out.append((time.process_time() - started) / number * 1000)
    return min(out)


def main() -> None:
    page = Page([row(i) for i in range(50)], True, 1000, False)
    data = list_answer(Listing.of(PageTokens(b"k" * 32), "tenant-a", "audit", {}), page, pb.ListAuditEntriesResponse,
                       "entries", "audit", audit_entry, "audit_ledger", now=AT)
    renderer = stored_json.Renderer(METHOD)

    def canonical() -> bytes:
        return JSONResponse(transcode.to_json(pb.ListAuditEntriesResponse.FromString(data))).body

    if renderer.body(data) != canonical():
        raise SystemExit("the stored-JSON body differs from JSONResponse's")
    print(json.dumps({"answer_bytes": len(data), "load_average": os.getloadavg(),
                      "before_ms (FromString + MessageToDict + JSONResponse)": round(best(canonical), 3),
                      "after_ms (gateway.stored_json)": round(best(lambda: renderer.body(data)), 3)}, indent=2))


if __name__ == "__main__":
    main()
