"""An export's scope, bundle type and format as types, not strings.

Each member's value is the database's canonical spelling (log_exports.scope,
.bundle_type, .format; the manifest's and the bundle's "scope", "bundle_type",
"format"), so a member is that very string wherever it is stored or hashed and
the artifacts stay byte for byte what they were. The proto numbers come from the
protos' own ``canonical_name`` options (aos_runtime.validation.canonical_values),
not from a second table here; an enum that no longer matches its proto fails at
import, not at the first request that meets the difference.
"""
from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from aos.evidence.v1 import bundle_pb2
from aos_runtime.validation import canonical_values

_Proto = TypeVar("_Proto", bound=int)
_Kind = TypeVar("_Kind", bound=StrEnum)


def _pair(kind: type[_Kind], proto: type[_Proto]) -> tuple[dict[_Kind, _Proto], dict[int, _Kind]]:
    """The member → proto number map and its inverse, from the proto's canonical names."""
    numbers = canonical_values(proto)
    if set(numbers) != {member.value for member in kind}:
        raise ImportError(f"{kind.__name__} {sorted(m.value for m in kind)} does not match the proto's "
                          f"canonical names {sorted(numbers)}")
    to_proto = {member: numbers[member.value] for member in kind}
    return to_proto, {number: member for member, number in to_proto.items()}


class ExportScope(StrEnum):
    LLM_RUN = "LLM_RUN"
    INCIDENT = "INCIDENT"
    AUDIT_SLICE = "AUDIT_SLICE"
    SYSTEM_SLICE = "SYSTEM_SLICE"

    @property
    def is_slice(self) -> bool:
        """A filtered slice of a ledger (streamed, with a recorded filter), not one run or incident."""
        return self in (ExportScope.AUDIT_SLICE, ExportScope.SYSTEM_SLICE)

    @property
    def proto(self) -> bundle_pb2.ExportScope:
        return _SCOPES[self]

    @classmethod
    def from_proto(cls, number: int) -> ExportScope:
        """KeyError for 0 (unset) or a number the proto does not define."""
        return _SCOPE_OF[number]


class BundleType(StrEnum):
    EVIDENCE = "EVIDENCE"
    SOC2 = "SOC2"
    EXECUTIVE = "EXECUTIVE"

    @property
    def proto(self) -> bundle_pb2.BundleType:
        return _BUNDLES[self]

    @classmethod
    def from_proto(cls, number: int) -> BundleType:
        return _BUNDLE_OF[number]


class ExportFormat(StrEnum):
    JSON = "JSON"
    CSV = "CSV"
    PDF = "PDF"
    ZIP = "ZIP"

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self]

    @property
    def extension(self) -> str:
        """The artifact's file name ends in it (``exp_….zip``)."""
        return self.value.lower()

    @property
    def proto(self) -> bundle_pb2.ExportFormat:
        return _FORMATS[self]

    @classmethod
    def from_proto(cls, number: int) -> ExportFormat:
        return _FORMAT_OF[number]


_SCOPES, _SCOPE_OF = _pair(ExportScope, bundle_pb2.ExportScope)
_BUNDLES, _BUNDLE_OF = _pair(BundleType, bundle_pb2.BundleType)
_FORMATS, _FORMAT_OF = _pair(ExportFormat, bundle_pb2.ExportFormat)
_CONTENT_TYPES = {ExportFormat.JSON: "application/json", ExportFormat.CSV: "text/csv; charset=utf-8",
                  ExportFormat.PDF: "application/pdf", ExportFormat.ZIP: "application/zip"}
