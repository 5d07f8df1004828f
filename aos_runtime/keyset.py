"""Keyset-paginated list queries, shared by every service's store.

Lists are ordered newest first on (created_at DESC, id DESC) and continue after
the last item's key, so page 2,000 costs what page 1 does. Totals count at most
EXACT_TOTAL_LIMIT + 1 matching rows; above that they are the planner's estimate,
flagged, so a total never costs a scan of a large tenant.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from aos_runtime.db import fetch_rows, fetch_rows_and_value, fetch_value
from aos_runtime.pagination import EXACT_TOTAL_LIMIT


@dataclass(frozen=True)
class Page:
    rows: list[Mapping[str, Any]]
    has_more: bool
    total: int
    total_is_estimate: bool


def position(after: Sequence[Any]) -> dict[str, Any]:
    """The keyset parameters a page token's position stands for."""
    return {"after_at": datetime.fromisoformat(after[0].replace("Z", "+00:00")), "after_id": after[1]}


NEWEST_FIRST = "(a.created_at, a.id) < (:after_at, :after_id)"
OLDEST_FIRST = "(a.created_at, a.id) > (:after_at, :after_id)"


@dataclass(frozen=True)
class SortKey:
    """A list's sort field (seed 003 section 4.5's `sort`): an SQL expression over the list's
    row (alias ``a``) that is never NULL, and its SQL type. A sorted list orders on (key,
    created_at, id), all one direction, and selects the key ``AS sort_key`` so that a page
    token carries the last row's value exactly as the database compared it."""

    expression: str
    sql_type: str

    def on(self, alias: str) -> str:
        return self.expression.replace("a.", f"{alias}.")


def direction(ascending: bool, alias: str = "a", key: SortKey | None = None) -> tuple[str, str]:
    """(ORDER BY, keyset past a position) of a list in either order on (created_at, id), or on
    (key, created_at, id) when sorted by a field: one index serves both orders (read backwards
    for ascending), and a page token's position is the last row's key either way. One
    direction for the whole key keeps the keyset a single row comparison, an index condition."""
    columns = [f"{alias}.created_at", f"{alias}.id"]
    values = [":after_at", ":after_id"]
    if key is not None:
        columns.insert(0, key.on(alias))
        values.insert(0, f"CAST(:after_key AS {key.sql_type})")
    way, past = ("ASC", ">") if ascending else ("DESC", "<")
    return (", ".join(f"{c} {way}" for c in columns),
            f"({', '.join(columns)}) {past} ({', '.join(values)})")


def after_clause(after: Sequence[Any] | None, keyset: str = NEWEST_FIRST) -> tuple[str, dict[str, Any]]:
    """(" AND <keyset>", its parameters) past a page token's position; nothing on a first page.
    A sorted list's position ends with the sort key's value (Listing.next_token)."""
    if after is None:
        return "", {}
    params = position(after)
    if ":after_key" in keyset:
        params["after_key"] = after[-1]
    return f" AND {keyset}", params


def cut(rows: Sequence[Mapping[str, Any]], limit: int, total: int, estimate: bool) -> Page:
    """A page from ``limit + 1`` rows read: the extra row only says that there is more."""
    return Page(rows=list(rows[:limit]), has_more=len(rows) > limit, total=total, total_is_estimate=estimate)


# Operators where() knows; "IS NULL" takes a bool (True: IS NULL, False: IS NOT NULL).
_OPERATORS = ("=", "<>", ">=", "<", "= ANY", "IS NULL")


def where(base: str, conditions: Iterable[tuple[str, str, Any]], prefix: str = "f") -> tuple[str, dict[str, Any]]:
    """The one filter → WHERE builder of every list: ``base`` (the tenant's scope) AND'ed
    with each (column, operator, value) whose value is set (not None, not empty).
    Values are bound parameters, never text in the SQL; columns and operators come from code."""
    clauses: list[str] = [base] if base else []
    params: dict[str, Any] = {}
    for column, op, value in conditions:
        if op not in _OPERATORS:
            raise ValueError(f"where(): unknown operator {op!r}")
        if value is None or (isinstance(value, (tuple, list)) and not value):
            continue
        if op == "IS NULL":
            clauses.append(f"{column} IS {'NULL' if value else 'NOT NULL'}")
            continue
        name = f"{prefix}{len(params)}"
        clauses.append(f"{column} = ANY(:{name})" if op == "= ANY" else f"{column} {op} :{name}")
        params[name] = list(value) if op == "= ANY" else value
    return " AND ".join(clauses), params


def keyset_page(conn: Connection, select: str, where: str, params: dict[str, Any], count_from: str,
                after: Sequence[Any] | None, limit: int, order: str = "a.created_at DESC, a.id DESC",
                keyset: str = NEWEST_FIRST,
                known_total: tuple[str, Mapping[str, Any]] | None = None, binary: bool = False) -> Page:
    """``known_total``: (SQL, parameters) of an exact count of every match that the caller can
    read cheaper than counting them (the audit ledger's chain span), used instead of the capped
    count; read with the page, in the same round trip (``fetch_rows_and_value``). ``binary``:
    the page's rows in binary format (``aos_runtime.db.fetch_rows`` says when that may be)."""
    past, cursor = after_clause(after, keyset)
    params = {**params, **cursor}
    page_sql = f"{select} WHERE {where}{past} ORDER BY {order} LIMIT :limit"
    page_params = {**params, "limit": limit + 1}
    known = None
    if known_total is not None:
        rows, known = fetch_rows_and_value(conn, page_sql, page_params, *known_total, binary=binary)
    else:
        rows = fetch_rows(conn, page_sql, page_params, binary=binary)
    if after is None and len(rows) <= limit:
        # A first page that holds every match is its own count (same filter, same
        # snapshot): no second query.
        total, estimate = len(rows), False
    elif known is not None:
        total, estimate = int(known), False
    else:
        total, estimate = count_total(conn, count_from, where, params)
    return cut(rows, limit, total, estimate)


def count_total(conn: Connection, count_from: str, where: str, params: dict[str, Any]) -> tuple[int, bool]:
    """(count, is_estimate): exact up to EXACT_TOTAL_LIMIT, else the planner's row estimate."""
    exact = fetch_value(conn, f"SELECT count(*) FROM (SELECT 1 FROM {count_from} WHERE {where} LIMIT :cap) s",
                        {**params, "cap": EXACT_TOTAL_LIMIT + 1})
    if exact <= EXACT_TOTAL_LIMIT:
        return exact, False
    # Through the driver as the count above: in a pipelined read (aos_runtime.db.pipelined)
    # SQLAlchemy's result of a statement sent in pipeline mode comes back closed.
    plan = fetch_value(conn, f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {count_from} WHERE {where}", params)
    plan = plan if isinstance(plan, list) else json.loads(plan)
    return max(int(plan[0]["Plan"]["Plan Rows"]), EXACT_TOTAL_LIMIT + 1), True
