"""Request fields as HTTP names them: dotted paths through the request message.

Shared by the route table (path variables are checked at startup), the
transcoder (query parameters) and the OpenAPI generator (which parameters exist).
"""
from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

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
