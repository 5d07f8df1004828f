"""``audit list | follow`` and ``runs trace`` against the suite, plus how service errors surface."""
from __future__ import annotations

import json

import pytest

from aos_cli import pages
from aos_cli.commands import audit
from aos_recording.writers import AuditLedgerWriter, Producer
from tests.e2e.support import DEMO, SECRET, token
from tests.logins import login_url

pytestmark = pytest.mark.db

RUN = f"{DEMO}.run-support-103"
# The ledger entries the demo scenarios write for one tenant.
DEMO_EVENTS = {"LimitCreated", "LimitBreached", "IncidentAcknowledged", "PolicyProposalApproved", "PolicyRuleModified",
               "ActorLoggedIn", "AccessDenied", "AccessGranted", "LimitOverrideGranted", "EmergencyOverrideActivated",
               "EmergencyOverrideDeactivated", "LimitOverrideRevoked", "ApiKeyCreated", "ApiKeyRevoked",
               "ActorLoggedOut"}


def proto_enum(label: str) -> str:
    """PolicyRuleCreated → AUDIT_EVENT_TYPE_POLICY_RULE_CREATED, as proto3 JSON spells it."""
    return "AUDIT_EVENT_TYPE_" + "".join(f"_{c}" if c.isupper() else c.upper() for c in label).lstrip("_")


async def test_audit_list_json_is_the_demo_ledger(cli):
    result = await cli("--json", "audit", "list")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert {e["event_type"] for e in doc["entries"]} >= {proto_enum(e) for e in DEMO_EVENTS}
    assert {e["metadata"]["tenant_id"] for e in doc["entries"]} == {DEMO}
    assert int(doc["total_size"]) == len(doc["entries"]) and not doc.get("has_more")
    seqs = [int(e["seq"]) for e in doc["entries"]]
    assert sorted(seqs) == list(range(1, len(seqs) + 1))


async def test_audit_list_table_with_filters(cli):
    result = await cli("audit", "list", "--event-type", "limitbreached", "--actor-id", "policy-engine")
    assert result.code == 0, result.err
    assert "1 of 1 audit entries" in result.out
    row = next(line for line in result.out.splitlines() if "LimitBreached" in line)
    assert f"LIMIT:{DEMO}.lim-support-budget" in row and "SYSTEM:policy-engine" in row


async def test_audit_list_follows_page_tokens_up_to_the_limit(cli, monkeypatch):
    monkeypatch.setattr(pages, "MAX_PAGE", 4)  # pages of 4: --limit 10 takes three calls
    result = await cli("--json", "audit", "list", "--limit", "10")
    doc = json.loads(result.out)
    assert len(doc["entries"]) == 10 and doc["has_more"] and doc["next_page_token"]
    whole = json.loads((await cli("--json", "audit", "list", "--limit", "0")).out)
    assert doc["entries"] == whole["entries"][:10]


async def test_audit_follow_prints_new_entries_until_ctrl_c(cli, monkeypatch, database_url, writer_tenant):
    polls = []

    def sleep(seconds):  # first pause: a new entry lands; second: the operator presses Ctrl-C
        polls.append(seconds)
        if len(polls) > 1:
            raise KeyboardInterrupt
        producer = Producer(login_url(database_url, "producer"), pool_size=1)
        with producer.transaction(writer_tenant) as conn:
            AuditLedgerWriter(conn).append(tenant_id=writer_tenant, event_type="ApiKeyCreated", entity_type="API_KEY",
                                           entity_id="key-follow", actor_type="HUMAN", actor_id="user-follow")
        producer.close()

    monkeypatch.setattr(audit.time, "sleep", sleep)
    result = await cli("audit", "follow", "--interval", "0.5", "--limit", "3", tenant=writer_tenant)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    seqs = [int(line.split()[0]) for line in lines]
    assert len(lines) == 4 and seqs == sorted(seqs)  # three recent ones, then the new one, oldest first
    assert "API_KEY:key-follow" in lines[-1] and "HUMAN:user-follow" in lines[-1]
    assert polls == [0.5, 0.5] and "Ctrl-C stops" in result.err


