"""``aos-evidence witness``: cosigns the ledger's and the export log's checkpoints only along a consistent tree.

Against the real servers: first use, then a grown ledger (consistency proof from the kept
size), a repeat at the same size; both logs witnessed in one run, each from its own kept
state; refusals (no state without --first-use, a wrong log key, an altered state, a
rollback, a fork, a past the served tree does not extend) exit 1 and leave that log's state
as it was. The rollback, the fork and the inconsistent past are made real, for each log: an
export service of this test's own, whose log key the test holds, signs a second history.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from aos.evidence.v1 import integrity_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_recording import note, tlog
from aos_runtime.service_main import build_server
from tests.db.sessions import append_entries, new_id
from tests.e2e.support import WITNESS_KEYS, WITNESSES, auth, service_modules, settings
from tests.logins import login_url

pytestmark = pytest.mark.db

OCT = datetime(2026, 10, 1, tzinfo=timezone.utc)
LEDGER_LOG, EXPORTS_LOG = integrity_pb2.TRANSPARENCY_LOG_LEDGER, integrity_pb2.TRANSPARENCY_LOG_EXPORTS


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def witness_files(directory: Path, i: int = 0) -> tuple[Path, Path, str]:
    """(key file, state dir, name) of test witness i."""
    name, key = WITNESSES[i]
    key_file = directory / f"witness-{i}.pem"
    key_file.write_bytes(pem(key))
    return key_file, directory / f"state-{i}", name


async def served(address: str, tenant: str, log: int = integrity_pb2.TRANSPARENCY_LOG_UNSPECIFIED) -> pb.GetLedgerCheckpointResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        return await pb_grpc.ExportServiceStub(channel).GetLedgerCheckpoint(
            pb.GetLedgerCheckpointRequest(log=log), metadata=auth(tenant), timeout=10)


async def create_export(address: str, tenant: str) -> None:
    """One export of the tenant's audit slice: a leaf of its export log (and an entry of its ledger)."""
    from aos.evidence.v1 import bundle_pb2

    async with grpc.aio.insecure_channel(address) as channel:
        await pb_grpc.ExportServiceStub(channel).CreateExport(pb.CreateExportRequest(
            audit_slice=pb.AuditSlice(), bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE,
            format=bundle_pb2.EXPORT_FORMAT_JSON), metadata=auth(tenant), timeout=60)


