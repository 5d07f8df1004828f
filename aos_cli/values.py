"""Command-line text → request values. Anything unparseable is a usage error (exit 2)."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from functools import cache
from typing import Any, TypeVar, cast

from google.protobuf import descriptor_pool, timestamp_pb2
from google.protobuf.descriptor import EnumValueDescriptor
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from aos.evidence.v1 import options_pb2
from aos.logs.v1 import records_pb2
from aos_cli.client import UsageError

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@cache
def enum_labels(enum_full_name: str) -> dict[int, str]:
    """{number: label}: the value's canonical_name (the seeds' spelling), else its name without the prefix."""
    enum = descriptor_pool.Default().FindEnumTypeByName(enum_full_name)
    prefix = enum.values_by_number[0].name.removesuffix("UNSPECIFIED")
    return {v.number: _canonical_name(v) or v.name.removeprefix(prefix) for v in enum.values if v.number}


def _canonical_name(value: EnumValueDescriptor) -> str:
    name: str = value.GetOptions().Extensions[options_pb2.canonical_name]  # type: ignore[index]  # protoc's .pyi types an extension as a plain FieldDescriptor
    return name


def enum_label(enum_full_name: str, number: int) -> str:
    return enum_labels(enum_full_name).get(number, "-" if number == 0 else str(number))


def enum_value(enum_full_name: str, text: str, option: str) -> int:
    """Accepts the label (``PolicyRuleCreated``), the full name or the name without prefix, any case."""
    enum = descriptor_pool.Default().FindEnumTypeByName(enum_full_name)
    prefix = enum.values_by_number[0].name.removesuffix("UNSPECIFIED")
    wanted = text.strip().lower()
    for number, label in enum_labels(enum_full_name).items():
        name = enum.values_by_number[number].name
        if wanted in (label.lower(), name.lower(), name.removeprefix(prefix).lower()):
            return number
    raise UsageError(f"{option}: unknown value {text!r}; one of: "
                     f"{', '.join(enum_labels(enum_full_name).values())}")


_Enum = TypeVar("_Enum", bound=int)


def enum_member(enum: type[_Enum], text: str, option: str) -> _Enum:
    """``enum_value`` of a generated enum, typed as that enum: protoc's .pyi takes the enum class
    for an enum field, which a plain int is not, to a type checker."""
    wrapper = cast(EnumTypeWrapper, enum)  # what a generated enum is at run time
    return cast(_Enum, enum_value(wrapper.DESCRIPTOR.full_name, text, option))


def timestamp(text: str, option: str) -> timestamp_pb2.Timestamp:
    """RFC 3339 / ISO 8601; a time without a zone is UTC (the suite's only zone)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not an ISO 8601 time (e.g. 2026-11-01T12:00:00Z)") from None
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value if value.tzinfo else value.replace(tzinfo=timezone.utc))
    return result


def duration_s(text: str, option: str) -> int:
    """``90``, ``90s``, ``30m``, ``24h`` or ``7d`` in seconds; must be positive."""
    match = _DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"{option}: {text!r} is not a positive duration (e.g. 30m, 24h, 7d)")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def payload_shown(record: Any, field: str, shown: str) -> str:
    """``shown`` (a record's payload field as printed), or what stands for it in hash format 2
    (docs/ERASURE.md): ``ERASED (erasure …)`` for a payload an erasure took, ``MISSING`` for one
    with neither payload nor erasure — never an empty value passed off as the content."""
    for p in getattr(record, "payloads", ()):
        if p.field == field and p.state == records_pb2.PAYLOAD_STATE_ERASED:
            return f"ERASED (erasure {p.erasure_id})"
        if p.field == field and p.state == records_pb2.PAYLOAD_STATE_MISSING:
            return "MISSING (neither payload nor erasure recorded)"
    return shown
