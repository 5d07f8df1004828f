"""The Overview domain rules (SPEC section 4), free of SQL and of protos.

Money is integer cents or Decimal, never a binary float: a budget's status is
decided on exact values, and 79.99 % stays OK.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
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
