"""Request validation shared by every service: each bad field becomes a BadRequest
field violation (INVALID_ARGUMENT), collected so a caller learns them all at once."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from google.protobuf import descriptor_pool

from aos.evidence.v1 import options_pb2
from aos_runtime.errors import Violations
from aos_runtime.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

RESOURCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$")
MAX_TEXT = 256


def canonical_names(enum_full_name: str) -> dict[str, int]:
    """``{"PolicyRuleCreated": 1, ...}``: an enum's database spellings (its canonical_name options)."""
    enum = descriptor_pool.Default().FindEnumTypeByName(enum_full_name)
    names = {}
    for value in enum.values:
        if value.number == 0:
            continue
        name = value.GetOptions().Extensions[options_pb2.canonical_name]
        if not name:
            raise ValueError(f"{enum_full_name}.{value.name} has no canonical_name option")
        names[name] = value.number
    return names


def by_number(enum_full_name: str) -> dict[int, str]:
    return {number: name for name, number in canonical_names(enum_full_name).items()}


class Request:
    """Reads one request's fields, recording what is wrong with each."""

    def __init__(self) -> None:
        self.violations = Violations()

    def done(self) -> None:
        self.violations.raise_if_any()

    def page_size(self, requested: int, field: str = "page_size") -> int:
        """0 → 50; above 1000 → 1000; negative → a violation (SPEC section 3)."""
        if requested < 0:
            self.violations.add(field, "must not be negative")
            return DEFAULT_PAGE_SIZE
        return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)

    def resource_id(self, value: str, field: str) -> str:
        if not value:
            self.violations.add(field, "is required")
        elif not RESOURCE_ID.match(value):
            self.violations.add(field, "is not a valid id (letters, digits and _.:@- ; at most 200)")
        return value

    def optional_text(self, value: str, field: str) -> str | None:
        if len(value) > MAX_TEXT:
            self.violations.add(field, f"is longer than {MAX_TEXT} characters")
        return value or None

    def enum(self, number: int, enum_descriptor, field: str) -> str | None:
        """The database spelling of an enum field; None when unset (0)."""
        if number == 0:
            return None
        name = by_number(enum_descriptor.full_name).get(number)
        if name is None:
            self.violations.add(field, f"{number} is not a value of {enum_descriptor.name}")
        return name

    def time_range(self, message, after: str = "created_after", before: str = "created_before", *,
                   prefix: str = "") -> tuple[datetime | None, datetime | None]:
        """``prefix`` names the nested message in violations (``audit_slice.created_before``)."""
        start = _time(message, after)
        end = _time(message, before)
        if start and end and start >= end:
            self.violations.add(prefix + before, f"must be later than {prefix + after}")
        return start, end


def _time(message, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=timezone.utc)