def read(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture
def own_tenant(database_url) -> str:
    tenant = new_id("t")
    append_entries(database_url, tenant, [OCT], 5)
    return tenant


async def test_the_witness_cosigns_along_a_consistent_tree(cli, suite, own_tenant, database_url, tmp_path):
    vkey = (await served(suite["export"], own_tenant)).log_checkpoint.log_verifier_key
    key_file, state_dir, name = witness_files(tmp_path)
    argv = ("witness", "--log-key", vkey, "--key", key_file, "--name", name, "--state", state_dir)
    # no state, no --first-use: refused
    refused = await cli("--json", *argv, tenant=own_tenant)
    assert refused.code == 1 and json.loads(refused.out)["reason"] == "NO_STATE"
    assert not any(state_dir.iterdir())
    first = await cli("--json", *argv, "--first-use", tenant=own_tenant)
    assert first.code == 0, first.out + first.err
    doc = json.loads(first.out)
    assert (doc["cosigned"], doc["size"], doc["added"], doc["cosignatures"]) == (True, 5, True, 1)
    assert doc["witness_key"] == WITNESS_KEYS[0]
    state_file = Path(doc["state"])
    kept = read(state_file)
    assert note.require_cosignatures(kept, WITNESS_KEYS[:1], 1, log_key=vkey)
    # the ledger grows: cosigned with the consistency proof from 5
    append_entries(database_url, own_tenant, [OCT], 4)
    grown = await cli(*argv, tenant=own_tenant)
    assert grown.code == 0 and "COSIGNED" in grown.out, grown.out + grown.err
    assert "size 5 → 9" in grown.out
    assert note.open_checkpoint(read(state_file), vkey)[0].size == 9
    # the same size again: accepted, the log keeps the first cosignature
    again = json.loads((await cli("--json", *argv, tenant=own_tenant)).out)
    assert (again["cosigned"], again["added"], again["proof_hashes"]) == (True, False, 0)
    # the served checkpoint now carries the cosignature, and meets a 1-of-2 policy
    note.require_cosignatures((await served(suite["export"], own_tenant)).log_checkpoint.signed_note.encode(),
                              WITNESS_KEYS, 1, log_key=vkey)


async def test_a_witness_refuses_a_wrong_log_key_or_an_altered_state(cli, suite, own_tenant, tmp_path):
    vkey = (await served(suite["export"], own_tenant)).log_checkpoint.log_verifier_key
    key_file, state_dir, name = witness_files(tmp_path)
    other = note.verifier_key(vkey.split("+")[0], Ed25519PrivateKey.generate().public_key())
    wrong = await cli("--json", "witness", "--log-key", other, "--key", key_file, "--name", name,
                      "--state", state_dir, "--first-use", tenant=own_tenant)
    assert wrong.code == 1 and json.loads(wrong.out)["reason"] == "BAD_CHECKPOINT"
    argv = ("witness", "--log-key", vkey, "--key", key_file, "--name", name, "--state", state_dir)
    assert (await cli(*argv, "--first-use", tenant=own_tenant)).code == 0
    state_file = next(state_dir.iterdir())
    altered = state_file.read_bytes().replace(b"\n5\n", b"\n4\n", 1)
    state_file.write_bytes(altered)
    result = await cli("--json", *argv, tenant=own_tenant)
    assert result.code == 1 and json.loads(result.out)["reason"] == "BAD_STATE"
    assert state_file.read_bytes() == altered
    # usage errors: a malformed log key, a missing key file
    assert (await cli(*argv[:2], "nonsense", *argv[3:], tenant=own_tenant)).code == 2
    assert (await cli("witness", "--log-key", vkey, "--key", tmp_path / "none.pem", "--name", name,
                      "--state", state_dir, tenant=own_tenant)).code == 2


@pytest.mark.parametrize("log", [LEDGER_LOG, EXPORTS_LOG], ids=["ledger", "exports"])
async def test_a_witness_refuses_a_rollback_a_fork_and_an_inconsistent_tree(cli, own_tenant, database_url, tmp_path,
                                                                            log):
    """An export service whose log key this test holds: a state signed by that key at a larger
    size (rollback), at the same size with another root (fork: two histories) or at a smaller
    size with a root the served tree does not extend (the consistency proof fails) is refused,
    for the ledger and for the export log alike."""
    log_private = Ed25519PrivateKey.generate()
    key_path = Path(tempfile.mkdtemp(prefix="aos-witness-")) / "log.pem"
    key_path.write_bytes(pem(log_private))
    key_path.chmod(0o600)
    conf = dataclasses.replace(settings(Path(tempfile.mkdtemp(prefix="aos-witness-data-"))),
                               export_signing_key_file=key_path, checkpoint_interval_s=0)
    server = build_server("export", service_modules()["export"].servicers, conf, login_url(database_url, "export"),
                          port=0)
    address = f"127.0.0.1:{await server.start()}"
    try:
        if log == EXPORTS_LOG:
            for _ in range(2):
                await create_export(address, own_tenant)
        head = (await served(address, own_tenant, log)).log_checkpoint
        assert head.tree_size >= 2
        origin, vkey = head.origin, head.log_verifier_key
        assert vkey == note.verifier_key(origin, log_private.public_key())
        key_file, state_dir, name = witness_files(tmp_path)
        argv = ("--export", address, "--json", "witness", "--log-key", vkey, "--key", key_file, "--name", name,
                "--state", state_dir)
        state_dir.mkdir()
        state_file = state_dir / (origin.replace("/", "_") + ".checkpoint")
        for size, root, reason in [(head.tree_size + 10, tlog.leaf_hash(b"later"), "ROLLBACK"),
                                   (head.tree_size, tlog.leaf_hash(b"another history"), "FORK"),
                                   (head.tree_size - 1, tlog.leaf_hash(b"another past"), "INCONSISTENT")]:
            other_history = note.sign_checkpoint(note.Checkpoint(origin, size, root), log_private)
            state_file.write_bytes(other_history)
            result = await cli(*argv, tenant=own_tenant)
            assert result.code == 1, result.out + result.err
            doc = json.loads(result.out)
            assert (doc["reason"], doc["log"]) == (reason, "ledger" if log == LEDGER_LOG else "exports")
            assert state_file.read_bytes() == other_history
        # nothing was submitted: the log's checkpoint carries no cosignature
        assert (await served(address, own_tenant, log)).log_checkpoint.cosignature_count == 0
    finally:
        await server.stop(grace=0)


async def test_the_witness_cosigns_the_export_log_too_each_log_along_its_own_tree(cli, suite, own_tenant,
                                                                                  database_url, tmp_path):
    await create_export(suite["export"], own_tenant)
    ledger = (await served(suite["export"], own_tenant, LEDGER_LOG)).log_checkpoint
    exports = (await served(suite["export"], own_tenant, EXPORTS_LOG)).log_checkpoint
    assert "/exports/" in exports.origin and exports.tree_size == 1
    key_file, state_dir, name = witness_files(tmp_path)
    argv = ("witness", "--log-key", ledger.log_verifier_key, "--log-key", exports.log_verifier_key,
            "--key", key_file, "--name", name, "--state", state_dir)
    first = await cli("--json", *argv, "--first-use", tenant=own_tenant)
    assert first.code == 0, first.out + first.err
    doc = json.loads(first.out)
    assert doc["cosigned"] is True
    assert [(d["log"], d["size"], d["kept_size"]) for d in doc["logs"]] == \
        [("ledger", ledger.tree_size, None), ("exports", 1, None)]
    ledger_state, exports_state = (Path(d["state"]) for d in doc["logs"])
    assert ledger_state != exports_state and sorted(state_dir.iterdir()) == sorted([ledger_state, exports_state])
    # both logs grow: each cosigned with its own consistency proof from its own kept size
    await create_export(suite["export"], own_tenant)
    append_entries(database_url, own_tenant, [OCT], 2)
    grown = await cli("--json", *argv, tenant=own_tenant)
    assert grown.code == 0, grown.out + grown.err
    by_log = {d["log"]: d for d in json.loads(grown.out)["logs"]}
    new_ledger_size = (await served(suite["export"], own_tenant, LEDGER_LOG)).log_checkpoint.tree_size
    assert (by_log["ledger"]["kept_size"], by_log["ledger"]["size"]) == (ledger.tree_size, new_ledger_size)
    assert (by_log["exports"]["kept_size"], by_log["exports"]["size"], by_log["exports"]["proof_hashes"]) == \
        (1, 2, 1)
    assert note.open_checkpoint(read(exports_state), exports.log_verifier_key)[0].size == 2
    # the export log's served checkpoint carries the cosignature, under the export log's key only
    served_exports = (await served(suite["export"], own_tenant, EXPORTS_LOG)).log_checkpoint.signed_note.encode()
    note.require_cosignatures(served_exports, WITNESS_KEYS, 1, log_key=exports.log_verifier_key)
    with pytest.raises(note.NoteError):
        note.open_checkpoint(served_exports, ledger.log_verifier_key)
    # a refusal on one log leaves that log's state alone and does not stop the other
    altered = read(exports_state).replace(b"\n2\n", b"\n1\n", 1)
    exports_state.write_bytes(altered)
    append_entries(database_url, own_tenant, [OCT], 1)
    mixed = await cli("--json", *argv, tenant=own_tenant)
    assert mixed.code == 1, mixed.out + mixed.err
    by_log = {d["log"]: d for d in json.loads(mixed.out)["logs"]}
    assert by_log["ledger"]["cosigned"] is True and by_log["ledger"]["size"] == new_ledger_size + 1
    assert (by_log["exports"]["cosigned"], by_log["exports"]["reason"]) == (False, "BAD_STATE")
    assert read(exports_state) == altered
    # usage: two keys for one log; a key whose origin names no log
    assert (await cli(*argv[:3], "--log-key", ledger.log_verifier_key, *argv[5:], tenant=own_tenant)).code == 2
    stranger = note.verifier_key("example.org/other/t", Ed25519PrivateKey.generate().public_key())
    assert (await cli("witness", "--log-key", stranger, *argv[5:], tenant=own_tenant)).code == 2


async def test_ledger_commands_accept_only_a_checkpoint_meeting_the_witness_policy(cli, suite, own_tenant,
                                                                                  database_url, tmp_path):
    vkey = (await served(suite["export"], own_tenant)).log_checkpoint.log_verifier_key
    policy = ("--log-key", vkey, "--witness", WITNESS_KEYS[0], "--witness", WITNESS_KEYS[1])
    state = tmp_path / "tree.json"
    # nobody cosigned yet: 1 of 2 is not met; the state is not started
    none = await cli("--json", "ledger", "check-consistency", "--state", state, *policy, "--min-witnesses", "1",
                     tenant=own_tenant)
    assert none.code == 1 and "TOO_FEW_COSIGNATURES" in none.out and not state.exists()
    key_file, state_dir, name = witness_files(tmp_path, 0)
    assert (await cli("witness", "--log-key", vkey, "--key", key_file, "--name", name, "--state", state_dir,
                      "--first-use", tenant=own_tenant)).code == 0
    # 1 of 2 now holds, 2 of 2 not yet
    one = await cli("--json", "ledger", "check-consistency", "--state", state, *policy, "--min-witnesses", "1",
                    tenant=own_tenant)
    assert one.code == 0, one.out + one.err
    assert [c["name"] for c in json.loads(one.out)["checks"]] == ["checkpoint", "kept"]
    two = await cli("--json", "ledger", "prove", "3", *policy, "--min-witnesses", "2", tenant=own_tenant)
    assert two.code == 1 and "TOO_FEW_COSIGNATURES" in two.out
    key_file, state_dir, name = witness_files(tmp_path, 1)
    assert (await cli("witness", "--log-key", vkey, "--key", key_file, "--name", name, "--state", state_dir,
                      "--first-use", tenant=own_tenant)).code == 0
    proved = await cli("--json", "ledger", "prove", "3", *policy, "--min-witnesses", "2", tenant=own_tenant)
    doc = json.loads(proved.out)
    assert proved.code == 0 and doc["tree_size"] == 5, proved.out + proved.err
    assert [c["name"] for c in doc["checks"]] == ["checkpoint", "leaf", "inclusion", "signed root"]
    # the ledger grows: the new head is signed but not cosigned yet, so the policy refuses it
    append_entries(database_url, own_tenant, [OCT], 2)
    grown = await cli("--json", "ledger", "check-consistency", "--from", state, *policy, "--min-witnesses", "1",
                      tenant=own_tenant)
    assert grown.code == 1 and json.loads(state.read_text())["size"] == 5
    # with the log's signature only (no witnesses asked) the signed head is accepted
    signed_only = await cli("--json", "ledger", "check-consistency", "--from", state, "--log-key", vkey,
                            tenant=own_tenant)
    assert signed_only.code == 0, signed_only.out + signed_only.err
    assert [c["name"] for c in json.loads(signed_only.out)["checks"]] == \
        ["checkpoint", "kept root", "consistency", "signed root", "kept"]
    # a log key not the log's, witnesses without a log key, K above the witnesses given
    other = note.verifier_key(vkey.split("+")[0], Ed25519PrivateKey.generate().public_key())
    assert (await cli("ledger", "prove", "1", "--log-key", other, tenant=own_tenant)).code == 1
    assert (await cli("ledger", "prove", "1", "--witness", WITNESS_KEYS[0], "--min-witnesses", "1",
                      tenant=own_tenant)).code == 2
    assert (await cli("ledger", "prove", "1", *policy, "--min-witnesses", "3", tenant=own_tenant)).code == 2


async def test_an_auditor_checks_a_later_ledger_against_an_exports_checkpoint(cli, suite, own_tenant, database_url,
                                                                             tmp_path):
    """The checkpoint a v3 export names is a tree state `ledger check-consistency` starts from."""
    from aos.evidence.v1 import bundle_pb2

    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        created = (await pb_grpc.ExportServiceStub(channel).CreateExport(pb.CreateExportRequest(
            audit_slice=pb.AuditSlice(), bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE,
            format=bundle_pb2.EXPORT_FORMAT_JSON), metadata=auth(own_tenant), timeout=60)).export
    section = json.loads(created.manifest)["transparency_log"]
    state = tmp_path / "from-export.json"
    state.write_text(json.dumps({"tenant": own_tenant, "size": section["tree_size"], "root": section["root"]}))
    vkey = (await served(suite["export"], own_tenant)).log_checkpoint.log_verifier_key
    append_entries(database_url, own_tenant, [OCT], 3)
    later = await cli("--json", "ledger", "check-consistency", "--from", state, "--log-key", vkey, tenant=own_tenant)
    assert later.code == 0, later.out + later.err
    # the export itself appended its EvidenceExported entry: 5 + 1 + 3
    assert json.loads(state.read_text())["size"] == section["tree_size"] + 4


async def test_export_verify_offline_takes_the_witness_policy(cli, suite, own_tenant, tmp_path):
    artifact = tmp_path / "slice.json"
    created = await cli("--json", "export", "create", "--audit-slice", "--bundle", "EVIDENCE", "--format", "json",
                        "--download", artifact, tenant=own_tenant)
    assert created.code == 0, created.err
    section = json.loads(json.loads(created.out)["export"]["manifest"])["transparency_log"]
    size = section["tree_size"]
    public_key = (await signing_keys(suite["export"], own_tenant))[0]
    vkey = (await served(suite["export"], own_tenant)).log_checkpoint.log_verifier_key
    base = ("--json", "export", "verify", "--offline", artifact, "--key", public_key, "--log-key", vkey,
            "--witness", WITNESS_KEYS[0], "--witness", WITNESS_KEYS[1])
    signed_only = await cli(*base, tenant=own_tenant)
    assert signed_only.code == 0, signed_only.out + signed_only.err
    assert {c["name"] for c in json.loads(signed_only.out)["checks"]} >= {"checkpoint", "inclusion"}
    # the manifest's own note has no cosignature: 1 of 2 fails
    assert (await cli(*base, "--min-witnesses", "1", tenant=own_tenant)).code == 1
    # witness 0 cosigns the kept checkpoint of that size; the auditor fetches it and passes it
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        stub = pb_grpc.ExportServiceStub(channel)
        kept = (await stub.GetLedgerCheckpoint(pb.GetLedgerCheckpointRequest(tree_size=size),
                                               metadata=auth(own_tenant), timeout=10)).log_checkpoint
        name, key = WITNESSES[0]
        line = note.cosign(note.split_note(kept.signed_note.encode())[0], name, key, 1_765_000_000)
        reply = await stub.AddCheckpointCosignature(pb.AddCheckpointCosignatureRequest(
            tree_size=size, cosignature=line.decode()), metadata=auth(own_tenant), timeout=10)
    checkpoint = tmp_path / "checkpoint.note"
    checkpoint.write_text(reply.checkpoint.signed_note)
    one = await cli(*base, "--min-witnesses", "1", "--checkpoint", checkpoint, tenant=own_tenant)
    assert one.code == 0, one.out + one.err
    assert (await cli(*base, "--min-witnesses", "2", "--checkpoint", checkpoint, tenant=own_tenant)).code == 1
    assert (await cli(*base, "--min-witnesses", "3", tenant=own_tenant)).code == 2


async def signing_keys(address: str, tenant: str) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        keys = (await pb_grpc.ExportServiceStub(channel).ListSigningKeys(pb.ListSigningKeysRequest(),
                                                                         metadata=auth(tenant), timeout=10)).keys
    return [base64.b64encode(k.public_key).decode() for k in keys]
