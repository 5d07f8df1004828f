"""The C2SP checkpoint and a witness's cosignature over REST (through the gateway):
GET /api/v1/logs/audit/checkpoint?log=… and POST /api/v1/logs/audit/checkpoint:cosign."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import httpx
import pytest

from aos_recording import note, witness
from tests.db.sessions import append_entries, new_id
from tests.e2e.support import WITNESS_KEYS, WITNESSES
from tests.gateway.support import bearer

pytestmark = pytest.mark.db


async def test_a_witness_cosigns_over_rest(app, database_url):
    tenant = new_id("t")
    append_entries(database_url, tenant, [datetime(2026, 10, 1, tzinfo=timezone.utc)], 3)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                                 headers=bearer(tenant)) as http:
        reply = await http.get("/api/v1/logs/audit/checkpoint", params={"log": "TRANSPARENCY_LOG_LEDGER"})
        assert reply.status_code == 200, reply.text
        served = reply.json()["log_checkpoint"]
        assert served["tree_size"] == "3" and served["log"] == "TRANSPARENCY_LOG_LEDGER"
        name, key = WITNESSES[0]
        done = witness.cosign_checkpoint(None, served["signed_note"].encode(), [],
                                         log_key=served["log_verifier_key"], origin=served["origin"], name=name,
                                         private_key=key, timestamp=int(time.time()), first_use=True)
        cosigned = await http.post("/api/v1/logs/audit/checkpoint:cosign",
                                   json={"tree_size": "3", "cosignature": done.line.decode()})
        assert cosigned.status_code == 200, cosigned.text
        assert cosigned.json()["added"] is True and cosigned.json()["checkpoint"]["cosignature_count"] == 1
        note.require_cosignatures(cosigned.json()["checkpoint"]["signed_note"].encode(), WITNESS_KEYS, 1,
                                  log_key=served["log_verifier_key"])
        unknown = await http.post("/api/v1/logs/audit/checkpoint:cosign", json={
            "tree_size": "3", "cosignature": note.cosign(note.split_note(served["signed_note"].encode())[0],
                                                         WITNESSES[2][0], WITNESSES[2][1], 1).decode()})
        assert unknown.status_code == 403 and unknown.json()["details"][0]["reason"] == "UNKNOWN_WITNESS_KEY", \
            unknown.text
        missing = await http.post("/api/v1/logs/audit/checkpoint:cosign", json={"tree_size": "3"})
        assert missing.status_code == 400
