"""``ledger prove`` and ``ledger check-consistency``: RFC 6962 proofs fetched from the service and
verified here with aos_recording.tlog; a kept state advances only along a consistent tree, and a
fork (another root at the kept size, a shorter tree) fails with exit status 1."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import grpc
import pytest

from aos.evidence.v1.integrity_pb2 import TransparencyLog
from aos.export.v1 import export_service_pb2 as export_pb, export_service_pb2_grpc as export_grpc
from tests.db.sessions import append_entries, export_rows, new_id
from tests.e2e.support import auth

pytestmark = pytest.mark.db

OCT = datetime(2026, 10, 1, tzinfo=timezone.utc)


async def served(address: str, tenant: str, log: TransparencyLog.ValueType) -> export_pb.GetLedgerCheckpointResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        return await export_grpc.ExportServiceStub(channel).GetLedgerCheckpoint(
            export_pb.GetLedgerCheckpointRequest(log=log), metadata=auth(tenant), timeout=10)


@pytest.fixture
def own_tenant(database_url) -> str:
    """A tenant of this test's own with 5 entries: appending to it changes no other test's ledger."""
    tenant = new_id("t")
    append_entries(database_url, tenant, [OCT], 5)
    return tenant


async def test_prove_an_entry_by_id_and_by_seq(cli, own_tenant, database_url):
    entries = append_entries(database_url, own_tenant, [OCT], 2)
    by_id = await cli("ledger", "prove", entries[0].id, tenant=own_tenant)
    assert by_id.code == 0, by_id.out + by_id.err
    assert "VERIFIED" in by_id.out and "NOT VERIFIED" not in by_id.out
    doc = json.loads((await cli("--json", "ledger", "prove", "3", "--size", "4", tenant=own_tenant)).out)
    assert (doc["verified"], doc["seq"], doc["tree_size"]) == (True, 3, 4)
    assert [c["name"] for c in doc["checks"]] == ["leaf", "inclusion"]


async def test_prove_an_unknown_entry_or_a_size_past_the_tree_is_a_usage_error(cli, own_tenant):
    assert (await cli("ledger", "prove", "aud_nope", tenant=own_tenant)).code == 2
    past = await cli("ledger", "prove", "1", "--size", "999", tenant=own_tenant)
    assert past.code == 2 and "tree_size" in past.err


async def test_check_consistency_keeps_the_newest_verified_state(cli, own_tenant, database_url, tmp_path):
    state = tmp_path / "tree.json"
    first = await cli("ledger", "check-consistency", "--state", state, tenant=own_tenant)
    assert first.code == 0, first.out + first.err
    kept = json.loads(state.read_text())
    assert (kept["tenant"], kept["size"]) == (own_tenant, 5)
    append_entries(database_url, own_tenant, [OCT], 4)
    later = await cli("ledger", "check-consistency", "--from", state, tenant=own_tenant)
    assert later.code == 0, later.out + later.err
    assert "VERIFIED" in later.out and json.loads(state.read_text())["size"] == 9
    # an entry proved against the kept root
    proved = await cli("--json", "ledger", "prove", "2", "--state", state, tenant=own_tenant)
    doc = json.loads(proved.out)
    assert proved.code == 0 and doc["tree_size"] == 9 and doc["root"] == doc["kept_root"]
    assert [c["name"] for c in doc["checks"]] == ["leaf", "inclusion", "root"]


async def test_a_fork_fails_and_leaves_the_state_alone(cli, own_tenant, tmp_path):
    state = tmp_path / "tree.json"
    assert (await cli("ledger", "check-consistency", "--state", state, tenant=own_tenant)).code == 0
    kept = json.loads(state.read_text())
    # the auditor's kept root differs from what the service now answers for that size
    forked = dict(kept, root=base64.b64encode(bytes(32)).decode())
    state.write_text(json.dumps(forked))
    result = await cli("ledger", "check-consistency", "--from", state, tenant=own_tenant)
    assert result.code == 1 and "FORK" in result.out and "NOT VERIFIED" in result.out
    assert json.loads(state.read_text()) == forked
    proved = await cli("ledger", "prove", "1", "--state", state, tenant=own_tenant)
    assert proved.code == 1 and "FORK" in proved.out
    # a kept size the tree no longer reaches: truncated
    state.write_text(json.dumps(dict(kept, size=kept["size"] + 100)))
    shorter = await cli("ledger", "check-consistency", "--from", state, tenant=own_tenant)
    assert shorter.code == 1 and "truncated" in shorter.out


async def test_a_state_of_another_tenant_or_not_a_state_is_refused(cli, own_tenant, tmp_path):
    state = tmp_path / "tree.json"
    assert (await cli("ledger", "check-consistency", "--state", state, tenant=own_tenant)).code == 0
    other = await cli("ledger", "check-consistency", "--from", state)  # the demo tenant's token
    assert other.code == 2 and "tenant" in other.err
    state.write_text("{}")
    assert (await cli("ledger", "check-consistency", "--from", state, tenant=own_tenant)).code == 2


async def test_the_export_log_is_proved_and_kept_apart_from_the_ledger(cli, suite, own_tenant, database_url,
                                                                       tmp_path):
    exports = export_rows(database_url, own_tenant, 3)  # the export log: 3 leaves, the ledger 5
    proved = await cli("--json", "ledger", "prove", exports[1][0], "--log", "exports", tenant=own_tenant)
    doc = json.loads(proved.out)
    assert proved.code == 0, proved.out + proved.err
    assert (doc["log"], doc["entry_id"], doc["seq"], doc["tree_size"]) == ("exports", exports[1][0], 2, 3)
    # an export id names no ledger entry
    assert (await cli("ledger", "prove", exports[1][0], tenant=own_tenant)).code == 2
    kept_exports, kept_ledger = tmp_path / "exports.json", tmp_path / "ledger.json"
    assert (await cli("ledger", "check-consistency", "--log", "exports", "--state", kept_exports,
                      tenant=own_tenant)).code == 0
    assert (await cli("ledger", "check-consistency", "--state", kept_ledger, tenant=own_tenant)).code == 0
    assert [(s["log"], s["size"]) for s in map(json.loads, (kept_exports.read_text(), kept_ledger.read_text()))] \
        == [("exports", 3), ("ledger", 5)]
    export_rows(database_url, own_tenant, 1)
    later = await cli("ledger", "check-consistency", "--log", "exports", "--from", kept_exports, tenant=own_tenant)
    assert later.code == 0, later.out + later.err
    assert json.loads(kept_exports.read_text())["size"] == 4 and json.loads(kept_ledger.read_text())["size"] == 5
    root = json.loads(kept_exports.read_text())["root"]
    against = json.loads((await cli("--json", "ledger", "prove", "4", "--log", "exports", "--state", kept_exports,
                                    tenant=own_tenant)).out)
    assert against["verified"] and against["root"] == against["kept_root"] == root
    # one log's state is never checked against, nor advanced by, the other log's tree
    mixed = await cli("ledger", "check-consistency", "--from", kept_exports, tenant=own_tenant)
    assert mixed.code == 2 and "--log exports" in mixed.err and json.loads(kept_exports.read_text())["size"] == 4
    assert (await cli("ledger", "prove", "1", "--log", "exports", "--state", kept_ledger, tenant=own_tenant)).code == 2
    # a state kept before there were two logs (no "log") is the ledger's
    legacy = {k: v for k, v in json.loads(kept_ledger.read_text()).items() if k != "log"}
    kept_ledger.write_text(json.dumps(legacy))
    assert (await cli("ledger", "check-consistency", "--from", kept_ledger, tenant=own_tenant)).code == 0


async def test_the_export_log_is_proved_against_its_own_signed_checkpoint(cli, suite, own_tenant, database_url):
    export_rows(database_url, own_tenant, 2)
    exports_key = (await served(suite["export"], own_tenant, TransparencyLog.TRANSPARENCY_LOG_EXPORTS)
                   ).log_checkpoint.log_verifier_key
    ledger_key = (await served(suite["export"], own_tenant, TransparencyLog.TRANSPARENCY_LOG_LEDGER)
                  ).log_checkpoint.log_verifier_key
    signed = await cli("--json", "ledger", "prove", "2", "--log", "exports", "--log-key", exports_key,
                       tenant=own_tenant)
    doc = json.loads(signed.out)
    assert signed.code == 0, signed.out + signed.err
    assert [c["name"] for c in doc["checks"]] == ["checkpoint", "leaf", "inclusion", "signed root"]
    assert doc["tree_size"] == 2
    # the exports log's checkpoint does not verify under the ledger's origin, nor the other way round
    assert (await cli("ledger", "prove", "2", "--log", "exports", "--log-key", ledger_key, tenant=own_tenant)).code == 1
    assert (await cli("ledger", "prove", "2", "--log-key", exports_key, tenant=own_tenant)).code == 1
