"""Contract tests over the compiled descriptors: what clients, the gateway and
outside verifiers rely on."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from aos.evidence.v1 import evidence_pb2, options_pb2
from aos.export.v1 import export_service_pb2, retention_service_pb2
from aos.ingest.v1 import ingest_service_pb2
from aos.logs.v1 import (
    audit_ledger_service_pb2,
    evidence_search_service_pb2,
    llm_runs_service_pb2,
    system_logs_service_pb2,
)
from aos.overview.v1 import overview_service_pb2

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "SPEC.md"
CONTRACT_CHECK = ROOT.parent / "shared" / "tools" / "contract_check.py"
SCOPES = {"overview.read", "logs.read", "exports.read", "exports.create", "checkpoints.cosign", "evidence.write",
          "retention.read", "retention.admin", "evidence.erase"}

SERVICES = [
    overview_service_pb2.DESCRIPTOR.services_by_name["OverviewService"],
    llm_runs_service_pb2.DESCRIPTOR.services_by_name["LlmRunsService"],
    system_logs_service_pb2.DESCRIPTOR.services_by_name["SystemLogsService"],
    audit_ledger_service_pb2.DESCRIPTOR.services_by_name["AuditLedgerService"],
    evidence_search_service_pb2.DESCRIPTOR.services_by_name["EvidenceSearchService"],
    export_service_pb2.DESCRIPTOR.services_by_name["ExportService"],
    retention_service_pb2.DESCRIPTOR.services_by_name["RetentionService"],
    ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"],
]
LOGS_SERVICES = [s for s in SERVICES if s.full_name.startswith("aos.logs.")]
METHODS = [m for s in SERVICES for m in s.methods]
METADATA = evidence_pb2.EvidenceMetadata.DESCRIPTOR.full_name
# RPCs SPEC.md declares that the protos do not carry yet, with the issue that builds each.
NOT_YET_IN_THE_CONTRACT = {
}
# Bindings built for an issue that SPEC.md's table does not list (SPEC.md is not ours to edit):
# each named here, so that no other undeclared binding can slip in.
_RETENTION = "aos.export.v1.RetentionService"
BEYOND_THE_SPEC_TABLE = {
    ("aos.overview.v1.OverviewService", "GetBudgetHistory", "GET", "/api/v1/runtime/overview/costs/history"):
        "issue #24, costs per budget over time",
    (_RETENTION, "GetRetentionPolicies", "GET", "/api/v1/logs/retention/policies"): "issue #25, retention",
    (_RETENTION, "SetRetentionPolicy", "POST", "/api/v1/logs/retention/policies"): "issue #25, retention",
    (_RETENTION, "ListLegalHolds", "GET", "/api/v1/logs/retention/holds"): "issue #25, legal holds",
    (_RETENTION, "PlaceLegalHold", "POST", "/api/v1/logs/retention/holds"): "issue #25, legal holds",
    (_RETENTION, "ReleaseLegalHold", "POST", "/api/v1/logs/retention/holds/{hold_id}:release"):
        "issue #25, legal holds",
    ("aos.ingest.v1.IngestService", "EraseDataSubject", "POST", "/api/v1/ingest/erasures"): "issue #25, erasure",
}


def bindings(method) -> list[tuple[str, str]]:
    """(VERB, path) of the method's google.api.http rule and its additional bindings."""
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    found = []
    for r in [rule, *rule.additional_bindings]:
        verb = r.WhichOneof("pattern")
        if verb:
            found.append((verb.upper(), getattr(r, verb)))
    return found


ROUTES = [(verb, path, m) for m in METHODS for verb, path in bindings(m)]


def test_generated_code_is_fresh():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# Client streams, which google.api.http cannot transcode: gRPC only, each named (with why).
WITHOUT_A_BINDING = {
    "aos.ingest.v1.IngestService.RecordRunStream": "issue #21, a run streamed in chunks; REST sends RecordRun",
}


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name)
def test_every_rpc_has_an_http_binding_and_a_scope(method):
    if method.full_name in WITHOUT_A_BINDING:
        assert method.client_streaming and not bindings(method)
    else:
        assert bindings(method), f"{method.full_name} has no google.api.http binding"
    assert method.GetOptions().Extensions[options_pb2.required_scope] in SCOPES


def test_only_the_named_client_streams_have_no_binding():
    assert {m.full_name for m in METHODS if m.client_streaming} == set(WITHOUT_A_BINDING)
    assert not any(m.client_streaming and m.server_streaming for m in METHODS)


