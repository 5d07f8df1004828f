"""What the OTLP tests share: the real exporter with its results kept, and an agent program
instrumented as GenAI code is (tests/gateway/test_otlp.py, test_otlp_backpressure.py)."""
from __future__ import annotations

import json

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode


class Recording(SpanExporter):
    """The real exporter, with each export's result kept (the test's view of what it was told)."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.results: list[SpanExportResult] = []

    def export(self, spans):
        result = self.exporter.export(spans)
        self.results.append(result)
        return result

    def shutdown(self):
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def agent_program(exporter: SpanExporter, conversation: str) -> None:
    """An agent turn as GenAI-instrumented code emits it: invoke_agent around two chat calls
    and a tool call, plus one ordinary HTTP span that is no GenAI span."""
    provider = TracerProvider(resource=Resource.create({"service.name": "refund-agent"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.otlp")
    common = {"gen_ai.provider.name": "openai", "gen_ai.conversation.id": conversation}
    with tracer.start_as_current_span("invoke_agent refunds", kind=SpanKind.INTERNAL, attributes={
            **common, "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "refunds",
            "gen_ai.agent.id": "agent-refunds"}):
        with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes={
                **common, "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 30, "aos.usage.cost_cents": 4,
                "gen_ai.response.finish_reasons": ["tool_calls"],
                "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
                    {"type": "text", "content": "refund order 7?"}]}])}):
            pass
        with tracer.start_as_current_span("execute_tool lookup_order", attributes={
                **common, "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
                "gen_ai.tool.call.id": "call-1", "gen_ai.tool.call.arguments": '{"order": 7}'}):
            pass
        with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes={
                **common, "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 200, "gen_ai.usage.output_tokens": 50,
                "aos.usage.cost_cents": 6}) as last:
            last.set_status(Status(StatusCode.OK))
    with tracer.start_as_current_span("GET /healthz", kind=SpanKind.SERVER):
        pass
    provider.force_flush()
    provider.shutdown()
