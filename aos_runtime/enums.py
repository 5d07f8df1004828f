"""Generated enums, typed as themselves.

protoc's .pyi types an enum field as its enum class, while ``Enum.Value(name)`` and a
descriptor's numbers are plain ints to a type checker; at run time they are the same ints.
"""
from __future__ import annotations

from typing import TypeVar, cast

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

_Enum = TypeVar("_Enum", bound=int)


def enum_named(enum: type[_Enum], name: str) -> _Enum:
    """``enum.Value(name)``, typed as the enum; ValueError for a name it does not have."""
    return cast(_Enum, cast(EnumTypeWrapper, enum).Value(name))
