"""A query's rows as ``Mapping[str, Any]``, the type every store and converter speaks.

SQLAlchemy types a RowMapping's keys as a name or a column object, so a RowMapping is not a
``Mapping[str, Any]`` to a type checker; the keys of a text query's rows are its column names.
These are the one place that says so, instead of a cast at every store function.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from sqlalchemy.engine import Result

Row = Mapping[str, Any]


def all_of(result: Result[Any]) -> list[Row]:
    """Every row (``result.mappings().all()``)."""
    return cast("list[Row]", list(result.mappings().all()))


def first_of(result: Result[Any]) -> Row | None:
    """The first row, or None (``result.mappings().first()``)."""
    return cast("Row | None", result.mappings().first())


def one_of(result: Result[Any]) -> Row:
    """The one row; raises when there is none or more (``result.mappings().one()``)."""
    return cast(Row, result.mappings().one())


def each_of(result: Result[Any]) -> Iterable[Row]:
    """The rows as they are fetched, for a streamed result (``result.mappings()``)."""
    return cast("Iterable[Row]", result.mappings())
