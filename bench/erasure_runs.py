"""What naming a data subject costs a recorded run, and what erasing that subject costs.

    .venv/bin/python bench/erasure_runs.py                 # 50 runs × 20 steps, each way
    .venv/bin/python bench/erasure_runs.py --runs 200 --steps 50

On a scratch database (bench/scratch.py) at head, as the Ingest role for one tenant, through
the Ingest service's own store (services/ingest/store.record_runs, as RecordRun calls it):
1. ``--runs`` runs of ``--steps`` steps in hash format 1 (no subject), one transaction per run;
2. the same in hash format 2 (the run's ``data_subject_id``: every step's input and output
   committed, payloads and salts in evidence_payloads), one subject for all of them;
3. ``EraseDataSubject``'s work (aos_recording.erasure.erase_subject: the hold check, the
   deletion of every payload with its tombstone, the two audit entries) for that subject.
Wall time and this process's CPU time per phase.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from google.protobuf import json_format, struct_pb2
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aos.evidence.v1 import records_pb2
from aos.ingest.v1 import ingest_service_pb2 as pb
from aos_recording import erasure
from aos_runtime import auth
from aos_runtime.db import sync_url
from scratch import scratch_database
from services.ingest import ingest, store

WHO = auth.Principal(tenant_id="", actor_id="bench", actor_type="SYSTEM", scopes=frozenset())


def a_run(steps: int, subject: str | None, now: datetime) -> pb.RunInput:
    start = now - timedelta(hours=1)
    run = pb.RunInput(run_id=f"run-{uuid.uuid4().hex}", provider="openai", model="gpt-4o",
                      status=records_pb2.LLM_RUN_STATUS_SUCCEEDED)
    run.started_at.FromDatetime(start)
    run.completed_at.FromDatetime(start + timedelta(seconds=steps))
    if subject is not None:
        run.data_subject_id = subject
    for i in range(steps):
        step = pb.StepInput(step_type=records_pb2.STEP_TYPE_LLM_CALL, tokens=10)
        step.timestamp.FromDatetime(start + timedelta(seconds=i))
        step.input_data.CopyFrom(json_format.ParseDict({"messages": [{"role": "user", "content": "x" * 400}]},
                                                       struct_pb2.Value()))
        step.output_data.CopyFrom(json_format.ParseDict("y" * 400, struct_pb2.Value()))
        run.steps.append(step)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    results: dict[str, object] = vars(args).copy()
    with scratch_database("aos-bench-erasure-runs-") as (url, _work):
        engine = create_engine(sync_url(url))
        tenant = f"t_{uuid.uuid4().hex[:12]}"
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (id, name) VALUES (:t, 'bench')"), {"t": tenant})

        def as_ingest(work):
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL ROLE aos_ingest"))
                conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
                return work(conn)

        subject = f"subj-{uuid.uuid4().hex[:8]}"
        for label, who in (("format_1", None), ("format_2", subject)):
            now = datetime.now(timezone.utc)
            checked = [ingest.run_fields(a_run(args.steps, who, now), WHO, now) for _ in range(args.runs)]
            assert not any(c.problems for c in checked), checked[0].problems
            wall, cpu = time.perf_counter(), time.process_time()
            for c in checked:
                outcome, = as_ingest(lambda conn, c=c: store.record_runs(conn, tenant, [(c.run, c.steps)]))
                assert outcome.created, outcome
            results[label] = {"wall_s": round(time.perf_counter() - wall, 3),
                              "cpu_s": round(time.process_time() - cpu, 3),
                              "ms_per_run": round((time.perf_counter() - wall) * 1000 / args.runs, 2)}
        wall, cpu = time.perf_counter(), time.process_time()
        done = as_ingest(lambda conn: erasure.erase_subject(conn, tenant_id=tenant, subject_id=subject,
                                                            actor_type="HUMAN", actor_id="dpo", reason="bench"))
        results["erase"] = {"payloads_erased": done.payloads_erased, "wall_s": round(time.perf_counter() - wall, 3),
                            "cpu_s": round(time.process_time() - cpu, 3)}
        engine.dispose()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
