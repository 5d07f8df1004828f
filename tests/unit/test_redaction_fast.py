"""Redaction's cheaper scan picks the rules and gives the text and counts the plain loop gave (issue #22).

``redaction._rules_for`` names a string's rules by one cached look-up of (the needles it holds,
its length's class) instead of a union of sets, a sort and a filter per string, and ``_scan``
searches before it substitutes (no replacement function is made for a rule that finds nothing).
Both are held here to copies of the code they replace, on generated text: every needle in any
case, secrets of every kind, lengths around every rule's minimum, long words (the gated rule).
"""
from __future__ import annotations

import functools
import string

from hypothesis import given, settings, strategies as st

from services.export import bundles, redaction

# --- the code before this change, copied --------------------------------------------------------

_RULES_OF: dict[str, set[int]] = {}
for _position, _rule in enumerate(redaction._RULES):
    for _needle in _rule.needles or ():
        _RULES_OF.setdefault(_needle, set()).add(_position)
_NEEDLES = tuple(_RULES_OF.items())
_ALWAYS = frozenset(position for position, rule in enumerate(redaction._RULES) if rule.needles is None)


def _rules_for_before(text: str) -> list[redaction._Rule]:
    lowered = text.lower()
    active = set(_ALWAYS)
    for needle, positions in _NEEDLES:
        if needle in lowered:
            active |= positions
    size = len(text)
    return [rule for rule in (redaction._RULES[position] for position in sorted(active))
            if size >= rule.min_length and (rule.gate is None or rule.gate(text))]


def _scan_before(text: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    counts: dict[str, int] = {}
    while True:
        before = text
        for rule in _rules_for_before(text):
            text = rule.pattern.sub(functools.partial(redaction._replace, rule, counts), text)
        if text == before:
            return text, tuple(counts.items())


# --- generated text -------------------------------------------------------------------------------

_SECRETS = ["Bearer sk-proj-abcdefghijklmnopqrstuvwxyz012345", "alice@example.com", "user@bücher.de",
            "password=hunter2", "AKIA" + "IOSFODNN7EXAMPLE", "4111 1111 1111 1111", "4111111111111111",
            "078-05-1120", "ghp_" + "a1B2" * 9, "xoxb-1234567890-abcdefghij", "postgres://u:pw@h/db",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "Authorization: Basic dXNlcjpwYXNz",
            "AIza" + "B" * 35, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = " + "A1b2" * 10,
            "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----", "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
            "[REDACTED:email]", "api_key: 'abc123'", "max_tokens: 5", "https://hooks.slack.com/services/T0/B0/XX"]
_needle_text = st.sampled_from(redaction._NEEDLE_TEXTS).flatmap(
    lambda needle: st.sampled_from([needle, needle.upper(), needle.title()]))
_pieces = st.text(st.characters(codec="utf-8"), max_size=12) | _needle_text | st.sampled_from(_SECRETS) \
    | st.text(string.digits + " -", min_size=1, max_size=20) \
    | st.text(string.ascii_letters + string.digits + "/+", min_size=35, max_size=45)  # long words: the gate
_texts = st.lists(_pieces, max_size=6).map("".join) | st.text(max_size=60) \
    | st.integers(0, 60).map(lambda n: "x" * n)  # every length around every rule's minimum


@settings(max_examples=3000, deadline=None)
@given(_texts)
def test_the_rules_of_a_string_are_those_picked_one_by_one(text):
    assert list(redaction._rules_for(text)) == _rules_for_before(text)


@settings(max_examples=2000, deadline=None)
@given(_texts)
def test_a_scan_gives_the_text_and_counts_it_gave(text):
    assert redaction._scan(text) == _scan_before(text)


# --- the slice summary a batch at a time ---------------------------------------------------------

_times = st.sampled_from(["2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00.000001Z", "2025-12-31T23:59:59.999999Z",
                          "2026-06-01T12:00:00.000000Z"])
_records = st.fixed_dictionaries(
    {"created_at": _times, "event_type": st.sampled_from(["RunCompleted", "LimitBreached", "AccessDenied", ""]),
     "redacted": st.booleans()}, optional={"seq": st.integers(1, 10 ** 6)})


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(_records, max_size=5), max_size=5), st.sampled_from(["audit_entry", "system_record"]))
def test_a_summary_of_batches_is_the_summary_of_their_records(batches, kind):
    if kind == "system_record":
        batches = [[{**r, "severity": "ERROR" if r["redacted"] else "INFO"} for r in b] for b in batches]
    by_batch, by_record = bundles.SliceSummary(kind), bundles.SliceSummary(kind)
    for batch in batches:
        by_batch.add_all(batch)
        for record in batch:
            by_record.add(record)
    assert by_batch.as_dict() == by_record.as_dict()
    assert by_batch.by_control == by_record.by_control and by_batch.count == by_record.count
