"""The gateway's error contract over HTTP: bad query values and extreme Grpc-Timeout values."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.db

PYTHON_TEXT = ("invalid literal", "int()", "Failed to parse", "Traceback", "Couldn't parse", "ValueError")


def field_violations(reply) -> dict[str, str]:
    found = {}
    for detail in reply.json()["details"]:
        if detail["@type"].endswith("google.rpc.BadRequest"):
            found.update({v["field"]: v["description"] for v in detail["field_violations"]})
    return found


@pytest.mark.parametrize("path,params,field,says", [
    ("/api/v1/logs/audit", {"page_size": "abc"}, "page_size", "must be an integer"),
    ("/api/v1/logs/audit", {"page_size": "12345678901234567890"}, "page_size", "must be an integer"),
    ("/api/v1/logs/audit", {"event_type": "NOPE"}, "event_type", "must be one of AUDIT_EVENT_TYPE_"),
    ("/api/v1/logs/audit", {"created_after": "last tuesday"}, "created_after", "must be an RFC 3339 timestamp"),
    ("/api/v1/logs/llm-runs", {"page_size": "1.5"}, "page_size", "must be an integer"),
])
async def test_a_bad_query_value_is_a_field_violation_in_words(client, path, params, field, says):
    reply = await client.get(path, params=params)
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert body["code"] == 3 and body["details"][0]["reason"] == "INVALID_ARGUMENT"
    assert field_violations(reply)[field].startswith(says)
    assert not any(text in reply.text for text in PYTHON_TEXT), reply.text


@pytest.mark.parametrize("value", ["99999999H", "99999999M", "99999999S", "25H"])
async def test_a_grpc_timeout_beyond_the_maximum_is_clamped_not_a_504(client, value):
    reply = await client.get("/api/v1/logs/audit", params={"page_size": 1}, headers={"Grpc-Timeout": value})
    assert reply.status_code == 200, reply.text