async def test_runs_trace_marks_the_inflection_point(cli):
    result = await cli("runs", "trace", RUN)
    assert result.code == 0, result.err
    marked = [line for line in result.out.splitlines() if "▶ violation" in line]
    assert len(marked) == 1 and "policy_check" in marked[0] and "│ 3 " in marked[0]
    doc = json.loads((await cli("runs", "trace", RUN, "--json")).out)
    assert [s.get("is_inflection_point", False) for s in doc["steps"]] == [False, False, False, True]
    assert doc["trace"]["content_hash"] in result.out
    assert "step 3" in result.out and "pol-budget-guard" in result.out


async def test_a_malformed_run_id_exits_2_with_the_field_violation(cli):
    result = await cli("runs", "trace", "not a run id!")
    assert result.code == 2
    assert "INVALID_ARGUMENT" in result.err and "field run_id:" in result.err and "Traceback" not in result.err


async def test_an_unknown_run_exits_2_not_found(cli):
    result = await cli("runs", "trace", f"{DEMO}.run-nope")
    assert result.code == 2 and "NOT_FOUND" in result.err


async def test_a_bad_token_exits_2_with_a_hint(cli):
    result = await cli("--token", "not-a-jwt", "audit", "list", tenant=None)
    assert result.code == 2 and "UNAUTHENTICATED" in result.err and "AOS_TOKEN" in result.err


async def test_without_a_token_one_is_minted_from_the_dev_secret(cli, monkeypatch, tmp_path):
    data_dir = tmp_path / ".aos"
    data_dir.mkdir()
    (data_dir / "jwt-secret").write_text(SECRET)  # the secret the suite verifies with
    (data_dir / "jwt-secret").chmod(0o600)  # a secret others can read is refused
    monkeypatch.setenv("AOS_DATA_DIR", str(data_dir))
    result = await cli("audit", "list", "--limit", "1", tenant=None)
    assert result.code == 0, result.err
    assert "development token for tenant-demo" in result.err and "1 of" in result.out


async def test_a_service_address_may_name_several_instances(run, suite, demo):
    # A gRPC target listing instances (here the same server twice): the CLI's channel
    # balances over them (aos_runtime.channels), the answer is the same.
    logs = suite["logs"]
    result = await run(f"--logs=ipv4:{logs},{logs}", "--token", token(DEMO), "--json", "audit", "list")
    assert result.code == 0, result.err
    assert {e["metadata"]["tenant_id"] for e in json.loads(result.out)["entries"]} == {DEMO}


async def test_audit_list_by_entity_id_and_by_success(cli):
    budget = f"{DEMO}.lim-support-budget"
    by_entity = json.loads((await cli("--json", "audit", "list", "--entity-id", budget, "--limit", "0")).out)
    assert by_entity["entries"] and {e["entity_id"] for e in by_entity["entries"]} == {budget}
    whole = json.loads((await cli("--json", "audit", "list", "--limit", "0")).out)["entries"]
    assert len(by_entity["entries"]) == sum(e["entity_id"] == budget for e in whole) < len(whole)
    failed = json.loads((await cli("--json", "audit", "list", "--success", "false", "--limit", "0")).out)["entries"]
    succeeded = json.loads((await cli("--json", "audit", "list", "--success", "true", "--limit", "0")).out)["entries"]
    assert failed and {e["event_type"] for e in failed} == {proto_enum("AccessDenied")}
    assert not any(e.get("success") is not True for e in succeeded)
    assert len(failed) + len(succeeded) == len(whole)
    assert (await cli("audit", "list", "--success", "maybe")).code == 2


async def test_runs_replay_at_the_violation_step(cli):
    result = await cli("runs", "replay", RUN, "--at-step", "3")
    assert result.code == 0, result.err
    doc = json.loads((await cli("runs", "replay", RUN, "--at-step", "3", "--json")).out)
    state = doc["state"]
    assert (state["step_index"], state["steps_so_far"], doc["replay"]["center"]) == (3, 4, "REPLAY_CENTER_STEP")
    # The table shows the step's hash, the prefix hash and the policy decisions with theirs.
    for shown in (state["step"]["content_hash"], state["steps_hash"], state["audit_entries"][0]["chain_hash"],
                  "▶ violation", "pol-budget-guard", "BLOCK"):
        assert shown in result.out, shown
    plain = json.loads((await cli("runs", "replay", RUN, "--json")).out)
    assert "state" not in plain and plain["replay"]["center"] == "REPLAY_CENTER_VIOLATION"


async def test_runs_replay_beyond_the_last_step_exits_2(cli):
    result = await cli("runs", "replay", RUN, "--at-step", "4")
    assert result.code == 2 and "OUT_OF_RANGE" in result.err and "at_step" in result.err
    assert "Traceback" not in result.err


