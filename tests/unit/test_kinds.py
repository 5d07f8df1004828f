"""Export scope, bundle type and format: one enum each, tied to the protos' canonical names."""
from __future__ import annotations

from enum import StrEnum

import pytest

from aos.evidence.v1 import bundle_pb2
from aos_evidence import kinds
from aos_evidence.kinds import BundleType, ExportFormat, ExportScope
from aos_recording.hashing import canonical_json, manifest_hash
from aos_runtime.validation import canonical_values

PAIRS = [(ExportScope, bundle_pb2.ExportScope), (BundleType, bundle_pb2.BundleType),
         (ExportFormat, bundle_pb2.ExportFormat)]


@pytest.mark.parametrize(("kind", "proto"), PAIRS, ids=lambda k: getattr(k, "__name__", str(k)))
def test_each_member_is_its_database_spelling_and_its_proto_number(kind, proto):
    names = canonical_values(proto)
    assert {member.value: member.proto for member in kind} == names
    for member in kind:
        assert kind.from_proto(member.proto) is member
        assert kind(member.value) is member  # a database row's string reads back as the member
        assert member == member.value and f"{member}" == member.value  # stored and hashed as that string


@pytest.mark.parametrize("kind", [ExportScope, BundleType, ExportFormat])
def test_unset_or_unknown_proto_numbers_are_no_member(kind):
    with pytest.raises(KeyError):
        kind.from_proto(0)
    with pytest.raises(KeyError):
        kind.from_proto(99)


def test_an_enum_that_drifts_from_its_proto_fails_at_import():
    class Missing(StrEnum):
        JSON = "JSON"
        CSV = "CSV"
        PDF = "PDF"

    class Misspelt(StrEnum):
        JSON = "JSON"
        CSV = "CSV"
        PDF = "PDF"
        ZIP = "Zip"

    for drifted in (Missing, Misspelt):
        with pytest.raises(ImportError, match="canonical names"):
            kinds._pair(drifted, bundle_pb2.ExportFormat)


def test_only_audit_and_system_slices_are_slices():
    assert {s for s in ExportScope if s.is_slice} == {ExportScope.AUDIT_SLICE, ExportScope.SYSTEM_SLICE}


def test_every_format_names_its_file():
    for fmt in ExportFormat:
        assert fmt.content_type and fmt.extension == fmt.value.lower()


def test_a_member_hashes_as_its_database_spelling():
    """The manifest and the ledger entry of an export carry members; their signed bytes and
    hashes are those of the plain strings (what exports made before the enums carried)."""
    as_members = {"scope": ExportScope.AUDIT_SLICE, "bundle_type": BundleType.SOC2, "format": ExportFormat.ZIP,
                  "subject": {"filter": {"event_type": "PolicyRuleCreated"}}}
    as_strings = {"scope": "AUDIT_SLICE", "bundle_type": "SOC2", "format": "ZIP",
                  "subject": {"filter": {"event_type": "PolicyRuleCreated"}}}
    assert canonical_json(as_members) == canonical_json(as_strings)
    assert manifest_hash(as_members) == manifest_hash(as_strings)
