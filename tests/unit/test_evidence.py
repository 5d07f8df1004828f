"""EvidenceMetadata rules, applied in one place."""
from datetime import datetime, timezone

from google.protobuf import timestamp_pb2
from hypothesis import given, settings, strategies as st

from aos.evidence.v1 import evidence_pb2
from aos_runtime.evidence import Evidence, actor_fields, metadata, timestamp

OCCURRED = datetime(2026, 1, 13, 12, 0, tzinfo=timezone.utc)
RECORDED = datetime(2026, 1, 13, 12, 0, 1, 500000, tzinfo=timezone.utc)


def base(**kw):
    return Evidence(tenant_id="t", occurred_at=OCCURRED, recorded_at=RECORDED, source_domain="LOGS",
                    source_component="audit_ledger", origin="HUMAN", **kw)


def test_actor_precedence_names_the_highest_and_keeps_the_rest():
    m = metadata(base(human_actor_id="u1", agent_id="a1", system_id="s1"))
    assert m.actor_type == evidence_pb2.ACTOR_TYPE_HUMAN
    assert (m.human_actor_id, m.agent_id, m.system_id) == ("u1", "a1", "s1")
    assert metadata(base(agent_id="a1", system_id="s1")).actor_type == evidence_pb2.ACTOR_TYPE_AGENT
    assert metadata(base(system_id="s1")).actor_type == evidence_pb2.ACTOR_TYPE_SYSTEM


def test_times_spine_and_checksum():
    m = metadata(base(run_id="r", trace_id="tr", policy_ids=("p2", "p1", "p2"), incident_ids=("i1",),
                      correlation_id="c", export_id="e", checksum=bytes(range(32))))
    assert m.occurred_at.ToDatetime(tzinfo=timezone.utc) == OCCURRED
    assert m.recorded_at.ToDatetime(tzinfo=timezone.utc) == RECORDED
    assert m.timezone == "UTC" and m.immutable
    assert (m.run_id, m.trace_id, list(m.policy_ids), list(m.incident_ids), m.correlation_id, m.export_id) == \
        ("r", "tr", ["p1", "p2"], ["i1"], "c", "e")
    assert m.checksum == bytes(range(32)).hex()
    assert m.source_domain == evidence_pb2.SOURCE_DOMAIN_LOGS and m.origin == evidence_pb2.ORIGIN_HUMAN
    assert not metadata(base()).HasField("run_id")


def test_actor_fields():
    assert actor_fields("AGENT", "a") == {"agent_id": "a"}
    assert actor_fields("HUMAN", None) == {} and actor_fields(None, "x") == {}


@settings(max_examples=500, deadline=None)
@given(st.datetimes(timezones=st.one_of(st.none(), st.timezones())))
def test_timestamp_matches_protobufs_own_conversion(value):
    # timestamp() computes seconds/nanos itself (speed); it must agree with
    # Timestamp.FromDatetime for every datetime, naive ones read as UTC.
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value if value.tzinfo else value.replace(tzinfo=timezone.utc))
    assert timestamp(value) == expected
