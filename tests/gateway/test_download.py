"""Downloads against a scripted stream: lazy (one message in memory at a time), errors before
the first byte are statuses, errors after it cut the body, the call is cancelled when done."""
from __future__ import annotations

import json

import grpc
import pytest

from aos.export.v1 import export_service_pb2 as pb
from gateway.app import download_response
from gateway.backends import SERVICE_BACKENDS, service_descriptor
from gateway.routes import RouteTable

ROUTE = RouteTable.from_services(service_descriptor(n) for n in SERVICE_BACKENDS).match(
    "GET", "/api/v1/logs/exports/e:download")[0]


class ScriptedCall:
    """A unary-stream call answering read() from a script of messages and errors."""

    def __init__(self, script: list) -> None:
        self.script, self.reads, self.cancelled = list(script), 0, False

    async def read(self):
        self.reads += 1
        if not self.script:
            return grpc.aio.EOF
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def failure(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name.lower())


async def start(script: list):
    call = ScriptedCall(script)
    response = await download_response(lambda *a, **kw: call, ROUTE, pb.DownloadExportRequest(export_id="e"),
                                       (), None)
    return call, response


async def test_chunks_are_pulled_one_message_at_a_time():
    first = pb.DownloadExportResponse(data=b"a" * 10, content_type="text/csv", filename="x.csv", size_bytes=30,
                                      checksum="c" * 64)
    call, response = await start([first, pb.DownloadExportResponse(data=b"b" * 10),
                                  pb.DownloadExportResponse(data=b"c" * 10)])
    assert response.status_code == 200 and response.media_type == "text/csv"
    assert (response.headers["x-artifact-size"], response.headers["x-checksum-sha256"]) == ("30", "c" * 64)
    assert call.reads == 1  # only the first message before the headers
    body = response.body_iterator
    assert await anext(body) == b"a" * 10 and call.reads == 1
    assert await anext(body) == b"b" * 10 and call.reads == 2
    assert [chunk async for chunk in body] == [b"c" * 10]
    assert call.cancelled  # harmless once done; stops the backend when the client leaves early


async def test_an_error_before_the_first_byte_is_a_status():
    call, response = await start([failure(grpc.StatusCode.NOT_FOUND)])
    assert response.status_code == 404 and b'"code":5' in response.body


async def test_an_error_mid_stream_cuts_the_body():
    call, response = await start([pb.DownloadExportResponse(data=b"a"), failure(grpc.StatusCode.UNAVAILABLE)])
    body = response.body_iterator
    assert await anext(body) == b"a"
    with pytest.raises(grpc.aio.AioRpcError):
        await anext(body)
    assert call.cancelled


async def test_an_empty_artifact():
    call, response = await start([])
    assert response.status_code == 200 and response.media_type == "application/octet-stream"
    assert [chunk async for chunk in response.body_iterator] == []


async def test_a_call_the_services_grpc_core_refused_is_429_with_retry_after():
    """A service's gRPC core refuses a call beyond AOS_MAX_PENDING_CALLS as CANCELLED with no status
    of the service's (tests/reliability/test_fairness.py measures it on a real server): REST
    answers it as the services' own refusals, 429 with Retry-After and RetryInfo."""
    refused = grpc.aio.AioRpcError(grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                   details="CANCELLED")
    call, response = await start([refused])
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    body = json.loads(response.body)
    kinds = {d["@type"].rsplit("/", 1)[-1]: d for d in body["details"]}
    assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert kinds["google.rpc.ErrorInfo"]["reason"] == "SERVER_OVERLOADED"
    assert kinds["google.rpc.RetryInfo"]["retry_delay"] == "1s"
    assert "AOS_MAX_PENDING_CALLS" in body["message"]
