"""hashing.canonical_json is RFC 8785: the RFC's test vectors, and byte equality with the reference.

canonical_json takes orjson where its bytes are provably RFC 8785's and the ``rfc8785``
package (the reference) elsewhere (aos_recording/hashing.py says where and why). These
tests hold the fast path to the reference byte for byte, on the vectors of the RFC's
author (tests/unit/vectors/rfc8785: cyberphone/json-canonicalization's testdata, Apache
2.0, LICENSE beside them), on every character below U+0800 and on generated documents;
and they check that each kind of document the fast path must refuse does take the reference.
"""
from __future__ import annotations

import enum
import json
import struct
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings, strategies as st

from aos_recording import hashing

VECTORS = Path(__file__).parent / "vectors" / "rfc8785"
NAMES = sorted(p.stem for p in (VECTORS / "input").glob("*.json"))


def reference(value):
    """What canonical_json gave before the fast path: the reference over the plain value."""
    return rfc8785.dumps(hashing._plain(value))


def outcome(call, value):
    try:
        return call(value)
    except (ValueError, TypeError) as error:  # rfc8785's errors are ValueErrors
        return type(error)


def test_the_vectors_are_all_there():
    assert NAMES == ["arrays", "french", "structures", "unicode", "values", "weird"]


@pytest.mark.parametrize("name", NAMES)
def test_rfc8785_vectors(name):
    document = json.loads((VECTORS / "input" / f"{name}.json").read_bytes())
    expected = (VECTORS / "output" / f"{name}.json").read_bytes()
    assert hashing.canonical_json(document) == expected
    assert rfc8785.dumps(document) == expected


# RFC 8785 appendix B: IEEE 754 doubles and their canonical forms (these take the reference path).
NUMBERS = [
    ("0000000000000000", "0"), ("8000000000000000", "0"), ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"), ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"), ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"), ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"), ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"), ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"), ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"), ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"), ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"), ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"), ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize("bits,expected", NUMBERS)
def test_rfc8785_number_vectors(bits, expected):
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert hashing.canonical_json(value) == expected.encode()
    assert hashing.canonical_json({"n": [value]}) == b'{"n":[' + expected.encode() + b"]}"


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinity_are_refused(bits):
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    with pytest.raises(rfc8785.FloatDomainError):
        hashing.canonical_json({"x": value})


def test_every_character_below_u0800_is_escaped_as_the_reference_does():
    for code in range(0x800):
        if 0xD800 <= code <= 0xDFFF:
            continue
        text = chr(code)
        assert hashing.canonical_json({text: text + "x"}) == rfc8785.dumps({text: text + "x"}), hex(code)
    for text in ("\u2028\u2029", "\ufeff", "\uffff", "\U0001f600", "\U0010ffff", "</script>"):
        assert hashing.canonical_json([text]) == rfc8785.dumps([text])


def test_keys_sort_by_utf16_code_units_not_code_points():
    # U+FB33 sorts after U+1F602 by code point, before it by UTF-16 (0xD83D < 0xFB33).
    document = {"\ufb33": 1, "\U0001f602": 2, "a": 3}
    assert hashing.canonical_json(document) == '{"a":3,"\U0001f602":2,"\ufb33":1}'.encode()
    assert hashing.canonical_json({"k": document}) == rfc8785.dumps({"k": document})


def test_integers_at_and_past_the_safe_range():
    top = 2 ** 53 - 1
    assert hashing.canonical_json([top, -top]) == f"[{top},{-top}]".encode()
    for past in (top + 1, -top - 1, 2 ** 64, -(2 ** 70)):
        with pytest.raises(rfc8785.IntegerDomainError):
            hashing.canonical_json({"n": past})


class Colour(str, enum.Enum):  # noqa: UP042 - the mixin (not StrEnum) is the case: str() is not the value
    RED = "red"


class Plain(enum.Enum):
    ONE = 1


@dataclass
class Point:
    x: int


@pytest.mark.parametrize("value", [
    {"x": 0.5}, [1.0], {"x": Colour.RED}, {"x": Plain.ONE}, {"x": uuid.UUID(int=1)}, {"x": Point(1)},
    {"x": date(2026, 1, 1)}, {1: "int key"}, {Colour.RED: "str-subclass key"}, {"x": b"bytes"}, {"x": "\ud800"},
    {"x": {"y": [1, 2, {"z": 1.5}]}}, {"x": 2 ** 60},
], ids=repr)
def test_what_the_fast_path_refuses_gives_the_reference_result(value):
    """Types orjson would write and RFC 8785 refuses (or writes otherwise) go to the reference:
    the same bytes, or the same refusal."""
    assert outcome(hashing.canonical_json, value) == outcome(reference, value)


def test_datetimes_become_rfc3339_utc_strings_on_both_paths():
    moment = datetime(2026, 1, 13, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    expected = b'{"a":"2026-01-13T10:00:00.000005Z","b":[1.5,"2026-01-13T10:00:00.000005Z"]}'
    assert hashing.canonical_json({"a": moment, "b": [1.5, moment]}) == expected  # the reference path (a float)
    fast = b'{"a":"2026-01-13T10:00:00.000005Z","b":["2026-01-13T10:00:00.000005Z"]}'
    assert hashing.canonical_json({"a": moment, "b": [moment]}) == fast


def test_the_fast_path_is_taken_for_plain_documents():
    """A document without floats or other types is written by orjson: proven by the function the
    fast path calls, so that the property test below exercises it and not only the reference."""
    assert hashing._fast({"a": [1, "x", None, True, {"b": datetime(2026, 1, 1, tzinfo=timezone.utc)}], "c": ()})
    assert not hashing._fast({"a": [1, 0.5]})
    assert not hashing._fast({"a": Colour.RED})


# --- generated documents ------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=()), max_size=12) | st.sampled_from(
    ["", "\x00", "\x1f", "\x7f", "\u2028", "\ud7ff", "\ue000", "\ufb33", "\uffff", "\U0001f602", "\U0010ffff",
     "\"\\/", "a\tb\nc\rd\be\ff"])
_keys = _text
_leaves = (st.none() | st.booleans() | st.integers(-(2 ** 53) + 1, 2 ** 53 - 1) | st.integers() | _text
           | st.floats(allow_nan=True, allow_infinity=True) | st.floats(allow_nan=False, allow_infinity=False)
           | st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-5, minutes=30))])))
_documents = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=5) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(_keys, inner, max_size=6),
    max_leaves=30)


@settings(max_examples=3000, deadline=None)
@given(_documents)
def test_generated_documents_equal_the_reference_byte_for_byte(document):
    """Unicode (non-BMP and controls included), floats (NaN and infinities too), integers of any
    size, datetimes, nesting: canonical_json gives the reference's bytes, or refuses where it does."""
    assert outcome(hashing.canonical_json, document) == outcome(reference, document)


@settings(max_examples=1000, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-(2 ** 53) + 1, 2 ** 53 - 1) | _text,
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_keys, inner, max_size=6),
                    max_leaves=30))
def test_generated_fast_path_documents_equal_the_reference(document):
    """The documents the fast path takes (no floats, safe integers), so that most examples run it."""
    assert outcome(hashing.canonical_json, document) == outcome(reference, document)
