"""An audit slice's fast path gives the generic path's records and bytes (issue #22).

The export of an audit slice reads its rows as tuples and makes each v1 entry's record without
the generic conversions (RecordWriter.plain_audit_rows), writes the records' JSON a batch at a time in one orjson call
(bundles.AuditRecords.json_batches, hashing.canonical_json_joined) and derives the SOC2 control
counts from the event types (SliceSummary.by_control). Each is held here to the generic code it
stands for, on generated rows and documents: text with controls, non-BMP characters and secrets,
states with floats, big integers, nesting and secret keys, times in several zones, v2 rows.
"""
from __future__ import annotations

import array
import random
import struct
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import rfc8785
from hypothesis import given, settings, strategies as st

from aos_evidence.kinds import BundleType, ExportFormat, ExportScope
from aos_recording import hashing
from services.export import artifacts, builder, bundles, redaction
from tests.unit import export_pins as pins

_SECRETS = ["Bearer sk-proj-abcdefghijklmnopqrstuvwxyz012345", "alice@example.com", "password=hunter2",
            "AKIA" + "IOSFODNN7EXAMPLE", "4111 1111 1111 1111", "[REDACTED:email]"]
_text = st.text(st.characters(codec="utf-8", exclude_categories=()), max_size=10) | st.sampled_from(
    ["", "\x00", "\x7f", "\u2028", "\ue000", "\U0001f602", "=SUM(A1)", "-5", *_SECRETS])
_keys = _text | st.sampled_from(["password", "api_key", "input_tokens", "Authorization", "run_id", "n", "\U0001f602",
                                 "\ufb33", "[REDACTED:email]", "token", "sk-proj-abcdefghijklmnopqrstuvwxyz012345"])
_leaf = st.none() | st.booleans() | st.integers(-(2 ** 53) + 1, 2 ** 53 - 1) | _text
_state = st.none() | st.recursive(
    _leaf | st.integers() | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4)
    | st.tuples(st.sampled_from(["Authorization", "X-Api-Key", "name"]), inner).map(list),
    max_leaves=12) | st.recursive(_leaf, lambda inner: st.lists(inner, max_size=3)
                                  | st.dictionaries(_keys, inner, max_size=4), max_leaves=12)
_times = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),  # noqa: DTZ001
                      timezones=st.sampled_from([timezone.utc, ZoneInfo("Etc/UTC"), ZoneInfo("Europe/Berlin"),
                                                 timezone(timedelta(hours=5, minutes=30))])) | \
    st.datetimes(timezones=st.just(ZoneInfo("Etc/UTC"))).map(lambda d: d.replace(microsecond=0))
_hash = st.binary(min_size=32, max_size=32)


@st.composite
def _rows(draw) -> dict:
    row = {"id": draw(_text), "tenant_id": draw(_text), "seq": draw(st.integers(1, 2 ** 40)),
           "event_type": draw(st.sampled_from(["RunCompleted", "LimitBreached", "PolicyRuleUpdated", "AccessDenied",
                                              "EmergencyStop", "IncidentResolved"]) | _text),
           "entity_type": draw(_text), "entity_id": draw(_text), "actor_type": draw(_text),
           "actor_id": draw(st.none() | _text), "action_reason": draw(st.none() | _text),
           "correlation_id": draw(st.none() | _text), "created_at": draw(_times),
           "before_state": draw(_state), "after_state": draw(_state), "content_hash": draw(_hash),
           "prev_hash": draw(_hash), "chain_hash": draw(_hash),
           "hash_version": draw(st.sampled_from([1, 1, 1, None, 2])), "commitments": None}
    if draw(st.integers(0, 9)) == 0:  # now and then a field of an unexpected type: the generic path's
        row[draw(st.sampled_from(["actor_id", "seq", "entity_id", "content_hash", "created_at"]))] = \
            draw(st.sampled_from([0.5, memoryview(b"x" * 32), "2026-01-01T00:00:00Z", 7]))
    return row


def _tuple(row: dict) -> tuple:
    """The row as the slice reads it (hashing.LEDGER_ROW_COLUMNS)."""
    return tuple(row.get(c) for c in hashing.LEDGER_ROW_COLUMNS)


def _generic(writer: bundles.RecordWriter, row: dict) -> dict:
    """The record main made of the row as it read it then (SELECT a.*, a dict): the generic path."""
    return writer.audit_entry({**row, "recorded_at": row["created_at"], "is_synthetic": True,
                               "synthetic_scenario_id": None})


