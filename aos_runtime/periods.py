"""Calendar windows in UTC: the current day, ISO week and month of an instant.

Budgets reset on them (Overview) and synthetic scenarios anchor times to them, so
both agree on where a window starts.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone


def month_of(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding ``now``: [first instant, first instant of the next)."""
    start = now.astimezone(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def reset_window(reset_period: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The window a budget's usage counts over: the current day (UTC), ISO week
    (from Monday), calendar month, or all time (None, None) when it never resets."""
    day = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    if reset_period == "DAILY":
        return day, day + timedelta(days=1)
    if reset_period == "WEEKLY":
        monday = day - timedelta(days=day.weekday())
        return monday, monday + timedelta(days=7)
    if reset_period == "MONTHLY":
        return month_of(now)
    if reset_period == "NONE":
        return None, None
    raise ValueError(f"unknown reset period {reset_period!r}")
