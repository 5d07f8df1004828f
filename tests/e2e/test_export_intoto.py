"""GetExport offers the export's manifest as an in-toto Statement v1 in DSSE (intoto_envelope),
from the running service: the in-toto project's own bindings validate it, it opens under the
active signing key, its subject is the artifact downloaded and its predicate the signed manifest."""
from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timezone

import grpc
import pytest
from google.protobuf import json_format
from in_toto_attestation.v1 import statement as ita_statement, statement_pb2

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_recording import dsse, intoto
from tests.db.sessions import append_entries, new_id
from tests.e2e.support import auth

pytestmark = pytest.mark.db

OCT = datetime(2026, 10, 1, tzinfo=timezone.utc)


async def test_get_export_offers_the_manifest_as_an_in_toto_statement(suite, database_url):
    tenant = new_id("t")
    append_entries(database_url, tenant, [OCT], 4)
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        stub = pb_grpc.ExportServiceStub(channel)
        created = (await stub.CreateExport(pb.CreateExportRequest(
            audit_slice=pb.AuditSlice(), bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE,
            format=bundle_pb2.EXPORT_FORMAT_JSON), metadata=auth(tenant), timeout=30)).export
        got = await stub.GetExport(pb.GetExportRequest(export_id=created.export_id), metadata=auth(tenant), timeout=10)
        again = await stub.GetExport(pb.GetExportRequest(export_id=created.export_id), metadata=auth(tenant), timeout=10)
        artifact = b"".join([m.data async for m in stub.DownloadExport(pb.DownloadExportRequest(export_id=created.export_id),
                                                                       metadata=auth(tenant))])
        keys = (await stub.ListSigningKeys(pb.ListSigningKeysRequest(), metadata=auth(tenant), timeout=10)).keys
    envelope = json.loads(got.intoto_envelope)
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert got.intoto_envelope == again.intoto_envelope  # the same bytes while the key is active
    parsed = ita_statement.Statement.copy_from_pb(
        json_format.Parse(base64.b64decode(envelope["payload"]), statement_pb2.Statement()))
    parsed.validate()
    assert parsed.pb.predicate_type == intoto.EXPORT_MANIFEST_V3_PREDICATE_TYPE  # the manifest names its checkpoint
    assert [(s.name, dict(s.digest)) for s in parsed.pb.subject] == \
        [(created.filename, {"sha256": hashlib.sha256(artifact).hexdigest()})]
    active = dsse.PublicKey.from_raw(keys[0].public_key)
    statement = intoto.open_export_statement(got.intoto_envelope, [active])
    manifest = json.loads(dsse.verify_envelope(created.dsse_envelope, [active], dsse.MANIFEST_PAYLOAD_TYPE))
    assert statement["predicate"] == manifest
    # a changed byte of the statement's payload is refused
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[10] ^= 1
    tampered = dict(envelope, payload=base64.b64encode(bytes(payload)).decode())
    with pytest.raises(dsse.DsseError):
        intoto.open_export_statement(tampered, [active])
