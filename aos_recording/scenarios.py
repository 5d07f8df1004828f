"""Synthetic scenarios (the seeds' SDSR idea): declarative cross-domain stories in YAML.

A scenario is a list of actions — one key each: ``limit``, ``worker_run``,
``trace``, ``llm_run``, ``breach``, ``incident``, ``incident_update``, ``proposal``,
``proposal_update``, ``audit``, ``system`` — written in order, in one transaction
per tenant, through the producer library. Every row is marked synthetic with the
scenario id.

Times are offsets from the load's base time (``at: -2h30m``; units d, h, m, s), so
the demo's data is recent whenever it is loaded and a test can pin the base time;
or offsets from the start of the base's UTC day, ISO week or month (``at: month-1s``),
so a story can sit exactly on a budget window's edge.
Ids in the YAML are local: the loader namespaces them per tenant (``<tenant>.<id>``)
so two tenants can load the same story; ``before``/``after`` state values under
``*_id`` keys are namespaced the same way.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, overload

import yaml

from aos_recording import store
from aos_recording.sources import SourceWriter
from aos_recording.writers import (
    AuditLedgerWriter,
    LlmRunRecordWriter,
    Producer,
    Synthetic,
    SystemRecordWriter,
    TraceRecorder,
)
from aos_runtime.periods import reset_window

SCENARIO_DIR = Path(__file__).resolve().parent / "scenario_files"
DEMO_TENANTS = {"tenant-demo": "Demo Corp", "tenant-acme": "Acme Robotics"}
_OFFSET = re.compile(r"^([+-])?((?:\d+[dhms])+)$")
_PART = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_ANCHOR = re.compile(r"^(day|week|month)([+-].+)?$")
_ANCHORS = {"day": "DAILY", "week": "WEEKLY", "month": "MONTHLY"}


class ScenarioError(ValueError):
    """A scenario file that cannot be loaded, with the action that failed."""


@dataclass(frozen=True)
class Scenario:
    id: str
    description: str
    actions: list[Mapping[str, Any]]
    path: Path

    @classmethod
    def from_file(cls, path: Path) -> Scenario:
        doc = yaml.safe_load(Path(path).read_text())
        if not isinstance(doc, dict) or "id" not in doc or not isinstance(doc.get("actions"), list):
            raise ScenarioError(f"{path}: a scenario needs `id` and a list of `actions`")
        return cls(doc["id"], doc.get("description", ""), doc["actions"], Path(path))


def offset(value: Any) -> timedelta:
    """``-2h30m`` → -2:30:00; ``0`` → 0."""
    if value in (None, 0, "0"):
        return timedelta(0)
    match = _OFFSET.match(str(value).strip())
    if not match:
        raise ScenarioError(f"bad time offset {value!r}: use e.g. -2h, -3d, -1h30m, +45s")
    delta = timedelta(0)
    for amount, unit in _PART.findall(match.group(2)):
        delta += timedelta(**{_UNITS[unit]: int(amount)})
    return -delta if match.group(1) == "-" else delta


class _Load:
    def __init__(self, conn, tenant_id: str, base: datetime, scenario: Scenario) -> None:
        marks = Synthetic(scenario.id)
        self.tenant = tenant_id
        self.base = base
        self.scenario = scenario
        self.sources = SourceWriter(conn, synthetic=marks)
        self.ledger = AuditLedgerWriter(conn, synthetic=marks)
        self.traces = TraceRecorder(conn, synthetic=marks)
        self.runs = LlmRunRecordWriter(conn, synthetic=marks)
        self.system = SystemRecordWriter(conn, synthetic=marks)

    @overload
    def ns(self, local: str) -> str: ...
    @overload
    def ns(self, local: None) -> None: ...
    def ns(self, local: str | None) -> str | None:
        return None if local is None else f"{self.tenant}.{local}"

    def at(self, spec: Mapping[str, Any], key: str = "at") -> datetime:
        value = spec.get(key, 0)
        anchor = _ANCHOR.match(str(value))
        if anchor:  # "month+1s": from the start of the base's UTC day, ISO week or month
            start, _ = reset_window(_ANCHORS[anchor.group(1)], self.base)
            if start is None:  # cannot happen: only a NONE period has no start, and no anchor names one
                raise ScenarioError(f"{value!r}: the window has no start")
            return start + offset(anchor.group(2) or 0)
        return self.base + offset(value)

    def state(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: (self.ns(v) if k.endswith("_id") and isinstance(v, str) else self.state(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self.state(v) for v in value]
        return value

    def run(self) -> None:
        for number, action in enumerate(self.scenario.actions, 1):
            self.number = number
            if not isinstance(action, Mapping) or len(action) != 1:
                raise ScenarioError(f"{self.scenario.path.name} action {number}: one key per action")
            (kind, spec), = action.items()
            handler = getattr(self, f"do_{kind}", None)
            if handler is None:
                raise ScenarioError(f"{self.scenario.path.name} action {number}: unknown action {kind!r}")
            try:
                handler(spec or {})
            except (KeyError, TypeError, ValueError) as exc:
                raise ScenarioError(f"{self.scenario.path.name} action {number} ({kind}): {exc}") from exc

    def do_limit(self, spec):
        self.sources.limit(limit_id=self.ns(spec["id"]), tenant_id=self.tenant, name=spec["name"],
                           category=spec.get("category", "BUDGET"), max_value=spec["max_value"],
                           scope=spec.get("scope", "TENANT"), scope_id=spec.get("scope_id"),
                           reset_period=spec.get("reset_period", "MONTHLY"), currency=spec.get("currency", "USD"),
                           status=spec.get("status", "ACTIVE"), created_at=self.at(spec))

    def do_worker_run(self, spec):
        started = self.at(spec)
        done = spec.get("status", "completed") in ("completed", "failed", "cancelled")
        self.sources.worker_run(run_id=self.ns(spec["id"]), tenant_id=self.tenant,
                                status=spec.get("status", "completed"), created_at=started,
                                project_id=spec.get("project"), agent_id=spec.get("agent"),
                                provider=spec.get("provider"), model=spec.get("model"),
                                cost_cents=spec.get("cost_cents", 0), input_tokens=spec.get("input_tokens", 0),
                                output_tokens=spec.get("output_tokens", 0), started_at=started,
                                completed_at=started + offset(spec.get("duration", "1m")) if done else None)

    def do_trace(self, spec):
        started = self.at(spec)
        trace_id = self.traces.create_trace(
            tenant_id=self.tenant, run_id=self.ns(spec["run"]), trace_id=self.ns(spec["id"]),
            agent_id=spec.get("agent"), started_at=started, policy_snapshot_id=spec.get("policy_snapshot_id"),
            policy_snapshot=spec.get("policy_snapshot"))
        last = started
        for index, step in enumerate(spec.get("steps", [])):
            last = started + offset(step.get("after", f"{index * 2}s"))
            self.traces.add_step(tenant_id=self.tenant, trace_id=trace_id, step_index=index,
                                 step_type=step["type"], timestamp=last, input_data=step.get("input"),
                                 output_data=step.get("output"), metadata=step.get("metadata"),
                                 level=step.get("level", "info"), source=step.get("source", "agent"),
                                 tokens=step.get("tokens", 0), cost_cents=step.get("cost_cents", 0),
                                 duration_ms=step.get("duration_ms", 0))
        violation = spec.get("violation")
        if violation:
            self.traces.mark_violation(trace_id=trace_id, step_index=violation["step"],
                                       policy_id=violation["policy"], reason=violation["reason"],
                                       incident_id=self.ns(violation.get("incident")))
        if spec.get("status", "completed") != "running":
            self.traces.complete_trace(trace_id=trace_id, status=spec.get("status", "completed"),
                                       completed_at=last + timedelta(seconds=1),
                                       termination_reason=spec.get("termination_reason"))

    def do_llm_run(self, spec):
        started = self.at(spec)
        self.runs.write(tenant_id=self.tenant, run_id=self.ns(spec["run"]), trace_id=self.ns(spec.get("trace")),
                        agent_id=spec.get("agent"), project_id=spec.get("project"), provider=spec["provider"],
                        model=spec["model"], execution_status=spec.get("status", "succeeded"),
                        executor_type=spec.get("executor", "LLM"), outcome=spec.get("outcome"),
                        termination_reason=spec.get("termination_reason"),
                        input_tokens=spec.get("input_tokens", 0), output_tokens=spec.get("output_tokens", 0),
                        cost_cents=spec.get("cost_cents", 0), source=spec.get("source", "worker"),
                        started_at=started, completed_at=started + offset(spec.get("duration", "1m")))

    def do_breach(self, spec):
        self.sources.breach(breach_id=self.ns(spec["id"]), tenant_id=self.tenant, limit_id=self.ns(spec["limit"]),
                            run_id=self.ns(spec.get("run")), breach_type=spec.get("type", "BREACHED"),
                            value_at_breach=spec["value"], limit_value=spec["limit_value"],
                            breached_at=self.at(spec), details=spec.get("details"))

    def do_incident(self, spec):
        self.sources.incident(incident_id=self.ns(spec["id"]), tenant_id=self.tenant, title=spec["title"],
                              severity=spec["severity"], lifecycle_state=spec.get("state", "ACTIVE"),
                              description=spec.get("description"), category=spec.get("category"),
                              source_run_id=self.ns(spec.get("run")), trace_id=self.ns(spec.get("trace")),
                              policy_id=spec.get("policy"), created_at=self.at(spec))

    def do_incident_update(self, spec):
        self.sources.incident_state(incident_id=self.ns(spec["id"]), lifecycle_state=spec["state"], at=self.at(spec))

    def do_proposal(self, spec):
        self.sources.proposal(proposal_id=self.ns(spec["id"]), tenant_id=self.tenant, name=spec["name"],
                              status=spec.get("status", "draft"), proposal_type=spec.get("type"),
                              rationale=spec.get("rationale"), triggering_incident_id=self.ns(spec.get("incident")),
                              policy_id=spec.get("policy"), proposed_rule=spec.get("rule"), created_at=self.at(spec))

    def do_proposal_update(self, spec):
        self.sources.proposal_review(proposal_id=self.ns(spec["id"]), status=spec["status"],
                                     reviewed_by=spec["by"], at=self.at(spec))

    def do_audit(self, spec):
        actor = spec.get("actor", {})
        entity_id = spec["entity_id"]
        namespaced = spec["entity"] in ("POLICY_PROPOSAL", "LIMIT", "INCIDENT", "LOG_EXPORT")
        self.ledger.append(tenant_id=self.tenant, event_type=spec["event"], entity_type=spec["entity"],
                           entity_id=self.ns(entity_id) if namespaced else entity_id,
                           actor_type=actor.get("type", "SYSTEM"), actor_id=actor.get("id"),
                           action_reason=spec.get("reason"), correlation_id=self.ns(spec.get("correlation")),
                           before_state=self.state(spec.get("before")), after_state=self.state(spec.get("after")),
                           created_at=self.at(spec))

    def do_system(self, spec):
        system_wide = bool(spec.get("system_wide"))
        self.system.write(tenant_id=None if system_wide else self.tenant,
                          # A system-wide record is the same fact for every tenant that loads the
                          # story: a fixed id makes the second load an idempotent no-op.
                          record_id=f"sys.{self.scenario.id}.{self.number}" if system_wide else None,
                          component=spec["component"], event_type=spec["event"], severity=spec.get("severity", "INFO"),
                          summary=spec["summary"], details=spec.get("details"),
                          caused_by=spec.get("caused_by", "SYSTEM"), actor_id=spec.get("actor"),
                          correlation_id=self.ns(spec.get("correlation")), run_id=self.ns(spec.get("run")),
                          environment_id=spec.get("environment"), created_at=self.at(spec))


def load(producer: Producer, scenario: Scenario, tenant_id: str, *, base: datetime | None = None,
         tenant_name: str | None = None) -> None:
    """Write one scenario for one tenant, atomically.

    System-wide records (``system_wide: true``) are written in a second
    transaction acting for no tenant, as the row-level security policy requires.
    """
    base = base or datetime.now(timezone.utc).replace(microsecond=0)
    with producer.transaction(tenant_id) as conn:
        SourceWriter(conn).ensure_tenant(tenant_id=tenant_id, name=tenant_name or tenant_id,
                                         created_at=base - timedelta(days=30))
    tenant_actions = [a for a in scenario.actions if not _system_wide(a)]
    global_actions = [a for a in scenario.actions if _system_wide(a)]
    with producer.transaction(tenant_id) as conn:
        _Load(conn, tenant_id, base, Scenario(scenario.id, scenario.description, tenant_actions, scenario.path)).run()
    if global_actions:
        with producer.transaction(None) as conn:
            _Load(conn, tenant_id, base,
                  Scenario(scenario.id, scenario.description, global_actions, scenario.path)).run()


def _system_wide(action: Mapping[str, Any]) -> bool:
    return "system" in action and bool((action["system"] or {}).get("system_wide"))


def demo_scenarios() -> list[Scenario]:
    return [Scenario.from_file(p) for p in sorted(SCENARIO_DIR.glob("*.yaml"))]


def load_demo(producer: Producer, tenants: Mapping[str, str] = DEMO_TENANTS, *,
              base: datetime | None = None, scenarios: Iterable[Scenario] | None = None) -> int:
    """Every demo scenario for every demo tenant; returns how many were loaded.

    Loads only into a database that has none of these tenants yet (nothing is
    loaded twice); returns 0 otherwise.
    """
    for tenant_id in tenants:
        with producer.transaction(tenant_id) as conn:
            if store.tenant_exists(conn, tenant_id):
                return 0
    count = 0
    base = base or datetime.now(timezone.utc).replace(microsecond=0)
    for tenant_id in tenants:
        for scenario in scenarios or demo_scenarios():
            load(producer, scenario, tenant_id, base=base, tenant_name=tenants[tenant_id])
            count += 1
    return count
