"""EvidenceMetadata (INV-LOG-META-001), built in one place for every Logs answer.

Stores return what a record and its joins say (``Evidence``); this module turns
that into the proto, applying the rules once: actor precedence human > agent >
system (the highest present is named in ``actor_type``, the others stay set),
``recorded_at`` is when the row was persisted (never the response time), the
timezone is UTC, the correlation spine is carried through, and the checksum is the
record's content hash in hex.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, NamedTuple, TypedDict, cast

from google.protobuf import timestamp_pb2

from aos.evidence.v1 import evidence_pb2

# Typed as the enums (protoc's .pyi takes the enum class for an enum field, not a plain int).
_DOMAINS = cast("dict[str, evidence_pb2.SourceDomain]",
                {v.name.removeprefix("SOURCE_DOMAIN_"): v.number for v in evidence_pb2.SourceDomain.DESCRIPTOR.values})
_ORIGINS = cast("dict[str, evidence_pb2.Origin]",
                {v.name.removeprefix("ORIGIN_"): v.number for v in evidence_pb2.Origin.DESCRIPTOR.values})


class Evidence(NamedTuple):
    """What a record (and its joins) says about itself.

    A NamedTuple (immutable, like the frozen dataclass it was) because a list answer
    builds one per item and a frozen dataclass costs ~4x as much to construct.
    """
    tenant_id: str
    occurred_at: datetime
    recorded_at: datetime | None    # None only for an answer that carries no persisted evidence
    source_domain: str          # ACTIVITY, POLICY, INCIDENTS, LOGS, SYSTEM
    source_component: str
    origin: str                 # SYSTEM, HUMAN, AGENT, MIGRATION, REPLAY
    run_id: str | None = None
    human_actor_id: str | None = None
    agent_id: str | None = None
    system_id: str | None = None
    trace_id: str | None = None
    policy_ids: tuple[str, ...] = ()
    incident_ids: tuple[str, ...] = ()
    export_id: str | None = None
    correlation_id: str | None = None
    checksum: bytes | None = None


class ActorFields(TypedDict, total=False):
    """Evidence's actor fields, as keyword arguments (typed, so ``**`` of it type-checks)."""
    human_actor_id: str | None
    agent_id: str | None
    system_id: str | None


def actor_fields(actor_type: str | None, actor_id: str | None) -> ActorFields:
    """One recorded actor (type, id) as the three metadata actor fields."""
    if not actor_id:
        return {}
    if actor_type == "HUMAN":
        return {"human_actor_id": actor_id}
    if actor_type == "AGENT":
        return {"agent_id": actor_id}
    if actor_type == "SYSTEM":
        return {"system_id": actor_id}
    return {}


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    # Seconds and nanos computed here: Timestamp.FromDatetime is pure Python and
    # costs ~3x as much, and a list answer makes three per entry. Every datetime is
    # within Timestamp's range (years 1-9999), so its range check adds nothing.
    delta = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)) - _EPOCH
    return timestamp_pb2.Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


def metadata(evidence: Evidence) -> evidence_pb2.EvidenceMetadata:
    e = evidence
    if e.human_actor_id:
        actor = evidence_pb2.ACTOR_TYPE_HUMAN
    elif e.agent_id:
        actor = evidence_pb2.ACTOR_TYPE_AGENT
    elif e.system_id:
        actor = evidence_pb2.ACTOR_TYPE_SYSTEM
    else:
        actor = evidence_pb2.ACTOR_TYPE_UNSPECIFIED
    # One constructor call with only the fields that are set (a list answer builds
    # one of these per item: field-by-field setattr costs twice as much).
    fields: dict[str, Any] = {name: value for name, value in (
        ("run_id", e.run_id), ("human_actor_id", e.human_actor_id), ("agent_id", e.agent_id),
        ("system_id", e.system_id), ("trace_id", e.trace_id), ("export_id", e.export_id),
        ("correlation_id", e.correlation_id)) if value}
    if e.recorded_at is not None:
        fields["recorded_at"] = timestamp(e.recorded_at)
    if e.checksum:
        fields["checksum"] = bytes(e.checksum).hex()
    return evidence_pb2.EvidenceMetadata(
        tenant_id=e.tenant_id, actor_type=actor, timezone="UTC",
        occurred_at=timestamp(e.occurred_at),
        policy_ids=sorted(set(e.policy_ids)), incident_ids=sorted(set(e.incident_ids)),
        source_domain=_DOMAINS[e.source_domain], source_component=e.source_component,
        origin=_ORIGINS[e.origin], immutable=True, **fields)
