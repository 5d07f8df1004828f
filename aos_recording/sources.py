"""Writers for the source tables other domains own (tenants, incidents, policy proposals,
limits, limit breaches, worker runs).

The Evidence Plane only reads these; their owners write them. The scenarios, the
demo and the tests need them too, so they are written here the same way a
producer would — in the producer role, tenant-scoped, marked synthetic when a
scenario writes them.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from aos_recording import vocabulary
from aos_recording.writers import _check, _json, _Writer


class SourceWriter(_Writer):
    def _insert(self, table: str, row: Mapping[str, Any], jsonb: tuple[str, ...] = ()) -> None:
        row = {**row, **self._marks()}
        values = [f"CAST(:{c} AS jsonb)" if c in jsonb else f":{c}" for c in row]
        params = {**row, **{c: _json(row[c]) for c in jsonb}}
        self.conn.execute(text(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(values)})"), params)

    def ensure_tenant(self, *, tenant_id: str, name: str, created_at: datetime) -> None:
        self.conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES (:id, :name, :at) "
                               "ON CONFLICT (id) DO NOTHING"), {"id": tenant_id, "name": name, "at": created_at})

    def limit(self, *, limit_id: str, tenant_id: str, name: str, category: str, max_value: int | Decimal,
              scope: str = "TENANT", scope_id: str | None = None, reset_period: str = "MONTHLY",
              currency: str = "USD", status: str = "ACTIVE", created_at: datetime) -> None:
        _check(category, vocabulary.LIMIT_CATEGORIES, "category")
        _check(scope, vocabulary.LIMIT_SCOPES, "scope")
        _check(reset_period, vocabulary.RESET_PERIODS, "reset_period")
        self._insert("limits", {"id": limit_id, "tenant_id": tenant_id, "name": name, "limit_category": category,
                                "scope": scope, "scope_id": scope_id, "max_value": Decimal(max_value),
                                "currency": currency, "reset_period": reset_period, "status": status,
                                "created_at": created_at, "updated_at": created_at})

    def breach(self, *, breach_id: str, tenant_id: str, limit_id: str, value_at_breach: int | Decimal,
               limit_value: int | Decimal, breached_at: datetime, run_id: str | None = None,
               breach_type: str = "BREACHED", details: Mapping | None = None) -> None:
        self._insert("limit_breaches", {"id": breach_id, "tenant_id": tenant_id, "limit_id": limit_id,
                                        "run_id": run_id, "breach_type": breach_type,
                                        "value_at_breach": Decimal(value_at_breach),
                                        "limit_value": Decimal(limit_value), "details": details,
                                        "breached_at": breached_at, "created_at": breached_at}, jsonb=("details",))

    def worker_run(self, *, run_id: str, tenant_id: str, status: str, created_at: datetime,
                   project_id: str | None = None, agent_id: str | None = None, provider: str | None = None,
                   model: str | None = None, cost_cents: int = 0, input_tokens: int = 0, output_tokens: int = 0,
                   started_at: datetime | None = None, completed_at: datetime | None = None) -> None:
        _check(status, vocabulary.WORKER_RUN_STATUSES, "status")
        self._insert("worker_runs", {"id": run_id, "tenant_id": tenant_id, "project_id": project_id,
                                     "agent_id": agent_id, "provider": provider, "model": model, "status": status,
                                     "cost_cents": cost_cents, "input_tokens": input_tokens,
                                     "output_tokens": output_tokens, "created_at": created_at,
                                     "started_at": started_at, "completed_at": completed_at})

    def incident(self, *, incident_id: str, tenant_id: str, title: str, severity: str, created_at: datetime,
                 lifecycle_state: str = "ACTIVE", description: str | None = None, category: str | None = None,
                 source_run_id: str | None = None, trace_id: str | None = None,
                 policy_id: str | None = None) -> None:
        _check(severity, vocabulary.INCIDENT_SEVERITIES, "severity")
        _check(lifecycle_state, vocabulary.INCIDENT_STATES, "lifecycle_state")
        self._insert("incidents", {"id": incident_id, "tenant_id": tenant_id, "title": title,
                                   "description": description, "category": category, "severity": severity,
                                   "lifecycle_state": lifecycle_state, "source_run_id": source_run_id,
                                   "trace_id": trace_id, "policy_id": policy_id, "created_at": created_at,
                                   "updated_at": created_at})

    def incident_state(self, *, incident_id: str, lifecycle_state: str, at: datetime) -> None:
        _check(lifecycle_state, vocabulary.INCIDENT_STATES, "lifecycle_state")
        column = {"ACKED": "acknowledged_at", "RESOLVED": "resolved_at"}.get(lifecycle_state)
        stamp = f", {column} = :at" if column else ""
        self.conn.execute(text(f"UPDATE incidents SET lifecycle_state = :s, updated_at = :at{stamp} WHERE id = :id"),
                          {"s": lifecycle_state, "at": at, "id": incident_id})

    def proposal(self, *, proposal_id: str, tenant_id: str, name: str, created_at: datetime,
                 status: str = "draft", proposal_type: str | None = None, rationale: str | None = None,
                 triggering_incident_id: str | None = None, policy_id: str | None = None,
                 proposed_rule: Mapping | None = None) -> None:
        _check(status, vocabulary.PROPOSAL_STATUSES, "status")
        self._insert("policy_proposals", {"id": proposal_id, "tenant_id": tenant_id, "proposal_name": name,
                                          "proposal_type": proposal_type, "rationale": rationale, "status": status,
                                          "triggering_incident_id": triggering_incident_id, "policy_id": policy_id,
                                          "proposed_rule": proposed_rule, "created_at": created_at},
                     jsonb=("proposed_rule",))

    def proposal_review(self, *, proposal_id: str, status: str, reviewed_by: str, at: datetime) -> None:
        _check(status, vocabulary.PROPOSAL_STATUSES - {"draft"}, "status")
        self.conn.execute(text("UPDATE policy_proposals SET status = :s, reviewed_by = :by, reviewed_at = :at "
                               "WHERE id = :id AND status = 'draft'"),
                          {"s": status, "by": reviewed_by, "at": at, "id": proposal_id})
