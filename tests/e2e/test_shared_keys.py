"""Several instances share the page-token secret and the signing key (issue #17, part 4).

Two servers of one service, built from the same settings but each with its own
AOS_DATA_DIR (as on two machines), on port 0: a page token one issues is read by the
other, an export one signs verifies on the other. The control case shows what the
shared configuration prevents: with development keys each instance seals with its
own, and the other refuses its page tokens.
"""
from __future__ import annotations

import contextlib
import dataclasses

import grpc
import pytest

from aos.export.v1 import export_service_pb2 as export_pb2, export_service_pb2_grpc as export_grpc
from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb2, audit_ledger_service_pb2_grpc as audit_grpc
from aos_recording import dsse
from aos_runtime.service_main import build_server
from tests.e2e.support import BASE, DEMO, auth, service_modules, settings
from tests.logins import load_demo_scenarios, login_url

pytestmark = pytest.mark.db

# Exports are written for a tenant of their own: other tests count tenant-demo's exports.
WRITER = "tenant-shared-keys"


@pytest.fixture(scope="module")
def writer(database_url) -> str:
    return load_demo_scenarios(database_url, WRITER, base=BASE)


@contextlib.asynccontextmanager
async def two_instances(name: str, database_url: str, confs):
    servers = [build_server(name, service_modules()[name].servicers, conf, login_url(database_url, name), port=0)
               for conf in confs]
    try:
        ports = [await server.start() for server in servers]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports[0]}") as a, \
                grpc.aio.insecure_channel(f"127.0.0.1:{ports[1]}") as b:
            yield a, b
    finally:
        for server in servers:
            await server.stop(grace=0)


async def _first_page_then_next_elsewhere(a, b) -> tuple[list[str], object]:
    """Page 1 from instance a, page 2 from instance b with a's token: (ids of page 1, page 2 or the error)."""
    first = await audit_grpc.AuditLedgerServiceStub(a).ListAuditEntries(
        audit_pb2.ListAuditEntriesRequest(page_size=2), metadata=auth(DEMO))
    assert first.next_page_token, "the demo ledger has more than two entries"
    try:
        second = await audit_grpc.AuditLedgerServiceStub(b).ListAuditEntries(
            audit_pb2.ListAuditEntriesRequest(page_size=2, page_token=first.next_page_token), metadata=auth(DEMO))
    except grpc.aio.AioRpcError as err:
        return [e.id for e in first.entries], err
    return [e.id for e in first.entries], second


async def test_a_page_token_from_one_instance_is_read_by_another(database_url, demo, tmp_path):
    shared = "shared-page-token-secret-" + "s" * 24
    confs = [dataclasses.replace(settings(tmp_path / f"machine-{i}"), page_token_secret=shared) for i in (1, 2)]
    async with two_instances("logs", database_url, confs) as (a, b):
        ids, second = await _first_page_then_next_elsewhere(a, b)
        assert not isinstance(second, grpc.aio.AioRpcError), second
        assert second.entries and not {e.id for e in second.entries} & set(ids)
        # The same continuation from the issuing instance: the same page.
        _, again = await _first_page_then_next_elsewhere(a, a)
        assert [e.id for e in again.entries] == [e.id for e in second.entries]
    # Nothing was generated per instance: the configured secret is all there is.
    assert not any((tmp_path / f"machine-{i}" / "secrets" / "page-token-secret").exists() for i in (1, 2))


async def test_control_instance_local_development_secrets_do_not_share_tokens(database_url, demo, tmp_path):
    confs = [settings(tmp_path / f"machine-{i}") for i in (1, 2)]  # no AOS_PAGE_TOKEN_SECRET
    async with two_instances("logs", database_url, confs) as (a, b):
        _, second = await _first_page_then_next_elsewhere(a, b)
        assert isinstance(second, grpc.aio.AioRpcError) and second.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_export_signed_by_one_instance_verifies_on_another(database_url, writer, tmp_path):
    key = tmp_path / "signing.pem"
    key.write_bytes(dsse.SigningKey.generate().private_pem())
    key.chmod(0o600)
    confs = [dataclasses.replace(settings(tmp_path / f"machine-{i}"), export_signing_key_file=key,
                                 page_token_secret="shared-page-token-secret-" + "s" * 24) for i in (1, 2)]
    async with two_instances("export", database_url, confs) as (a, b):
        stub_a, stub_b = export_grpc.ExportServiceStub(a), export_grpc.ExportServiceStub(b)
        created = (await stub_a.CreateExport(export_pb2.CreateExportRequest(
            run_id=f"{writer}.run-support-103", bundle_type="BUNDLE_TYPE_EVIDENCE", format="EXPORT_FORMAT_JSON"),
            metadata=auth(writer))).export
        keys_b = (await stub_b.ListSigningKeys(export_pb2.ListSigningKeysRequest(), metadata=auth(writer))).keys
        assert created.signing_key_id == keys_b[0].key_id
        verdict = await stub_b.VerifyExport(export_pb2.VerifyExportRequest(export_id=created.export_id),
                                            metadata=auth(writer))
        assert verdict.valid, [(c.name, c.detail) for c in verdict.checks if not c.passed]