def _outcome(call, *args):
    try:
        return call(*args)
    except (ValueError, TypeError, KeyError, AttributeError, struct.error) as error:  # struct: a ZIP date past 2107
        return type(error)


@settings(max_examples=800, deadline=None)
@given(st.lists(_rows(), min_size=1, max_size=6))
def test_plain_audit_rows_are_the_generic_records(rows):
    """Same records, same key order, same redaction counts, and plain JSON whenever made fast."""
    fast, generic = bundles.RecordWriter(), bundles.RecordWriter()
    tuples = [_tuple(r) for r in rows]
    for row, made in zip(rows, fast.plain_audit_rows(tuples), strict=True):
        if made is not None:
            assert hashing.json_plain(made)
        else:
            made = _outcome(fast.generic_audit_row, _tuple(row))
        expected = _outcome(_generic, generic, row)
        assert made == expected
        if isinstance(made, dict):
            assert list(made) == list(expected)
    assert fast.redactor.counts == generic.redactor.counts and fast.redactor.total == generic.redactor.total


def test_the_fast_record_is_taken_for_ledger_rows_and_refused_otherwise():
    row = {**pins.ledger_rows(1)[0], "after_state": {"n": 1, "password": "x", "ok": [1, "y"]}}
    assert bundles.RecordWriter().plain_audit_rows([_tuple(row)]) != [None]
    for change in ({"after_state": {"x": 0.5}}, {"hash_version": 2}, {"content_hash": "ab" * 32},
                   {"created_at": "2026-01-01T00:00:00.000000Z"}, {"seq": 1.0}, {"actor_id": 7.5}):
        made = bundles.RecordWriter().plain_audit_rows([_tuple(row), _tuple({**row, **change})])
        assert made[0] is not None and made[1] is None, change


_documents = st.recursive(
    _leaf | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=st.just(timezone.utc)),
    lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(_keys, inner, max_size=5), max_leaves=16)


@settings(max_examples=800, deadline=None)
@given(st.lists(_documents, max_size=8))
def test_joined_documents_are_their_canonical_json_joined(documents):
    """canonical_json_joined with honest marks (json_plain) is canonical_json of each, comma-joined —
    floats, big integers, datetimes, tuples and non-BMP keys among them — and raises where it does."""
    plain = [hashing.json_plain(d) for d in documents]
    joined = _outcome(hashing.canonical_json_joined, documents, plain)
    assert joined == _outcome(lambda ds: b",".join(map(hashing.canonical_json, ds)), documents)
    if isinstance(joined, bytes):
        assert joined == b",".join(rfc8785.dumps(hashing._plain(d)) for d in documents)


def _tap(record: dict, seqs: array.array) -> dict:
    seqs.append(record["seq"])
    return record


def _slice(rows, fmt: ExportFormat, bundle_type: BundleType, fast: bool, batch: int = 7) -> tuple[str, dict, list]:
    """The slice's artifact from main's generic path (dict rows, one record at a time), or from
    the rows as tuples in batches (bundles.AuditRecords)."""
    plan = builder.Plan(tenant_id="t", scope=ExportScope.AUDIT_SLICE, bundle_type=bundle_type, format=fmt)
    writer = bundles.RecordWriter()
    seqs = array.array("q")
    if fast:
        tuples = [_tuple(r) for r in rows]
        records = bundles.AuditRecords(writer, (tuples[i:i + batch] for i in range(0, len(tuples) + 1, batch)), seqs)
    else:  # and seqs collected as main's builder did (its _tapped generator)
        records = (_tap(writer.audit_entry(r), seqs) for r in rows)
    sink = artifacts.Sink(lambda n, data: None)
    rendered = artifacts.render_slice(builder._head(plan), "audit_entry", records, fmt, writer, pins.key(), sink)
    return rendered.checksum.hex(), {"redaction": rendered.redaction, "contents": rendered.contents,
                                     "records": rendered.records}, list(seqs)


@pytest.mark.parametrize("case", sorted(k for k in pins.PINNED if k[0] == "slice"), ids="-".join)
def test_the_pinned_slices_come_out_of_the_fast_path(case):
    _, fmt, bundle_type = case
    digest, _, seqs = _slice(pins.ledger_rows(), ExportFormat[fmt], BundleType[bundle_type], fast=True, batch=64)
    assert digest == pins.PINNED[case]
    assert seqs == list(range(1, 401))


