"""``ledger prove`` and ``ledger check-consistency``: RFC 6962 proofs fetched from the service and
verified here with aos_recording.tlog; a kept state advances only along a consistent tree, and a
fork (another root at the kept size, a shorter tree) fails with exit status 1."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pytest

from tests.db.sessions import append_entries, new_id

pytestmark = pytest.mark.db

OCT = datetime(2026, 10, 1, tzinfo=timezone.utc)


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
