"""Every RPC handler is typed with its generated messages: the request type and the
response type (an async iterator of them for a server stream) its proto method names,
and grpc.aio.ServicerContext. mypy checks the bodies against these; this checks the
signatures say what the contract says, so an untyped or mistyped handler fails here.
"""
from __future__ import annotations

import typing
from collections.abc import AsyncIterator

import grpc
import pytest

from aos_evidence import wire
from services.export import server as export_server
from services.logs import audit_ledger, llm_runs, search, system_logs
from services.overview import server as overview_server

SERVICERS = [(audit_ledger.AuditLedgerService, audit_ledger.DESCRIPTOR),
             (llm_runs.LlmRunsService, llm_runs.DESCRIPTOR),
             (system_logs.SystemLogsService, system_logs.DESCRIPTOR),
             (search.EvidenceSearchService, search.DESCRIPTOR),
             (overview_server.OverviewService, overview_server.DESCRIPTOR),
             (export_server.ExportService, export_server.DESCRIPTOR)]
METHODS = [(cls, method) for cls, service in SERVICERS for method in service.methods]


def _message(hint: object) -> str:
    descriptor = getattr(hint, "DESCRIPTOR", None)
    return descriptor.full_name if descriptor is not None else repr(hint)


@pytest.mark.parametrize(("cls", "method"), METHODS, ids=lambda m: getattr(m, "full_name", getattr(m, "__name__", "")))
def test_each_handler_is_typed_with_its_messages(cls, method):
    hints = typing.get_type_hints(getattr(cls, method.name))
    assert _message(hints.get("request")) == method.input_type.full_name
    assert hints.get("context") is grpc.aio.ServicerContext
    returned = hints.get("return")
    if method.server_streaming:
        assert typing.get_origin(returned) is AsyncIterator
        (returned,) = typing.get_args(returned)
    if typing.get_origin(returned) is wire.Encoded:  # the message in its wire form (issue #22)
        (returned,) = typing.get_args(returned)
    assert _message(returned) == method.output_type.full_name