@settings(max_examples=40, deadline=None)
@given(st.lists(_rows(), max_size=30), st.sampled_from([(f, b) for f in ("JSON", "CSV", "ZIP")
                                                         for b in ("EVIDENCE", "SOC2", "EXECUTIVE")]),
       st.integers(1, 12))
def test_generated_slices_render_alike_both_ways(rows, case, batch):
    fmt, bundle_type = ExportFormat[case[0]], BundleType[case[1]]
    generic = _outcome(_slice, rows, fmt, bundle_type, False)
    fast = _outcome(_slice, rows, fmt, bundle_type, True, batch)
    if isinstance(generic, tuple):
        assert fast[:2] == generic[:2]
    else:
        assert fast == generic


def test_batches_are_cut_and_joined():
    """Many batches (2,500 records, batches of 1,000), a float-state entry in each: same bytes."""
    rng = random.Random(5)
    rows = []
    for n, row in enumerate(pins.ledger_rows(2500, seed=9)):
        rows.append({**row, "after_state": {"x": 0.5} if n % 997 == 0 else {"n": rng.randrange(10 ** 6)}})
    for bundle_type in (BundleType.EVIDENCE, BundleType.SOC2):
        fast = _slice(rows, ExportFormat.JSON, bundle_type, True, batch=1000)
        assert fast[:2] == _slice(rows, ExportFormat.JSON, bundle_type, False)[:2]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["RunCompleted", "LimitBreached", "AccessDenied", "EmergencyStop",
                                 "PolicyRuleUpdated", "IncidentAcknowledged", "LimitOverrideSet", "x"]), max_size=40))
def test_audit_controls_follow_event_types(events):
    summary = bundles.SliceSummary("audit_entry")
    counted: dict[str, int] = {}
    for n, event in enumerate(events):
        record = {"created_at": "2026-01-01T00:00:00.000000Z", "seq": n, "event_type": event, "redacted": False}
        summary.add(record)
        control = bundles.slice_control("audit_entry", record)
        counted[control] = counted.get(control, 0) + 1
    assert dict(summary.by_control) == counted


class _Before(redaction.Redactor):
    """Redactor.redact and redact_dict as they were before their exact-type and clean-key paths."""

    def redact(self, value):
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return self.redact_dict(value)
        if isinstance(value, (list, tuple)):
            if len(value) == 2 and isinstance(value[0], str):
                name = self.redact_text(value[0])
                secret = value[1] is not None and (redaction._is_secret_name(value[0])
                                                   or redaction._is_secret_name(name))
                items = [name, self._withhold(value[1]) if secret else self.redact(value[1])]
            else:
                items = [self.redact(item) for item in value]
            return items if isinstance(value, list) else tuple(items)
        return value

    def redact_dict(self, value):
        redacted = {}
        for key, item in value.items():
            new_key = key
            if isinstance(key, str):
                new_key = self.redact_text(key)
                number, base = 2, new_key
                while new_key != key and (new_key in redacted or new_key in value):
                    new_key, number = f"{base}#{number}", number + 1
            if item is not None and isinstance(key, str) and (redaction._is_secret_key(key)
                                                              or redaction._is_secret_key(new_key)):
                redacted[new_key] = self._withhold(item)
            else:
                redacted[new_key] = self.redact(item)
        return redacted


class _Text(str):
    pass


_redactable = st.recursive(
    _leaf | st.floats(allow_nan=False) | st.builds(_Text, _text) | st.just(b"bytes"),
    lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(_keys | st.builds(_Text, _keys) | st.integers(0, 3) | st.just("x" * 129)
                      | st.just("[REDACTED:email]#2"), inner, max_size=5)
    | st.tuples(st.sampled_from(["Authorization", "X-Api-Key", "name", "alice@example.com"]), inner).map(list),
    max_leaves=16)


@settings(max_examples=800, deadline=None)
@given(st.lists(_redactable, max_size=4))
def test_redaction_is_what_it_was(values):
    """The exact-type dispatch and the cached clean-key verdict give what the isinstance chain and
    the per-key scans gave: the same values, the same counts (secret keys, redacted keys that
    collide, keys past 128 characters, str subclasses, pairs)."""
    now, before = redaction.Redactor(), _Before()
    for value in values:
        assert now.redact(value) == before.redact(value)
    assert now.counts == before.counts and now.total == before.total
