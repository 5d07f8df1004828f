"""Retention policies: the suite's defaults, the compliance classes' minimums, validation.

Pure rules (no database): the Export service validates SetRetentionPolicy with them and the
maintenance path (``aos_recording.retention apply``) reads the defaults for a tenant that set
no policy. Seed 003 §10 gives the numbers:

- default retention: LLM traces 90 days, system records by level (DEBUG 1 day, INFO 7,
  WARNING 30, ERROR 90, CRITICAL permanent), audit ledger 365 days — "compliance minimum",
  so no class may keep the ledger shorter;
- compliance overrides: SOC2 keeps LLM traces 365 days and the audit ledger 7 years; HIPAA
  both 6 years; GDPR "as needed" (no minimum beyond the ledger's). A class is a set of
  minimums: a policy below its class's minimum is refused, never silently raised.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

AUDIT_LEDGER = "AUDIT_LEDGER"
LLM_RUNS = "LLM_RUNS"
SYSTEM_RECORDS = "SYSTEM_RECORDS"
RECORD_TYPES = (AUDIT_LEDGER, LLM_RUNS, SYSTEM_RECORDS)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CLASSES = ("STANDARD", "SOC2", "HIPAA", "GDPR")
DEFAULT_CLASS = "STANDARD"
MAX_DAYS = 36500
MAX_TAGS = 16
TAG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

_YEAR = 365
# None: permanent.
DEFAULT_DAYS: dict[tuple[str, str], int | None] = {
    (AUDIT_LEDGER, ""): 365,
    (LLM_RUNS, ""): 90,
    (SYSTEM_RECORDS, "DEBUG"): 1,
    (SYSTEM_RECORDS, "INFO"): 7,
    (SYSTEM_RECORDS, "WARNING"): 30,
    (SYSTEM_RECORDS, "ERROR"): 90,
    (SYSTEM_RECORDS, "CRITICAL"): None,
}
# The minimum days a class keeps a record type (absent: no minimum).
CLASS_MINIMUM_DAYS: dict[str, dict[str, int]] = {
    "STANDARD": {AUDIT_LEDGER: 365},
    "SOC2": {AUDIT_LEDGER: 7 * _YEAR, LLM_RUNS: _YEAR},
    "HIPAA": {AUDIT_LEDGER: 6 * _YEAR, LLM_RUNS: 6 * _YEAR},
    "GDPR": {AUDIT_LEDGER: 365},
}
KEYS = tuple(DEFAULT_DAYS)


@dataclass(frozen=True)
class Policy:
    """One record type's (and level's) policy; ``days`` None: permanent."""
    record_type: str
    level: str
    days: int | None
    retention_class: str = DEFAULT_CLASS
    compliance_tags: tuple[str, ...] = field(default_factory=tuple)
    is_default: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.record_type, self.level

    def as_state(self) -> dict:
        """The policy as an audit entry's before/after state."""
        return {"record_type": self.record_type, "level": self.level or None, "retention_days": self.days,
                "permanent": self.days is None, "retention_class": self.retention_class,
                "compliance_tags": list(self.compliance_tags), "is_default": self.is_default}


def default(record_type: str, level: str = "") -> Policy:
    return Policy(record_type, level, DEFAULT_DAYS[(record_type, level)], is_default=True)


def effective(own: dict[tuple[str, str], Policy]) -> list[Policy]:
    """A tenant's policy for every key: its own where set, else the default."""
    return [own.get(key) or default(*key) for key in KEYS]


def problems(record_type: str, level: str, days: int | None, retention_class: str,
             tags: tuple[str, ...]) -> list[tuple[str, str]]:
    """(field, what is wrong) for each problem of a policy; empty when it may be set."""
    found: list[tuple[str, str]] = []
    if record_type not in RECORD_TYPES:
        found.append(("record_type", f"must be one of {', '.join(RECORD_TYPES)}"))
    elif record_type == SYSTEM_RECORDS and level not in LEVELS:
        found.append(("level", f"is required for SYSTEM_RECORDS: one of {', '.join(LEVELS)}"))
    elif record_type != SYSTEM_RECORDS and level:
        found.append(("level", "applies to SYSTEM_RECORDS only"))
    if days is not None and not 1 <= days <= MAX_DAYS:
        found.append(("retention_days", f"must be 1 to {MAX_DAYS} (or permanent)"))
    if retention_class not in CLASSES:
        found.append(("retention_class", f"must be one of {', '.join(CLASSES)}"))
    else:
        minimum = CLASS_MINIMUM_DAYS[retention_class].get(record_type)
        if minimum is not None and days is not None and days < minimum:
            found.append(("retention_days", f"{retention_class} keeps {record_type} at least {minimum} days"))
    if len(tags) > MAX_TAGS:
        found.append(("compliance_tags", f"at most {MAX_TAGS}"))
    if any(not TAG.match(t) for t in tags):
        found.append(("compliance_tags", "each 1 to 64 of [a-z0-9._-], starting with a letter or digit"))
    if len(set(tags)) != len(tags):
        found.append(("compliance_tags", "must not repeat a tag"))
    return found
