"""The hash formats of SPEC section 5, pinned by independent computation."""
import hashlib
import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings, strategies as st

from aos_recording import hashing

T = datetime(2026, 1, 13, 12, 0, 0, 123456, tzinfo=timezone.utc)


def test_rfc3339_is_utc_with_microseconds_and_z():
    assert hashing.rfc3339(T) == "2026-01-13T12:00:00.123456Z"
    assert hashing.rfc3339(T.replace(microsecond=0)) == "2026-01-13T12:00:00.000000Z"
    plus_two = T.astimezone(timezone(timedelta(hours=2)))
    assert hashing.rfc3339(plus_two) == "2026-01-13T12:00:00.123456Z"


def _rfc3339_before(value):
    """rfc3339 as it was before orjson wrote it (isoformat), the reference for the test below."""
    if value.tzinfo is None:
        return value.isoformat(timespec="microseconds") + "Z"
    if value.utcoffset():
        value = value.astimezone(timezone.utc)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


@settings(max_examples=3000, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),  # noqa: DTZ001 - hypothesis' bounds are naive
                    timezones=st.none() | st.sampled_from([timezone.utc, ZoneInfo("UTC"), ZoneInfo("Etc/UTC"),
                                                           ZoneInfo("Europe/London"), ZoneInfo("America/St_Johns"),
                                                           timezone(timedelta(0), "Z0"),
                                                           timezone(timedelta(hours=-5, minutes=30))])),
       st.booleans())
def test_rfc3339_writes_what_isoformat_wrote(moment, whole_second):
    """Naive, UTC under each of its names, zones whose offset is zero only in winter, fixed offsets,
    microseconds zero or not, years 1 to 9999, folds: the same string as the isoformat code."""
    if whole_second:
        moment = moment.replace(microsecond=0)
    assert hashing.rfc3339(moment) == _rfc3339_before(moment)


def test_canonical_json_is_rfc8785():
    # Keys sorted by UTF-16 code units, no whitespace, ES6 number forms.
    assert hashing.canonical_json({"b": 1, "a": [1.0, 1e21, "é"], "c": None}) == \
        '{"a":[1,1e+21,"é"],"b":1,"c":null}'.encode()


def test_ledger_content_hash_covers_exactly_the_twelve_fields():
    entry = {"id": "aud-1", "tenant_id": "t", "event_type": "LimitCreated", "entity_type": "LIMIT",
             "entity_id": "lim-1", "actor_type": "HUMAN", "actor_id": "u", "action_reason": None,
             "correlation_id": None, "created_at": T, "before_state": None, "after_state": {"max_value": 5}}
    expected_doc = ('{"action_reason":null,"actor_id":"u","actor_type":"HUMAN","after_state":{"max_value":5},'
                    '"before_state":null,"correlation_id":null,"created_at":"2026-01-13T12:00:00.123456Z",'
                    '"entity_id":"lim-1","entity_type":"LIMIT","event_type":"LimitCreated","id":"aud-1",'
                    '"tenant_id":"t"}')
    assert hashing.ledger_content_hash(entry) == hashlib.sha256(expected_doc.encode()).digest()
    # Fields outside the twelve (seq, chain columns, synthetic marks) do not change it.
    assert hashing.ledger_content_hash({**entry, "seq": 9, "is_synthetic": True}) == \
        hashing.ledger_content_hash(entry)
    assert hashing.ledger_content_hash({**entry, "actor_id": "v"}) != hashing.ledger_content_hash(entry)


def test_chain_hash_is_over_raw_bytes():
    prev, content = bytes(32), hashlib.sha256(b"x").digest()
    assert hashing.chain_hash(prev, content) == hashlib.sha256(prev + content).digest()


def test_step_and_trace_hashes():
    step = {"step_index": 0, "step_type": "input", "input_data": {"q": "hi"}, "output_data": None, "timestamp": T,
            "tokens": 99}
    doc = ('{"input_data":{"q":"hi"},"output_data":null,"step_index":0,"step_type":"input",'
           '"timestamp":"2026-01-13T12:00:00.123456Z"}')
    h0 = hashing.step_content_hash(step)
    assert h0 == hashlib.sha256(doc.encode()).digest()
    h1 = hashing.step_content_hash({**step, "step_index": 1})
    assert hashing.trace_content_hash([h0, h1]) == hashlib.sha256((h0.hex() + h1.hex()).encode("ascii")).digest()
    assert hashing.trace_content_hash([h1, h0]) != hashing.trace_content_hash([h0, h1])


def test_jsonb_round_trip_keeps_the_hash():
    """What Postgres jsonb gives back (key order, number forms) hashes the same."""
    state = {"z": 1, "a": {"y": [1, 2.5, "x"], "b": True}}
    assert hashing.canonical_json(json.loads(json.dumps(state, sort_keys=True))) == hashing.canonical_json(state)


def test_fast_path_equals_the_rfc8785_reference():
    """canonical_json (its orjson path, see test_canonical.py) must produce the reference's bytes on every document."""
    import rfc8785
    from hypothesis import given, settings, strategies as st

    keys = st.text(max_size=8)
    leaves = st.none() | st.booleans() | st.integers(-(2 ** 53) + 1, 2 ** 53 - 1) | st.text(max_size=20)
    docs = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                        max_leaves=20)

    @settings(max_examples=500, deadline=None)
    @given(docs)
    def check(doc):
        try:
            expected = rfc8785.dumps(doc)
        except Exception:  # noqa: BLE001 - documents JCS itself refuses are out of scope
            return
        assert hashing.canonical_json(doc) == expected

    check()


def test_floats_take_the_reference_path():
    assert hashing.canonical_json({"x": 0.1 + 0.2, "y": 1.0}) == b'{"x":0.30000000000000004,"y":1}'
