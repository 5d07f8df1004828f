"""The Ingest service's role also records runs: their run record, activity row, trace and steps.

Revision ID: 0020_ingest_runs
Revises: 0019_access_evidence
Create Date: 2026-12-07

Why (issue #21): RecordRun and the OTLP receiver write a finished LLM run the way the
recording library's writers do (aos_recording.writers, sources): an ``llm_run_records`` row,
the ``worker_runs`` row the Overview costs sum (SPEC §4), an ``aos_traces`` row created
running, its ``aos_trace_steps``, then the trace sealed with its totals and content hash.
``aos_ingest`` gets exactly that:

- INSERT on the four tables (row-level security's WITH CHECK holds each row to the session's
  tenant; the step trigger accepts steps only while their trace runs; the worker_runs cost
  rollup trigger runs as the owner, 0005);
- SELECT on them, for the idempotency check (is this run recorded, with which content hash,
  its trace's hash), the trace sealing (its steps' hashes and totals) and RETURNING;
- UPDATE on ``aos_traces``, for sealing the trace it just created: the guard trigger (0001)
  allows only a running trace's completion and violation fields to change.

Nothing on worker_runs beyond INSERT and SELECT (a run is recorded finished; its activity
row is never updated by Ingest).

Downgrade revokes these privileges; 0017's stay.
"""
from alembic import op

revision = "0020_ingest_runs"
down_revision = "0019_access_evidence"
branch_labels = None
depends_on = None

ROLE = "aos_ingest"
WRITES = ("llm_run_records", "worker_runs", "aos_traces", "aos_trace_steps")


def upgrade() -> None:
    op.execute(f"GRANT SELECT, INSERT ON {', '.join(WRITES)} TO {ROLE}")
    op.execute(f"GRANT UPDATE ON aos_traces TO {ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON {', '.join(WRITES)} FROM {ROLE}")
