"""The export chain's tree over REST (through the gateway): the proof routes take ``log``."""
from __future__ import annotations

import base64

import httpx
import pytest

from aos_recording import tlog
from tests.db.sessions import export_rows, make_tenant
from tests.gateway.support import bearer

pytestmark = pytest.mark.db


async def test_the_export_logs_proofs_over_rest(app, database_url):
    tenant = make_tenant(database_url)
    exports = export_rows(database_url, tenant, 3)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                                 headers=bearer(tenant)) as http:
        checkpoint = await http.get("/api/v1/logs/audit/checkpoint", params={"log": "TRANSPARENCY_LOG_EXPORTS"})
        assert checkpoint.status_code == 200, checkpoint.text
        root = base64.b64decode(checkpoint.json()["log_checkpoint"]["root_hash"])
        proof = await http.get("/api/v1/logs/audit/proofs/inclusion",
                               params={"entry_id": exports[1][0], "log": "TRANSPARENCY_LOG_EXPORTS"})
        assert proof.status_code == 200, proof.text
        body = proof.json()
        assert (body["seq"], body["tree_size"]) == ("2", "3")
        tlog.check_record([base64.b64decode(h) for h in body["audit_path"]], 3, root, 1, tlog.leaf_hash(exports[1][1]))
        leaves = await http.get("/api/v1/logs/audit/leaves", params={"log": "TRANSPARENCY_LOG_EXPORTS"})
        assert [leaf["entry_id"] for leaf in leaves.json()["leaves"]] == [e[0] for e in exports]
        wrong = await http.get("/api/v1/logs/audit/proofs/consistency",
                               params={"first_tree_size": "1", "log": "TRANSPARENCY_LOG_NOPE"})
        assert wrong.status_code == 400, wrong.text
