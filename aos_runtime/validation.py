"""Request validation shared by every service: each bad field becomes a BadRequest
field violation (INVALID_ARGUMENT), collected so a caller learns them all at once."""
from __future__ import annotations

import functools
import re
from datetime import datetime, timezone
from typing import Protocol, TypeVar, cast

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message

# canonical_names lives with the recording library's vocabularies (its core imports no runtime).
from aos_recording.vocabulary import canonical_names as canonical_names
from aos_runtime.errors import Violations
from aos_runtime.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

RESOURCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$")
MAX_TEXT = 256
# Evidence is never older than the Unix epoch; the upper bound leaves room for the
# day-sized arithmetic the services do on a bound (default windows) without overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9999, 12, 30, tzinfo=timezone.utc)


_Enum = TypeVar("_Enum", bound=int)


def canonical_values(enum: type[_Enum]) -> dict[str, _Enum]:
    """``canonical_names`` of a generated enum, typed as that enum: protoc's .pyi types an enum
    field as its enum class, which the plain ints of a descriptor are not, to a type checker."""
    wrapper = cast(EnumTypeWrapper, enum)  # what a generated enum is at run time
    return cast("dict[str, _Enum]", canonical_names(wrapper.DESCRIPTOR.full_name))


@functools.cache  # the contract's enums do not change in a process; read per field checked
def by_number(enum_full_name: str) -> dict[int, str]:
    return {number: name for name, number in canonical_names(enum_full_name).items()}


class _NamedEnum(Protocol):
    """An EnumDescriptor, whichever class implements it (the stubs know a Python and a upb one)."""

    @property
    def name(self) -> str: ...
    @property
    def full_name(self) -> str: ...


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
        elif not RESOURCE_ID.fullmatch(value):
            self.violations.add(field, "is not a valid id (letters, digits and _.:@- ; at most 200)")
        return value

    def optional_text(self, value: str, field: str) -> str | None:
        if len(value) > MAX_TEXT:
            self.violations.add(field, f"is longer than {MAX_TEXT} characters")
        elif not value.isprintable():  # NUL and other control characters: never in a filter value
            self.violations.add(field, "must not contain control characters")
        return value or None

    def timestamp(self, message: Message, field: str, name: str | None = None) -> datetime | None:
        """A Timestamp field as an aware datetime (None when unset), within EARLIEST..LATEST;
        ``name`` is the field's path in violations when it is nested."""
        name = name or field
        if not message.HasField(field):
            return None
        try:
            value: datetime = getattr(message, field).ToDatetime(tzinfo=timezone.utc)
        except (ValueError, OverflowError):
            self.violations.add(name, "is not a valid timestamp")
            return None
        if not EARLIEST <= value <= LATEST:
            self.violations.add(name, f"must be between {EARLIEST.date()} and {LATEST.date()}")
            return None
        return value

    def enum(self, number: int, enum_descriptor: _NamedEnum | None, field: str) -> str | None:
        """The database spelling of an enum field; None when unset (0). ``enum_descriptor`` is the
        field's ``enum_type``, which the stubs type as Optional (it is set on every enum field)."""
        if enum_descriptor is None:
            raise TypeError(f"{field} is not an enum field")
        if number == 0:
            return None
        name = by_number(enum_descriptor.full_name).get(number)
        if name is None:
            self.violations.add(field, f"{number} is not a value of {enum_descriptor.name}")
        return name

    def time_range(self, message: Message, after: str = "created_after", before: str = "created_before", *,
                   prefix: str = "") -> tuple[datetime | None, datetime | None]:
        """``prefix`` names the nested message in violations (``audit_slice.created_before``)."""
        start = self.timestamp(message, after, prefix + after)
        end = self.timestamp(message, before, prefix + before)
        if start and end and start >= end:
            self.violations.add(prefix + before, f"must be later than {prefix + after}")
        return start, end

    def sort(self, number: int, enum_descriptor: _NamedEnum | None, field: str = "sort") -> str | None:
        """A list's sort field (its enum's canonical name, seed 003 section 4.5's `sort`); None
        for unset and for created_at, the lists' own order (so both bind a page token alike)."""
        name = self.enum(number, enum_descriptor, field)
        return None if name == "created_at" else name

    def ascending(self, number: int, field: str = "order") -> bool:
        """A list's SortOrder (aos.evidence.v1): True for ASCENDING (oldest first); unset (0) and
        DESCENDING are newest first (SPEC section 3); any other number is a violation."""
        if number not in (0, 1, 2):
            self.violations.add(field, f"{number} is not a value of SortOrder")
        return number == 2
