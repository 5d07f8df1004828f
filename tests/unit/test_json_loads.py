"""aos_runtime.db.json_loads, the export's jsonb reader (issue #22): the value json.loads gives,
of the same types, for any JSON text — floats, integers past 64 bits, escapes and characters
past U+FFFF, nesting — and json.loads' error where it has one."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from aos_runtime.db import json_loads


def typed(value):
    """``value`` with every node's exact type beside it (1 == 1.0 == True would hide a change)."""
    if type(value) is dict:
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if type(value) is list:
        return ("list", [typed(v) for v in value])
    if type(value) is float and value != value:
        return ("float", "nan")
    return (type(value).__name__, value)


leaves = (st.none() | st.booleans() | st.text() | st.floats(allow_nan=False)
          | st.integers(min_value=-(2 ** 64) - 5, max_value=2 ** 64 + 5) | st.integers()
          | st.sampled_from([2 ** 53 + 1, -(2 ** 63), 2 ** 63, 2 ** 64 - 1, 2 ** 64, 10 ** 30, 0, -0.0, 1e308]))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
                      max_leaves=30)


@settings(max_examples=3000, deadline=None)
@given(values, st.booleans(), st.booleans())
def test_the_same_value_as_json_loads(value, ascii_only, as_bytes):
    text = json.dumps(value, ensure_ascii=ascii_only)
    data = text.encode() if as_bytes else text
    assert typed(json_loads(data)) == typed(json.loads(data))


@pytest.mark.parametrize("text", ["1e400", "-1e400", "123456789012345678901234567890", "[1.0, 2]", '{"a": 0.1}',
                                  "18446744073709551616", "-9223372036854775809", '"\\ud83d\\ude00"',
                                  '{"k": "\\u0001\\n"}', "[" * 400 + "]" * 400])
def test_numbers_and_text_orjson_reads_otherwise(text):
    assert typed(json_loads(text.encode())) == typed(json.loads(text))


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, "{", "NaN]"])
def test_json_loads_errors_stay_its_errors(text):
    with pytest.raises(Exception) as expected:
        json.loads(text)
    with pytest.raises(type(expected.value)):
        json_loads(text.encode())
