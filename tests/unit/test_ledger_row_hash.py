"""A ledger row's hashed bytes built for its fixed shape (hashing.ledger_row_hash_input) are the
general path's (canonical_json of the twelve fields, SPEC section 5) and the RFC 8785 reference's,
byte for byte; and the batch verifier (ChainVerifier.feed_ledger_rows) reports every tampered
chain exactly as ``feed`` does, anomaly for anomaly.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import rfc8785
from hypothesis import given, settings, strategies as st

from aos_recording import hashing
from aos_recording.verify import ChainVerifier, ledger_content_hash_of

_text = st.text(st.characters(codec="utf-8", exclude_categories=()), max_size=12) | st.sampled_from(
    ["", "\x00", "\x1f", "\x7f", "\u2028", "\ue000", "\uffff", "\U0001f602", "\U0010ffff", "\"\\/", "a\tb\nc"])
# What a jsonb column gives back through json.loads: no tuples, no datetimes; floats and big integers
# are there (a document may hold them), and so are keys past U+FFFF (the UTF-16 key order).
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 53) + 1, 2 ** 53 - 1) | st.integers() | _text
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=20)
_plain_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 53) + 1, 2 ** 53 - 1) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=20)
class _NoOffset(tzinfo):
    """A zone without an offset (utcoffset None): the datetime is naive for orjson, not UTC."""

    def utcoffset(self, dt):
        return None

    def dst(self, dt):
        return None


# The zones psycopg gives a timestamptz (the session's: UTC as timezone.utc or ZoneInfo, or another),
# and fixed offsets, zero among them; microseconds zero or not.
_zones = st.sampled_from([timezone.utc, ZoneInfo("UTC"), ZoneInfo("Etc/UTC"), ZoneInfo("Europe/London"),
                          ZoneInfo("Europe/Berlin"), timezone(timedelta(0)), _NoOffset(),
                          timezone(timedelta(hours=-5, minutes=30)), timezone(timedelta(0), "UTC")])
# hypothesis takes naive bounds; a day inside the range keeps every zone's conversion in it.
_times = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),  # noqa: DTZ001
                      timezones=_zones) | \
    st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.replace(microsecond=0))
_optional = st.none() | _text


def _row(version: int = 1, **fields):
    values = {"seq": 1, "content_hash": b"\x01" * 32, "prev_hash": b"\x02" * 32, "chain_hash": b"\x03" * 32,
              "hash_version": version, "commitments": None, **fields}
    return tuple(values.get(c) for c in hashing.LEDGER_ROW_COLUMNS)  # absent fields hash as null


_rows = st.builds(
    lambda *values: _row(**dict(zip(hashing.LEDGER_FIELDS, values, strict=True))),
    _text, _text, _text, _text, _text, _text, _optional, _optional, _optional, _times,
    st.none() | _json | _plain_json, st.none() | _json | _plain_json)


def _general(row):
    return {f: v for f, v in zip(hashing.LEDGER_ROW_COLUMNS, row, strict=True) if f in hashing.LEDGER_FIELDS}


def _outcome(call, value):
    try:
        return call(value)
    except (ValueError, TypeError) as error:  # rfc8785's errors are ValueErrors
        return type(error)


@settings(max_examples=4000, deadline=None)
@given(_rows)
def test_generated_rows_hash_as_the_general_path_and_the_reference(row):
    fields = _general(row)
    built = _outcome(hashing.ledger_row_hash_input, row)
    assert built == _outcome(hashing.canonical_json, fields)
    assert built == _outcome(lambda d: rfc8785.dumps(hashing._plain(d)), fields)
    if isinstance(built, bytes):
        assert hashing.ledger_row_content_hash(row) == hashing.stored_ledger_content_hash(
            dict(zip(hashing.LEDGER_ROW_COLUMNS, row, strict=True))) == hashing.sha256(built)


def test_the_fast_cases_and_the_ones_it_hands_back():
    utc = datetime(2026, 1, 13, 12, 0, 0, tzinfo=timezone.utc)
    cases = [
        _row(id="a", created_at=utc, after_state={"n": 1, "run_id": "r"}),        # microseconds 0: the fragment
        _row(id="a", created_at=utc.replace(microsecond=5), before_state=[1, "x"]),
        _row(id="a", created_at=utc.astimezone(ZoneInfo("UTC")), after_state={"\U0001f602": 1, "\ue000": 2}),
        _row(id="a", created_at=utc.astimezone(ZoneInfo("Asia/Tokyo")), after_state={"x": 0.5}),
        _row(id="a", created_at=utc, after_state={"big": 2 ** 60}),
        _row(id="a", created_at=utc, after_state={"f": 1.0, "e": 1e16}),
    ]
    for row in cases:
        assert _outcome(hashing.ledger_row_hash_input, row) == _outcome(hashing.canonical_json, _general(row))
    assert hashing.ledger_row_hash_input(cases[0]).find(b'"created_at":"2026-01-13T12:00:00.000000Z"') > 0


def test_v2_rows_take_the_general_path():
    commitments = {"after_state": "ab" * 32}
    row = _row(2, id="a", tenant_id="t", event_type="E", entity_type="RUN", entity_id="e", actor_type="SYSTEM",
               created_at=datetime(2026, 1, 1, tzinfo=timezone.utc), after_state={"n": 1})
    row = row[:5] + (commitments,) + row[6:]
    assert hashing.ledger_row_content_hash(row) == hashing.stored_ledger_content_hash(
        dict(zip(hashing.LEDGER_ROW_COLUMNS, row, strict=True)))
    as_text = row[:5] + (json.dumps(commitments),) + row[6:]
    assert hashing.ledger_row_content_hash(as_text) == hashing.ledger_row_content_hash(row)


# --- the batch verifier against feed, on tampered chains ------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _chain(n: int) -> list[dict]:
    rows, prev = [], hashing.GENESIS
    for seq in range(1, n + 1):
        row = {"id": f"aud-{seq}", "tenant_id": "t", "event_type": "LimitUpdated", "entity_type": "LIMIT",
               "entity_id": "lim", "actor_type": "SYSTEM", "actor_id": None, "action_reason": f"r{seq}",
               "correlation_id": None, "created_at": T0 + timedelta(seconds=seq, microseconds=seq % 3),
               "before_state": None, "after_state": {"n": seq, "x": [seq / 4]} if seq % 5 == 0 else {"n": seq},
               "seq": seq, "hash_version": 1, "commitments": None}
        row["content_hash"] = hashing.ledger_content_hash(row)
        row["prev_hash"] = prev
        row["chain_hash"] = prev = hashing.chain_hash(prev, row["content_hash"])
        rows.append(row)
    return rows


_FIELDS = ("actor_id", "action_reason", "entity_id", "created_at", "after_state", "seq", "content_hash",
           "prev_hash", "chain_hash", "hash_version")


def _tamper(rows: list[dict], edits) -> list[dict]:
    rows = [dict(r) for r in rows]
    for kind, at, field in edits:
        at %= len(rows) or 1
        if not rows:
            return rows
        if kind == "change":
            value = rows[at][field]
            rows[at][field] = (
                value + 1 if isinstance(value, int) else
                value + timedelta(microseconds=1) if isinstance(value, datetime) else
                bytes(32 - len(value)) + bytes(b ^ 1 for b in value) if isinstance(value, bytes) else
                {"changed": True} if isinstance(value, dict) or field.endswith("state") else
                f"{value}!")
        elif kind == "delete":
            del rows[at]
        elif kind == "swap":
            other = (at + 3) % len(rows)
            rows[at], rows[other] = rows[other], rows[at]
        elif kind == "duplicate":
            rows.insert(at, dict(rows[at]))
    return rows


def _report(feed, rows, start_seq, prev):
    verifier = ChainVerifier(ledger_content_hash_of, start_seq=start_seq, prev_hash=prev)
    try:
        feed(verifier, rows)
    except ValueError as error:  # an unknown hash_version: both raise
        return type(error)
    r = verifier.report
    return r.checked, r.first_seq, r.last_seq, r.head_hash, r.anomalies


@settings(max_examples=600, deadline=None)
@given(st.integers(0, 25), st.lists(st.tuples(st.sampled_from(["change", "delete", "swap", "duplicate"]),
                                              st.integers(0, 100), st.sampled_from(_FIELDS)), max_size=4),
       st.integers(1, 7), st.integers(0, 3))
def test_the_batch_verifier_reports_what_feed_reports(n, edits, batch, start):
    rows = _tamper(_chain(n)[start:], edits)
    prev = hashing.GENESIS if start == 0 else _chain(n)[start - 1]["chain_hash"] if start <= n else hashing.GENESIS
    tuples = [tuple(r[c] for c in hashing.LEDGER_ROW_COLUMNS) for r in rows]

    def one_by_one(verifier, rows):
        for row in rows:
            verifier.feed(row)

    def in_batches(verifier, _rows):
        for i in range(0, len(tuples), batch):
            verifier.feed_ledger_rows(tuples[i:i + batch])

    expected = _report(one_by_one, rows, start + 1, prev)
    assert _report(in_batches, rows, start + 1, prev) == expected
    if not edits and not isinstance(expected, type):
        assert expected[4] == [] and expected[0] == len(rows)
