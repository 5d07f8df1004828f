"""The OTLP receiver's run check without the RunInput round trip (issue #21): ``_checked_run``
answers exactly what ``ingest.run_fields(_run_input(...))`` answers — the same run and step
fields (integers stay integers, floats floats: compared as sorted JSON, not with ==, under which
1 == 1.0), the same content hashes, and the same refusals and messages — for ordinary spans
(taken the fast way) and for spans holding what only the RunInput check may judge."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from services.ingest import ingest, otlp, store

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
T0 = int(datetime(2026, 12, 7, 8, 0, tzinfo=timezone.utc).timestamp()) * 10**9 + 123_456_789
TRACE = "0af7651916cd43dd8448eb211c80319c"


def _value(v: Any) -> common_pb2.AnyValue:
    if isinstance(v, bool):
        return common_pb2.AnyValue(bool_value=v)
    if isinstance(v, int):
        return common_pb2.AnyValue(int_value=v)
    if isinstance(v, float):
        return common_pb2.AnyValue(double_value=v)
    if isinstance(v, bytes):
        return common_pb2.AnyValue(bytes_value=v)
    if isinstance(v, list):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[_value(x) for x in v]))
    if isinstance(v, dict):
        return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(
            values=[common_pb2.KeyValue(key=k, value=_value(x)) for k, x in v.items()]))
    if v is None:
        return common_pb2.AnyValue()
    return common_pb2.AnyValue(string_value=v)


def _span(n: int, attributes: dict[str, Any], *, parent: int | None = 1, start: int | None = None,
          end: int | None = None, error: str | None = None, resource: dict[str, Any] | None = None,
          name: str = "chat gpt-4o") -> otlp._Span:
    begin = T0 + n * 1_000_000 if start is None else start
    span = trace_pb2.Span(
        trace_id=bytes.fromhex(TRACE), span_id=n.to_bytes(8, "big"), name=name,
        parent_span_id=b"" if parent is None else parent.to_bytes(8, "big"),
        kind=trace_pb2.Span.SPAN_KIND_CLIENT, start_time_unix_nano=begin,
        end_time_unix_nano=begin + 42_345_678 if end is None else end,
        attributes=[common_pb2.KeyValue(key=k, value=_value(v)) for k, v in attributes.items()])
    if error is not None:
        span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
        span.status.message = error
    res = resource_pb2.Resource(attributes=[common_pb2.KeyValue(key=k, value=_value(v))
                                            for k, v in (resource or {"service.name": "agent"}).items()])
    return otlp._Span(span, otlp._attributes(span.attributes), otlp._attributes(res.attributes), res)


AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "agent-7", "gen_ai.provider.name": "openai",
         "gen_ai.conversation.id": "conv-1"}


def _chat(**extra: Any) -> dict[str, Any]:
    return {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 20, "aos.usage.cost_cents": 1, **extra}


MESSAGES = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Grüße ☃ 😀"}],
                        "score": 1.0, "p": 0.25, "n": 3, "big": 2**53 - 1, "none": None, "ok": True}])
TOOL = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search", "gen_ai.tool.call.id": "c1",
        "gen_ai.tool.type": "function", "gen_ai.tool.call.arguments": '{"q": "x", "k": 2.0, "w": -0.0}',
        "gen_ai.tool.call.result": "[1, 2.5, \"three\"]"}

# Spans the fast way takes: its answer must be the RunInput check's.
FAST = {
    "bench": [_span(1, AGENT, parent=None, name="invoke_agent bench"), *(_span(i, _chat()) for i in range(2, 6))],
    "messages and odd attributes": [
        _span(1, AGENT, parent=None),
        _span(2, _chat(**{"gen_ai.input.messages": MESSAGES, "gen_ai.output.messages": "[not json",
                          "gen_ai.system_instructions": "{\"a\": {\"b\": [1.5, 2, null]}}",
                          "gen_ai.response.model": "gpt-4o-2024", "gen_ai.response.finish_reasons": ["stop"],
                          "gen_ai.usage.input_tokens": 7.0, "big": 2**60, "inf": float("inf"), "nan": float("nan"),
                          "half": 0.5, "whole": 3.0, "blob": b"\x00\x01", "kv": {"a": [1, {"b": None}]},
                          "empty": None, "flag": False}),
              resource={"service.name": "agent", "host.id": 12, "ratio": 1.25}),
        _span(3, TOOL, end=0)],
    "failed, no message": [_span(1, AGENT, parent=None), _span(2, _chat(), error="")],
    "failed with a message": [_span(1, AGENT, parent=None), _span(2, _chat(**{"error.type": "timeout"}),
                                                                   error="upstream 503")],
    "a data subject": [_span(1, {**AGENT, "enduser.id": "user-9"}, parent=None),
                       _span(2, _chat(**{"gen_ai.input.messages": MESSAGES, "gen_ai.prompt.0.content": "hi"}),
                             resource={"user.id": "user-9"})],
    "only a tool, no provider": [_span(5, TOOL, parent=3)],
    "end before start": [_span(2, _chat(), start=T0, end=T0 - 5)],
}

# Spans holding what only the RunInput check judges (a refusal, or a value the round trip changes).
SLOW = {
    "a NUL in a message": [_span(2, _chat(**{"gen_ai.input.messages": '["a\\u0000b"]'}))],
    "a NUL in a key": [_span(2, _chat(**{"a\x00b": 1}))],
    "NaN in JSON text": [_span(2, _chat(**{"gen_ai.output.messages": "[NaN]"}))],
    "a number past 2^53 in JSON text": [_span(2, _chat(**{"gen_ai.input.messages": "[9007199254740993]"}))],
    "a huge double in JSON text": [_span(2, _chat(**{"gen_ai.input.messages": "[1e300]"}))],
    "a long provider": [_span(2, _chat(**{"gen_ai.provider.name": "p" * 300}))],
    "a blank model": [_span(2, _chat(**{"gen_ai.request.model": "   "}))],
    "a blank subject": [_span(2, _chat(**{"enduser.id": " "}))],
    "no start time": [_span(2, _chat(), start=0, end=0)],
    "in the future": [_span(2, _chat(), start=T0 + 10**13)],
    "negative tokens": [_span(2, _chat(**{"gen_ai.usage.output_tokens": -5}))],
    "a long failure message": [_span(2, _chat(), error="x" * 5000)],
    "a NUL in the agent id": [_span(1, {**AGENT, "gen_ai.agent.id": "a\x00"}, parent=None)],
}


def _strict(value: Any) -> str:
    """JSON that tells 1 from 1.0 and True from 1, keys sorted."""
    return json.dumps(value, sort_keys=True, default=repr, allow_nan=True)


def _reference(spans: list[otlp._Span]) -> ingest.CheckedRun:
    return ingest.run_fields(otlp._run_input(TRACE, spans), otlp.SEALER, NOW, source="otlp")


@pytest.mark.parametrize("case", sorted(FAST))
def test_fast_fields_are_the_runinput_checks(case: str) -> None:
    spans = FAST[case]
    fast = otlp._fast_run(TRACE, spans, NOW)  # raises _Slow if these spans were not taken the fast way
    reference = _reference(spans)
    assert not reference.problems
    assert _strict(fast.run) == _strict(reference.run)
    assert _strict(fast.steps) == _strict(reference.steps)
    assert fast == otlp._checked_run(TRACE, spans, NOW)
    assert store.step_hashes(fast.steps) == store.step_hashes(reference.steps)
    prepared, expected = store._Prepared.of("t", fast.run, fast.steps), store._Prepared.of("t", reference.run,
                                                                                          reference.steps)
    assert (prepared.content_hash, prepared.trace_hash) == (expected.content_hash, expected.trace_hash)


@pytest.mark.parametrize("case", sorted(SLOW))
def test_what_only_the_runinput_check_judges_goes_to_it(case: str) -> None:
    spans = SLOW[case]
    with pytest.raises(otlp._Slow):
        otlp._fast_run(TRACE, spans, NOW)
    checked, reference = otlp._checked_run(TRACE, spans, NOW), _reference(spans)
    assert checked.problems == reference.problems
    assert _strict(checked.steps) == _strict(reference.steps)


def test_refusals_are_named() -> None:
    """The slow way still refuses with the RunInput check's messages (a sample of them)."""
    assert otlp._checked_run(TRACE, SLOW["negative tokens"], NOW).problems[0] == ("output_tokens",
                                                                                  "must not be negative")
    assert otlp._checked_run(TRACE, SLOW["no start time"], NOW).problems[0] == ("started_at", "is required")
    field, problem = otlp._checked_run(TRACE, SLOW["a NUL in a message"], NOW).problems[0]
    assert (field, problem) == ("steps[0].input_data", "holds a string with a NUL character (PostgreSQL jsonb "
                                                       "refuses it)")


def test_a_run_past_the_step_limit_is_refused_as_before() -> None:
    spans = [_span(i, _chat()) for i in range(2, ingest.MAX_ITEMS + 3)]
    checked = otlp._checked_run(TRACE, spans, NOW)
    assert checked.problems == _reference(spans).problems
    assert checked.problems[0][0] == "steps"
