"""Access evidence's pure parts: which RPCs the contract declares as reads, and whose word on a
client's address is believed (aos_runtime.access, gateway.clients)."""
from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from aos.evidence.v1 import options_pb2
from aos.export.v1 import export_service_pb2
from aos.logs.v1 import audit_ledger_service_pb2, llm_runs_service_pb2, system_logs_service_pb2
from aos_runtime.access import access_rules, client_of, parse_networks, peer_address
from gateway.clients import client_address, client_metadata

DESCRIPTORS = [llm_runs_service_pb2.DESCRIPTOR.services_by_name["LlmRunsService"],
               system_logs_service_pb2.DESCRIPTOR.services_by_name["SystemLogsService"],
               audit_ledger_service_pb2.DESCRIPTOR.services_by_name["AuditLedgerService"],
               export_service_pb2.DESCRIPTOR.services_by_name["ExportService"]]


def test_the_views_the_contract_declares():
    rules = access_rules(DESCRIPTORS)
    views = {method.rsplit("/", 1)[1]: (rule.entity_type, rule.id_field)
             for method, rule in rules.items() if not rule.list}
    assert views == {
        **{rpc: ("LLM_RUN", "run_id") for rpc in (
            "GetLlmRunEnvelope", "GetLlmRunTrace", "GetLlmRunGovernance", "GetLlmRunReplay", "GetLlmRunExport",
            "GetSystemSnapshot", "GetSystemTelemetry", "ListSystemRunEvents", "GetSystemReplay")},
        "GetAuditEntry": ("AUDIT_ENTRY", "entry_id"),
        **{rpc: ("LOG_EXPORT", "export_id") for rpc in ("GetExport", "DownloadExport", "VerifyExport")},
    }
    # Proofs, the integrity walk, keys and checkpoints disclose hashes, not evidence; CreateExport
    # records its own EvidenceExported in its transaction.
    for rpc in ("GetIntegrityReport", "GetInclusionProof", "GetConsistencyProof", "ListLedgerLeaves",
                "CreateExport", "ListSigningKeys", "GetLedgerCheckpoint", "AddCheckpointCosignature"):
        assert not any(method.endswith(f"/{rpc}") for method in rules), rpc


def _service_with(access: options_pb2.EvidenceAccess):
    """A throwaway service whose one RPC declares ``access``, in a pool of its own."""
    pool = descriptor_pool.DescriptorPool()
    for module in (options_pb2,):
        for dependency in module.DESCRIPTOR.dependencies:
            pool.AddSerializedFile(dependency.serialized_pb)
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(name="probe.proto", package="probe", syntax="proto3",
                                              dependency=["aos/evidence/v1/options.proto"])
    message = file.message_type.add(name="Req")
    message.field.add(name="run_id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    method = file.service.add(name="Probe").method.add(name="Get", input_type=".probe.Req", output_type=".probe.Req")
    method.options.Extensions[options_pb2.access].CopyFrom(access)
    pool.AddSerializedFile(file.SerializeToString())
    return pool.FindServiceByName("probe.Probe")


@pytest.mark.parametrize("access", [
    options_pb2.EvidenceAccess(kind=options_pb2.ACCESS_KIND_VIEW, entity_type="RUN", id_field="run_id"),
    options_pb2.EvidenceAccess(kind=options_pb2.ACCESS_KIND_VIEW, entity_type="LLM_RUN", id_field="trace_id"),
    options_pb2.EvidenceAccess(entity_type="LLM_RUN", id_field="run_id"),
])
def test_a_declaration_the_server_cannot_honour_stops_it_at_start(access):
    with pytest.raises(ValueError):
        access_rules([_service_with(access)])


def test_peer_strings():
    assert str(peer_address("ipv4:10.1.2.3:5555")) == "10.1.2.3"
    assert str(peer_address("ipv6:[::1]:5555")) == "::1"
    assert peer_address("unix:/tmp/sock") is None and peer_address(None) is None


def test_the_service_believes_the_gateways_client_only_from_a_trusted_peer():
    forwarded = (("x-aos-client-ip", "203.0.113.7"), ("x-aos-client-user-agent", "console/1"),
                 ("user-agent", "grpc-python/1.85"))
    trusted = parse_networks("10.0.0.0/8, ::1")
    got = client_of("ipv4:10.9.9.9:1", forwarded, trusted)
    assert (got.ip_address, got.user_agent) == ("203.0.113.7", "console/1")
    got = client_of("ipv4:192.0.2.50:1", forwarded, trusted)
    assert (got.ip_address, got.user_agent) == ("192.0.2.50", "grpc-python/1.85")
    # A trusted peer naming something that is no address: its own address, not the text.
    got = client_of("ipv6:[::1]:1", (("x-aos-client-ip", "evil; DROP"),), trusted)
    assert got.ip_address == "::1"


def test_the_gateway_reads_x_forwarded_for_only_behind_a_trusted_proxy():
    trusted = parse_networks("10.0.0.0/8")
    assert client_address("192.0.2.1", ["198.51.100.1"], trusted) == "192.0.2.1"  # a client's own XFF: ignored
    assert client_address("10.0.0.5", ["198.51.100.1, 203.0.113.9"], trusted) == "203.0.113.9"
    # The rightmost hop that is not a trusted proxy: what the client itself wrote further left is not believed.
    assert client_address("10.0.0.5", ["6.6.6.6, 203.0.113.9, 10.0.0.7"], trusted) == "203.0.113.9"
    assert client_address("10.0.0.5", ["not-an-ip"], trusted) == "10.0.0.5"
    assert client_address("10.0.0.5", [], trusted) == "10.0.0.5"
    assert client_metadata("192.0.2.1", [], "agent\x00/1 é", ()) == \
        [("x-aos-client-ip", "192.0.2.1"), ("x-aos-client-user-agent", "agent/1")]


def test_a_user_agent_is_kept_printable_and_bounded():
    assert client_of(None, (("user-agent", "grpc-python/1.85 (linux)"),), ()).user_agent == "grpc-python/1.85 (linux)"
    assert client_of(None, (("user-agent", "a\x00b\nc\u200bd"),), ()).user_agent == "abcd"
    assert client_of(None, (("user-agent", "x" * 300),), ()).user_agent == "x" * 256
    assert client_of(None, (("user-agent", "\x07\x08"),), ()).user_agent is None
