"""Deterministic redaction applied to every evidence export before it is rendered.

Two mechanisms, both counted per kind for the export's RedactionSummary:

- secret-named fields: the whole value of a dict entry whose key names a secret
  ("password", "openai_api_key", "X-Api-Key", ...) becomes "[REDACTED:secret_field]";
- secrets and PII inside any string value become "[REDACTED:<kind>]".

Dict keys themselves are never rewritten. Patterns are precise rather than greedy:
a redaction that eats epoch milliseconds, UUIDs or digests damages the evidence.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Declared in export manifests; a change to what is redacted needs a new profile name.
PROFILE = "aos-default-v1"

_SECRET_FIELD = "secret_field"

# Matched as substrings of the key after lowercasing and dropping separators, so
# "api_key", "API-Key", "apiKey" and "x_api_key" all read as "apikey".
_SECRET_KEY_MARKERS = ("password", "passwd", "secret", "token", "apikey", "privatekey",
                       "authorization", "credential", "cookie", "sessionkey", "accesskey")
# LLM usage counters ("input_tokens", "max_tokens", "token_count") contain "token" but
# hold no secret, so a key ending in one of these words is exempt from the "token"
# marker. The rest of such a key is still checked, against the other markers and
# against words that make it a list of credentials ("access_tokens", "auth_tokens").
_TOKEN_COUNTER_SUFFIXES = ("tokens", "tokencount")
_CREDENTIAL_TOKEN_QUALIFIERS = ("access", "refresh", "auth", "bearer", "session", "csrf", "api", "jwt")
_KEY_SEPARATORS = re.compile(r"[\s._-]+")


@functools.lru_cache(maxsize=4096)  # exports repeat the same few keys millions of times
def _is_secret_key(key: str) -> bool:
    """Whether a dict key names a secret, so its whole value is withheld."""
    normalised = _KEY_SEPARATORS.sub("", key.lower())
    for suffix in _TOKEN_COUNTER_SUFFIXES:
        if normalised.endswith(suffix):
            head = normalised[: -len(suffix)]
            return any(word in head for word in _SECRET_KEY_MARKERS + _CREDENTIAL_TOKEN_QUALIFIERS)
    return any(marker in normalised for marker in _SECRET_KEY_MARKERS)


# Card networks as (prefix digits, lowest prefix, highest prefix, valid lengths).
# Requiring a real IIN *with its length* is what keeps timestamps out: epoch
# milliseconds for 2001-2033 are 13 digits starting with "1", and no network issues
# 1-prefixed cards; the only 13-digit cards are Visa ("4"), which as epoch ms is
# year 2096. Epoch seconds (10 digits) are below the 13-digit minimum, and epoch
# micro/nanoseconds start with "1" until 2033.
_CARD_NETWORKS = (
    (1, 4, 4, (13, 16, 19)),                                                       # Visa
    (2, 51, 55, (16,)), (4, 2221, 2720, (16,)),                                    # Mastercard
    (2, 34, 34, (15,)), (2, 37, 37, (15,)),                                        # Amex
    (4, 6011, 6011, range(16, 20)), (2, 65, 65, range(16, 20)), (3, 644, 649, range(16, 20)),  # Discover
    (4, 3528, 3589, range(16, 20)),                                                # JCB
    (2, 36, 36, range(14, 20)), (2, 38, 38, range(14, 20)), (3, 300, 305, range(14, 20)),  # Diners
)


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _is_card_number(candidate: str) -> bool:
    digits = candidate.replace(" ", "").replace("-", "")
    return any(len(digits) in lengths and low <= int(digits[:width]) <= high
               for width, low, high, lengths in _CARD_NETWORKS) and _luhn_valid(digits)


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    # Lowercase substrings, one of which every match contains. A rule none of whose
    # needles is in the lowercased text is skipped: most strings run no regex at all.
    needles: tuple[str, ...]
    # Final say on a match the regex alone cannot decide (Luhn, card prefix).
    accept: Callable[[str], bool] | None = None

    @property
    def placeholder(self) -> str:
        return f"[REDACTED:{self.kind}]"


_DIGITS = tuple("0123456789")

# Applied in this order, each to the output of the previous one, so a secret is
# counted once under the first kind that claims it ("Bearer eyJ..." is a
# bearer_token, not a jwt). Placeholders match none of the patterns.
_RULES = (
    _Rule("bearer_token", re.compile(
        # RFC 6750 b64token; 16+ characters so prose like "Bearer authentication" survives.
        r"(?i)(?<![A-Za-z0-9_])bearer\s+[A-Za-z0-9._~+/-]{16,}=*"),
        ("bearer",)),
    _Rule("jwt", re.compile(
        # header.payload.signature; the signature may be empty (alg "none").
        r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
        ("eyj",)),
    _Rule("openai_key", re.compile(
        # Any "sk-" key (sk-proj-, sk-svcacct-, ...). The body must hold an uppercase
        # letter or digit, which real keys always do and slugs like "sk-learn-..." do not.
        r"(?<![A-Za-z0-9_-])sk-(?=[a-z_-]*[A-Z0-9])[A-Za-z0-9_-]{20,}"),
        ("sk-",)),
    _Rule("aws_access_key", re.compile(
        r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        ("akia", "asia")),
    _Rule("aws_secret_key", re.compile(
        # Only after a secret-key label: a bare 40-character string is as likely a git SHA.
        # The label is kept so the reader still sees what was removed.
        r"(?P<keep>(?i:(?:aws[ _-]?)?secret[ _-]?(?:access[ _-]?)?key)[\"']?\s*[:=]?\s*[\"']?)"
        r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
        ("secret",)),
    _Rule("github_token", re.compile(
        r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    _Rule("slack_token", re.compile(
        r"(?<![A-Za-z0-9])xox[baprs]-[A-Za-z0-9-]{10,}"
        r"|(?:https?://)?hooks\.slack\.com/services/[A-Za-z0-9]+/[A-Za-z0-9]+/[A-Za-z0-9]+"),
        ("xox", "hooks.slack.com")),
    _Rule("email", re.compile(
        # ASCII dot-atom local part and a dotted hostname with an alphabetic TLD;
        # every repetition is bounded or delimited, so there is no catastrophic backtracking.
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}"
        r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![A-Za-z0-9-])"),
        ("@",)),
    _Rule("card_number", re.compile(
        # A whole digit run (never part of a word, decimal or longer run), either
        # contiguous or in groups with one consistent separator (4-4-4-4, 4-6-5, ...).
        r"(?<![A-Za-z0-9_])(?<![0-9]\.)"
        r"(?:[0-9]{13,19}"
        r"|(?<![0-9][ -])[0-9]{4}(?P<sep>[ -])[0-9]{3,6}(?:(?P=sep)[0-9]{3,6}){1,3}(?![ -][0-9]))"
        r"(?![A-Za-z0-9_])(?!\.[0-9])"),
        _DIGITS, _is_card_number),
    _Rule("ssn", re.compile(
        # Areas 000, 666 and 900-999, group 00 and serial 0000 are never issued.
        r"(?<![A-Za-z0-9_.-])(?!000|666|9)[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![A-Za-z0-9_-])(?!\.[0-9])"),
        ("-",)),
)


@dataclass(frozen=True)
class RedactionResult:
    value: Any
    counts: dict[str, int]


class Redactor:
    """Redacts values; counts accumulate across calls, so one Redactor serves one export."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    @property
    def counts(self) -> dict[str, int]:
        # Only kinds that occurred are ever stored, so every entry is > 0.
        return dict(sorted(self._counts.items()))

    def redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact_text(value)
        if isinstance(value, dict):
            return {key: self._redact_entry(key, item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.redact(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.redact(item) for item in value)
        return value

    def _redact_entry(self, key: Any, value: Any) -> Any:
        # The field rule wins: its value is dropped whole, not scanned, and counted once.
        if value is not None and isinstance(key, str) and _is_secret_key(key):
            self._count(_SECRET_FIELD)
            return f"[REDACTED:{_SECRET_FIELD}]"
        return self.redact(value)

    def _redact_text(self, text: str) -> str:
        lowered = text.lower()
        for rule in _RULES:
            for needle in rule.needles:
                if needle in lowered:
                    text = rule.pattern.sub(functools.partial(self._replace, rule), text)
                    break
        return text

    def _replace(self, rule: _Rule, match: re.Match[str]) -> str:
        if rule.accept is not None and not rule.accept(match[0]):
            return match[0]
        self._count(rule.kind)
        return (match.groupdict().get("keep") or "") + rule.placeholder

    def _count(self, kind: str) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1


def redact(value: Any) -> RedactionResult:
    """Redacts one value with a fresh Redactor: the redacted copy and its counts."""
    redactor = Redactor()
    redacted = redactor.redact(value)
    return RedactionResult(redacted, redactor.counts)