@pytest.mark.skipif(not SPEC.exists(), reason="SPEC.md not beside the repo")
def test_bindings_are_exactly_the_spec_table():
    expected, service = set(), None
    for line in SPEC.read_text().splitlines():
        header = re.match(r"^`(aos\.[a-z]+\.v\d+\.\w+Service)`", line)
        if header:
            service = header.group(1)
        elif service and line.startswith("| ") and not line.startswith("| RPC") and "---" not in line:
            rpc, rest = [c.strip() for c in line.strip("|").split("|")][:2]
            for verb, path in re.findall(r"\b(GET|POST) (/[^\s(),]+)", rest):
                expected.add((service, rpc.split()[0], verb, path))
        elif service and line.strip() and not line.startswith("|"):
            service = None
    actual = {(m.containing_service.full_name, m.name, verb, path) for verb, path, m in ROUTES}
    assert actual - expected == set(BEYOND_THE_SPEC_TABLE), \
        f"bindings SPEC.md does not declare: {sorted(actual - expected - set(BEYOND_THE_SPEC_TABLE))}"
    actual -= set(BEYOND_THE_SPEC_TABLE)
    # What SPEC.md declares and no proto carries yet is exactly the list of RPCs that
    # open issues build: a new gap, or a built RPC still listed as pending, fails.
    pending = {(service, rpc) for (service, rpc, _verb, _path) in expected - actual}
    assert pending == set(NOT_YET_IN_THE_CONTRACT), \
        f"SPEC.md RPCs without a binding: {sorted(pending)}; listed as pending: {sorted(NOT_YET_IN_THE_CONTRACT)}"


def _shape(path: str) -> tuple:
    """A template's routing shape: literals stay, variables become '*', the :verb suffix stays."""
    path, _, verb = path.partition(":") if re.search(r":[a-z]+$", path) else (path, "", "")
    return tuple("*" if seg.startswith("{") else seg for seg in path.strip("/").split("/")) + (f":{verb}",)


def resolve(verb: str, path: str):
    """Route like the gateway must: the template whose earliest differing segment is a literal wins."""
    segments, _, suffix = path.partition(":") if re.search(r":[a-z]+$", path) else (path, "", "")
    concrete = segments.strip("/").split("/") + [f":{suffix}"]
    candidates = [(shape, m) for v, p, m in ROUTES if v == verb for shape in [_shape(p)]
                  if len(shape) == len(concrete) and all(s == "*" or s == c for s, c in zip(shape, concrete))]
    if not candidates:
        return None
    # Literal beats variable, position by position from the left.
    best = max(candidates, key=lambda c: tuple(s != "*" for s in c[0]))
    return best[1].name


def test_no_two_templates_are_ambiguous():
    seen = {}
    for verb, path, method in ROUTES:
        key = (verb, _shape(path))
        assert key not in seen, f"{verb} {path} ({method.name}) and {seen[key]} route identically"
        seen[key] = f"{path} ({method.name})"


@pytest.mark.parametrize("verb,path,rpc", [
    ("GET", "/api/v1/logs/audit/identity", "ListIdentityEvents"),
    ("GET", "/api/v1/logs/audit/authorization", "ListAuthorizationDecisions"),
    ("GET", "/api/v1/logs/audit/access", "ListAccessEvents"),
    ("GET", "/api/v1/logs/audit/integrity", "GetIntegrityReport"),
    ("GET", "/api/v1/logs/audit/exports", "ListAuditExports"),
    ("GET", "/api/v1/logs/audit/checkpoint", "GetLedgerCheckpoint"),
    ("GET", "/api/v1/logs/audit/aud_123", "GetAuditEntry"),
    ("GET", "/api/v1/runtime/logs/audit/aud_123", "GetAuditEntry"),
    ("GET", "/api/v1/logs/exports/signing-keys", "ListSigningKeys"),
    ("GET", "/api/v1/logs/exports/exp_1", "GetExport"),
    ("GET", "/api/v1/logs/exports/exp_1:download", "DownloadExport"),
    ("POST", "/api/v1/logs/exports/exp_1:verify", "VerifyExport"),
    ("POST", "/api/v1/logs/llm-runs/run_1/export", "CreateExport"),
    ("GET", "/api/v1/logs/llm-runs/run_1/export", "GetLlmRunExport"),
    ("GET", "/api/v1/logs/system/audit", "GetSystemAttribution"),
    ("GET", "/api/v1/logs/system/run_1/snapshot", "GetSystemSnapshot"),
])
def test_literal_segments_win(verb, path, rpc):
    assert resolve(verb, path) == rpc


def _item_message(response):
    repeated = [f for f in response.fields if f.is_repeated and f.message_type is not None]
    assert len(repeated) >= 1, f"{response.full_name} has no repeated item field"
    return repeated[0].message_type


@pytest.mark.parametrize("method", [m for s in LOGS_SERVICES for m in s.methods], ids=lambda m: m.full_name)
def test_logs_responses_and_list_items_carry_evidence_metadata(method):
    def has_metadata(message):
        field = message.fields_by_name.get("metadata")
        return field is not None and field.message_type is not None and field.message_type.full_name == METADATA

    assert has_metadata(method.output_type), method.output_type.full_name
    if method.name.startswith("List"):
        assert has_metadata(_item_message(method.output_type)), _item_message(method.output_type).full_name


@pytest.mark.parametrize("method", [m for m in METHODS if m.name.startswith("List")
                                    and m.name != "ListSigningKeys"], ids=lambda m: m.full_name)
