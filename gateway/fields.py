"""Request fields as HTTP names them: dotted paths through the request message.

Shared by the route table (path variables are checked at startup), the
transcoder (query parameters) and the OpenAPI generator (which parameters exist).
"""
from __future__ import annotations

import re
from typing import cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

# Well-known types whose proto3 JSON form is a single string, so a path or query
# value can carry one (RFC 3339 timestamps, "1.5s" durations).
STRING_WKTS = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})


class UnknownField(KeyError):
    """A dotted name that does not lead through the message's fields."""


def is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def is_leaf(field: FieldDescriptor) -> bool:
    """True when a URL value can set the field: a scalar, an enum or a string-shaped WKT (repeated or not)."""
    if is_map(field):
        return False
    return field.message_type is None or field.message_type.full_name in STRING_WKTS


def is_nested(field: FieldDescriptor) -> bool:
    """A singular message field whose own fields a dotted name may reach."""
    return (field.message_type is not None and not field.is_repeated and not is_map(field)
            and not field.message_type.full_name.startswith("google.protobuf."))


def descriptor(message: Message | type[Message]) -> Descriptor:
    """A message's descriptor. The stubs type Message.DESCRIPTOR as either the Python or the upb
    Descriptor, two classes to them; at run time the upb one is what descriptor.Descriptor names."""
    return cast(Descriptor, message.DESCRIPTOR)


def message_type(field: FieldDescriptor) -> Descriptor:
    """The message a message-typed (or map) field holds; protobuf sets it on every such field."""
    if field.message_type is None:
        raise TypeError(f"{field.full_name} is not a message field")
    return field.message_type


def resolve(message: Descriptor, path: str) -> list[FieldDescriptor]:
    """The fields along ``path`` ("audit_slice.event_type"); each part a proto or JSON (lowerCamel) name."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for part in path.split("."):
        if current is None:
            raise UnknownField(path)
        field = current.fields_by_name.get(part) or current.fields_by_camelcase_name.get(part)
        if field is None:
            raise UnknownField(path)
        fields.append(field)
        current = field.message_type if is_nested(field) else None
    return fields


def canonical(fields: list[FieldDescriptor]) -> str:
    """The dotted proto-name path: how violations and the OpenAPI document name a field."""
    return ".".join(f.name for f in fields)


# The integer types by their range: a URL value outside it is refused by name, not by a parser's text.
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-2**31, 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-2**31, 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-2**31, 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-2**63, 2**63 - 1), FieldDescriptor.TYPE_SINT64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_NUMBER = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def expected(field: FieldDescriptor) -> str:
    """What a URL value of ``field`` must be, in words: the description of a field violation."""
    if field.type in _INT_RANGES:
        low, high = _INT_RANGES[field.type]
        return f"must be an integer from {low} to {high}"
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return "must be a number"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "must be true or false"
    if field.type == FieldDescriptor.TYPE_ENUM:
        return f"must be one of {', '.join(v.name for v in _enum(field).values)} (or its number)"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return "must be base64"
    if field.type == FieldDescriptor.TYPE_STRING:
        return "must be a string"
    if field.message_type is not None and field.message_type.full_name == "google.protobuf.Timestamp":
        return "must be an RFC 3339 timestamp, e.g. 2026-11-01T12:00:00Z"
    if field.message_type is not None and field.message_type.full_name == "google.protobuf.Duration":
        return "must be a duration in seconds with an s, e.g. 1.5s"
    return "is not a valid value for this field"


def acceptable(field: FieldDescriptor, raw: str) -> bool:
    """Whether a URL value can set ``field``; checked here rather than left to the JSON parser, so a
    refusal names what the field takes instead of quoting the parser ("invalid literal for int()")."""
    if field.type in _INT_RANGES:
        low, high = _INT_RANGES[field.type]
        return bool(_INTEGER.fullmatch(raw)) and low <= int(raw) <= high
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return bool(_NUMBER.fullmatch(raw)) and abs(float(raw)) != float("inf")
    if field.type == FieldDescriptor.TYPE_BOOL:
        return raw.lower() in ("true", "false", "1", "0")
    if field.type == FieldDescriptor.TYPE_ENUM:
        # Only the enum's own values: an undefined number is a caller's mistake, not a forward-
        # compatible value a URL could mean.
        enum = _enum(field)
        return enum.values_by_name.get(raw) is not None or (
            bool(_INTEGER.fullmatch(raw)) and enum.values_by_number.get(int(raw)) is not None)
    return True  # strings; bytes and well-known types are left to the parser, refused with expected()


def json_acceptable(field: FieldDescriptor, value: object) -> bool:
    """Whether one JSON value (from a request body) can set the scalar, enum or string-shaped
    well-known-type ``field``, as proto3 JSON reads it; checked before the parser for the same
    reason as ``acceptable``."""
    if isinstance(value, bool):
        return field.type == FieldDescriptor.TYPE_BOOL
    if field.type == FieldDescriptor.TYPE_BOOL:
        return False
    if isinstance(value, str):
        if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            return True
        if field.message_type is not None:
            return _well_known(field.message_type.full_name, value)
        return acceptable(field, value)
    if isinstance(value, (int, float)):
        if field.type in _INT_RANGES:
            low, high = _INT_RANGES[field.type]
            return float(value).is_integer() and low <= int(value) <= high
        if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return abs(float(value)) != float("inf")
        if field.type == FieldDescriptor.TYPE_ENUM:
            return float(value).is_integer() and _enum(field).values_by_number.get(int(value)) is not None
    return False


def _enum(field: FieldDescriptor) -> EnumDescriptor:
    # protobuf sets enum_type on every TYPE_ENUM field; its stubs type it Optional for all fields.
    if field.enum_type is None:
        raise TypeError(f"{field.full_name} is not an enum field")
    return field.enum_type


def _well_known(name: str, value: str) -> bool:
    from google.protobuf import duration_pb2, timestamp_pb2

    if name == "google.protobuf.Timestamp":
        parse = timestamp_pb2.Timestamp().FromJsonString
    elif name == "google.protobuf.Duration":
        parse = duration_pb2.Duration().FromJsonString
    else:
        return True
    try:
        parse(value)
    except ValueError:
        return False
    return True
