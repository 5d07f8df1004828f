"""The Overview domain rules (SPEC section 4), free of SQL and of protos.

Money is integer cents or Decimal, never a binary float: a budget's status is
decided on exact values, and 79.99 % stays OK.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

NEAR_THRESHOLD = Decimal(80)    # percent of the limit
BREACHED = Decimal(100)
RECENT_BREACHES = timedelta(hours=24)

# Decision priority from the incident's severity; draft proposals are MEDIUM.
PRIORITY_BY_SEVERITY = {"critical": "CRITICAL", "high": "HIGH", "medium": "MEDIUM", "low": "LOW"}
PROPOSAL_PRIORITY = "MEDIUM"


def pulse_status(*, critical_incidents: int, pending_decisions: int, recent_breaches: int) -> str:
    if critical_incidents:
        return "CRITICAL"
    if pending_decisions or recent_breaches:
        return "ATTENTION_NEEDED"
    return "HEALTHY"


def cents(value: Decimal | int) -> int:
    """Whole cents for the wire (limits are stored as numeric; half-even rounding)."""
    return int(Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True)
class BudgetUsage:
    used: int               # cents
    remaining: Decimal      # cents, >= 0
    utilization_bp: int     # basis points of the limit, floored
    status: str             # OK | NEAR_THRESHOLD | BREACHED


def budget_usage(max_value: Decimal, used_cents: int) -> BudgetUsage:
    used = Decimal(used_cents)
    max_value = Decimal(max_value)
    # Compared as used * 100 >= max * threshold: exact, no division.
    if used * 100 >= max_value * BREACHED:
        status = "BREACHED"
    elif used * 100 >= max_value * NEAR_THRESHOLD:
        status = "NEAR_THRESHOLD"
    else:
        status = "OK"
    # A zero budget is fully used by any spend, and by none.
    utilization = int(used * 10000 // max_value) if max_value > 0 else 10000
    return BudgetUsage(used=used_cents, remaining=max(Decimal(0), max_value - used), utilization_bp=utilization,
                       status=status)


def pulse_reason(*, status: str, critical_incidents: int, active_incidents: int, draft_proposals: int,
                 recent_breaches: int) -> str:
    """The pulse's status in words, from the counts pulse_status decided it on."""
    def n(count: int, one: str, many: str) -> str:
        return f"{count} {one if count == 1 else many}"

    if status == "HEALTHY":
        return ("Nothing needs attention: no ACTIVE incident, no draft policy proposal and no limit breach "
                "in the last 24 hours.")
    parts = []
    if critical_incidents:
        parts.append(n(critical_incidents, "ACTIVE incident", "ACTIVE incidents") + " of severity critical or high")
    pending = active_incidents + draft_proposals
    if pending:
        which = [n(active_incidents, "ACTIVE incident", "ACTIVE incidents") if active_incidents else "",
                 n(draft_proposals, "draft policy proposal", "draft policy proposals") if draft_proposals else ""]
        parts.append(n(pending, "decision", "decisions") + " pending (" + ", ".join(w for w in which if w) + ")")
    if recent_breaches:
        parts.append(n(recent_breaches, "limit breach", "limit breaches") + " in the last 24 hours")
    return "; ".join(parts)


@dataclass(frozen=True)
class BudgetDay:
    day: datetime
    spent: int                       # cents that day
    window: tuple[datetime | None, datetime | None]
    window_used: int                 # cents in the window up to the end of the day
    usage: BudgetUsage


def budget_days(max_value: Decimal, days: list[datetime], spent: dict, carried: int,
                window_of: Callable[[datetime], tuple[datetime | None, datetime | None]]) -> list[BudgetDay]:
    """Each day's usage of the reset window holding it: ``carried`` (the window's spend
    before the first day) plus the days so far, restarting at 0 where a new window starts."""
    out: list[BudgetDay] = []
    used = carried
    previous = None
    for day in days:
        window = window_of(day)
        if previous is not None and window != previous:
            used = 0
        previous = window
        cents_that_day = spent.get(day.date(), 0)
        used += cents_that_day
        out.append(BudgetDay(day=day, spent=cents_that_day, window=window, window_used=used,
                             usage=budget_usage(max_value, used)))
    return out