def test_lists_use_aip_158_names(method):
    request, response = method.input_type.fields_by_name, method.output_type.fields_by_name
    assert request["page_size"].type == request["page_size"].TYPE_INT32
    assert request["page_token"].type == request["page_token"].TYPE_STRING
    assert response["next_page_token"].type == response["next_page_token"].TYPE_STRING
    assert response["total_size"].type in (response["total_size"].TYPE_INT32, response["total_size"].TYPE_INT64)
    assert response["has_more"].type == response["has_more"].TYPE_BOOL
    assert "total_size_is_estimate" in response


def test_no_request_names_a_tenant_or_actor():
    """Tenant and actor come only from credentials (SPEC section 3)."""
    for method in METHODS:
        names = {f.name for f in method.input_type.fields}
        assert not names & {"tenant_id", "tenant", "actor_id_override", "requested_by_id"}, method.full_name


def _source_info() -> descriptor_pb2.FileDescriptorSet:
    protos = ROOT / "protos"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.binpb"
        sources = sorted(str(p.relative_to(protos)) for p in protos.rglob("*.proto"))
        assert protoc.main(["protoc", f"-I{protos}", f"-I{ROOT / 'third_party' / 'protos'}",
                            f"-I{Path(grpc_tools.__file__).parent / '_proto'}", "--include_source_info",
                            f"--descriptor_set_out={out}", *sources]) == 0
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def test_every_element_has_a_comment():
    missing = []
    for file in _source_info().file:
        commented = {tuple(loc.path) for loc in file.source_code_info.location
                     if loc.leading_comments.strip() or loc.trailing_comments.strip()}

        def need(path, name):
            # Called only within this iteration, so the loop's current values are the right ones.
            if tuple(path) not in commented:  # noqa: B023
                missing.append(f"{file.name}: {name}")  # noqa: B023

        def walk_message(message, path, prefix):
            need(path, prefix)
            for i, field in enumerate(message.field):
                need(path + [2, i], f"{prefix}.{field.name}")
            for i, nested in enumerate(message.nested_type):
                if not nested.options.map_entry:
                    walk_message(nested, path + [3, i], f"{prefix}.{nested.name}")
            for i, enum in enumerate(message.enum_type):
                walk_enum(enum, path + [4, i], f"{prefix}.{enum.name}")

        def walk_enum(enum, path, prefix):
            need(path, prefix)
            for i, value in enumerate(enum.value):
                need(path + [2, i], f"{prefix}.{value.name}")

        for i, message in enumerate(file.message_type):
            walk_message(message, [4, i], message.name)
        for i, enum in enumerate(file.enum_type):
            walk_enum(enum, [5, i], enum.name)
        for i, service in enumerate(file.service):
            need([6, i], service.name)
            for j, method in enumerate(service.method):
                need([6, i, 2, j], f"{service.name}.{method.name}")
    assert not missing, "uncommented: " + ", ".join(missing)


def test_every_domain_enum_value_has_a_canonical_name_or_none_at_all():
    """canonical_name is all-or-nothing per enum: a half-mapped enum would lose values in the database."""
    for file in (evidence_pb2.DESCRIPTOR,):
        for enum in file.enum_types_by_name.values():
            named = [v.GetOptions().Extensions[options_pb2.canonical_name] for v in enum.values if v.number]
            assert all(named), enum.full_name


@pytest.mark.skipif(not CONTRACT_CHECK.exists(), reason="shared/tools/contract_check.py not beside the repo")
def test_shared_contract_check_passes():
    """The shared checker finds nothing missing but the RPCs open issues build (NOT_YET_IN_THE_CONTRACT)."""
    result = subprocess.run([sys.executable, str(CONTRACT_CHECK)], cwd=ROOT, capture_output=True, text=True)
    missing = set(re.findall(r"^missing rpc (\S+)/(\S+)$", result.stdout, re.M))
    missing_services = set(re.findall(r"^missing service (\S+)$", result.stdout, re.M))
    pending_services = {service for service, _ in NOT_YET_IN_THE_CONTRACT
                        if service.rsplit(".", 1)[-1] not in {s.name for s in SERVICES}}
    other = [line for line in result.stdout.splitlines()
             if line.startswith("missing") and not re.match(r"^missing (rpc|service) ", line)]
    assert not other, result.stdout
    assert missing_services == pending_services, result.stdout
    assert missing == {key for key in NOT_YET_IN_THE_CONTRACT if key[0] not in pending_services}, result.stdout
    if not NOT_YET_IN_THE_CONTRACT:
        assert result.returncode == 0, result.stdout


BUF = shutil.which("buf") or str(Path(sys.executable).with_name("buf"))


@pytest.mark.skipif(not Path(BUF).exists(), reason="buf is not installed")
# The vendored OpenTelemetry protos stay as their project wrote them (make lint excludes them too).
@pytest.mark.parametrize("args", [["lint"], ["format", "-d", "--exit-code", "--exclude-path",
                                             "third_party/protos/opentelemetry"]], ids=["lint", "format"])
def test_buf_is_clean(args):
    result = subprocess.run([BUF, *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