async def test_audit_list_search_and_order(cli):
    newest = json.loads((await cli("--json", "audit", "list", "--limit", "0")).out)["entries"]
    oldest = json.loads((await cli("--json", "audit", "list", "--order", "asc", "--limit", "0")).out)["entries"]
    assert [e["id"] for e in oldest] == [e["id"] for e in newest][::-1]
    found = await cli("audit", "list", "--search", "refunds", "--order", "asc")
    assert found.code == 0, found.err
    assert "1 of 1 audit entries (oldest first)" in found.out
    bad = await cli("audit", "list", "--search=-refunds")
    assert bad.code == 2 and "field search:" in bad.err


async def test_audit_list_sorted_by_a_field(cli):
    result = await cli("--json", "audit", "list", "--sort", "event_type", "--order", "asc", "--limit", "0")
    assert result.code == 0, result.err
    entries = json.loads(result.out)["entries"]
    assert len(entries) == 15
    # Ascending by the event's name: AccessDenied, then AccessGranted, first.
    assert [e["event_type"] for e in entries[:2]] == ["AUDIT_EVENT_TYPE_ACCESS_DENIED", "AUDIT_EVENT_TYPE_ACCESS_GRANTED"]
    table = await cli("audit", "list", "--sort", "entity_type")
    assert table.code == 0, table.err
    assert "15 of 15 audit entries (by entity_type desc, then newest first)" in table.out
    by_actor = await cli("--json", "audit", "list", "--sort", "actor", "--order", "asc", "--limit", "0")
    assert by_actor.code == 0, by_actor.err
    actors = [e.get("actor_id", "") for e in json.loads(by_actor.out)["entries"]]
    assert len(actors) == 15 and actors == sorted(actors) and len(set(actors)) > 1
    table = await cli("audit", "list", "--sort", "actor")
    assert table.code == 0, table.err
    assert "15 of 15 audit entries (by actor desc, then newest first)" in table.out
    bad = await cli("audit", "list", "--sort", "actor_id")
    assert bad.code == 2 and "--sort" in bad.err


async def test_runs_list_sorted_searched(cli):
    by_cost = json.loads((await cli("--json", "runs", "list", "--sort", "total_cost_cents", "--limit", "0")).out)
    costs = [int(r["cost"].get("amount_cents", 0)) for r in by_cost["runs"]]
    assert costs == sorted(costs, reverse=True) and len(costs) == int(by_cost["total_size"]) > 1
    cheapest = json.loads((await cli("--json", "runs", "list", "--sort", "total_cost_cents", "--order", "asc",
                                      "--limit", "0")).out)
    assert [r["run_id"] for r in cheapest["runs"]] == [r["run_id"] for r in by_cost["runs"]][::-1]
    table = await cli("runs", "list", "--sort", "total_tokens", "--limit", "2")
    assert table.code == 0, table.err
    assert f"2 of {len(costs)} runs (by total_tokens desc, then newest first)" in table.out
    bad = await cli("runs", "list", "--search=!!")
    assert bad.code == 2 and "field search:" in bad.err


async def test_runs_governance_searched_and_sorted(cli):
    """`runs governance` (O3): the run's entries, policy steps and breaches; --search narrows the
    entries and policy steps through the lists' matcher, breaches are answered whole."""
    result = await cli("runs", "governance", RUN)
    assert result.code == 0, result.err
    shown = " ".join(result.out.split())
    assert f"Governance of {RUN}: 1 audit entries (oldest first)" in shown
    assert "LimitBreached" in shown and "1 policy steps" in shown and "1 limit breaches" in shown
    doc = json.loads((await cli("--json", "runs", "governance", RUN, "--search", "LimitBreached")).out)
    assert [e["event_type"] for e in doc["audit_entries"]] == ["AUDIT_EVENT_TYPE_LIMIT_BREACHED"]
    none = await cli("runs", "governance", RUN, "--search", "kestrel", "--order", "desc", "--sort", "actor")
    assert none.code == 0, none.err
    words = " ".join(none.out.split())  # an empty table's title wraps at its width
    assert "0 audit entries matching “kestrel” (by actor desc, then newest first)" in words
    assert "0 policy steps matching" in words and "1 limit breaches" in words
    bad = await cli("runs", "governance", RUN, "--search=-kestrel")
    assert bad.code == 2 and "field search:" in bad.err
