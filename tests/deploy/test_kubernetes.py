"""deploy/kubernetes: the Kustomize base and its read-replica overlay, checked offline.

- every manifest (each file of the base, and everything kustomize renders from the base and
  the overlay) validates against the Kubernetes OpenAPI schema of KUBERNETES_VERSION
  (kubernetes-validate, strict: an unknown field is an error);
- rendered with kustomize itself (`kustomize build` or `kubectl kustomize`; skipped, saying
  so, where neither binary is installed: the per-file validation still runs);
- what the manifests promise is checked on the rendered objects: probes are native gRPC on
  each service's port, every environment variable is one the suite knows and Settings
  accepts, only the migrate Job holds the admin DSN and each service only its own, the keys
  come from Secrets, every container has requests and limits, a PDB and an HPA per
  Deployment, and the NetworkPolicies let only the gateway reach the services and only the
  services and the Job reach Postgres.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from aos_runtime.config import ENV_VARS, SERVICES, Settings

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes" / "base"
REPLICA = ROOT / "deploy" / "kubernetes" / "overlays" / "read-replica"
EXTERNAL = ROOT / "deploy" / "kubernetes" / "overlays" / "external-postgres"
KUBERNETES_VERSION = "1.32.0"  # the schema the manifests are held to (kubernetes-validate ships it)
KNOWN = {v.name for v in ENV_VARS}
PORTS = {name: int(next(v.default for v in ENV_VARS if v.name == f"AOS_{name.upper()}_PORT")) for name in SERVICES}
DB_CLIENT = "aos-evidence.io/database-client"


def kustomize(directory: Path) -> list[dict]:
    """``directory`` rendered by kustomize (the standalone binary, else kubectl's built-in one)."""
    if shutil.which("kustomize"):
        argv = ["kustomize", "build", str(directory)]
    elif shutil.which("kubectl"):
        argv = ["kubectl", "kustomize", str(directory)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed: the rendering is not checked here "
                    "(each file is still validated by test_each_base_file_validates)")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate(doc: dict, where: str) -> None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {doc['kind']}/{doc['metadata'].get('name')}: {exc.message} at "
                    f"{'/'.join(map(str, exc.path))}")


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def replica() -> list[dict]:
    return kustomize(REPLICA)


@pytest.fixture(scope="module")
def external() -> list[dict]:
    return kustomize(EXTERNAL)


def test_each_base_file_validates_against_the_pinned_schema():
    files = sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    listed = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == [p.name for p in files], "a manifest is not listed in kustomization.yaml (or gone)"
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            validate(doc, path.name)


def test_the_validator_catches_a_wrong_manifest():
    """The check above can fail: a misspelt field and a wrong type are refused."""
    import kubernetes_validate

    deployment = next(d for d in yaml.safe_load_all((BASE / "logs.yaml").read_text()) if d["kind"] == "Deployment")
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    wrong_type = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["base", "replica", "external"])
def test_rendered_manifests_validate(overlay, request):
    docs = request.getfixturevalue(overlay)
    assert docs
    for doc in docs:
        validate(doc, f"kustomize {overlay}")


def test_a_deployment_and_a_service_per_service_and_the_gateway(base):
    deployments, services = by_kind(base, "Deployment"), by_kind(base, "Service")
    names = {f"aos-{name}" for name in SERVICES} | {"aos-gateway"}
    assert set(deployments) == names and set(services) == names
    for name in SERVICES:
        service = services[f"aos-{name}"]
        # Headless: the gateway's dns:/// target resolves every ready pod and balances calls over them.
        assert service["spec"]["clusterIP"] == "None"
        assert [p["port"] for p in service["spec"]["ports"]] == [PORTS[name]]
        selector = service["spec"]["selector"]
        labels = deployments[f"aos-{name}"]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
    for doc in base:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "aos-evidence-plane", doc["metadata"]


@pytest.mark.parametrize("name", SERVICES)
def test_services_have_native_grpc_probes_on_their_port(base, name):
    container = pod_spec(by_kind(base, "Deployment")[f"aos-{name}"])["containers"][0]
    assert container["command"] == ["python", "-m", f"services.{name}"]
    assert [p["containerPort"] for p in container["ports"]] == [PORTS[name]]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": PORTS[name]}, probe
    # Liveness tolerates a database outage (NOT_SERVING) for minutes, readiness reacts in seconds.
    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 120
    assert ready["periodSeconds"] * ready["failureThreshold"] <= 15


def settings_of(container: dict) -> Settings:
    """The container's environment as Settings reads it, Secret and ConfigMap references
    standing for a 32-byte value (a DSN key for a DSN)."""
    env = {}
    for name, entry in env_of(container).items():
        if "value" in entry:
            env[name] = entry["value"]
        else:
            ref = entry["valueFrom"].get("secretKeyRef") or entry["valueFrom"].get("configMapKeyRef")
            env[name] = (f"postgresql://user-of-{ref['key']}:pw@db:5432/aos" if ref["key"].endswith("url")
                         else f"value-of-{ref['key']}-" + "x" * 32)
    return Settings.from_env(env)


def test_every_variable_is_known_and_accepted(base, replica):
    for docs in (base, replica):
        for kind in ("Deployment", "Job"):
            for name, obj in by_kind(docs, kind).items():
                for container in pod_spec(obj)["containers"]:
                    unknown = set(env_of(container)) - KNOWN
                    assert not unknown, f"{name}: {sorted(unknown)} not in aos_runtime.config.ENV_VARS"
                    settings_of(container)  # no ConfigError


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_holds_only_its_own_login_and_the_shared_keys(base, name):
    container = pod_spec(by_kind(base, "Deployment")[f"aos-{name}"])["containers"][0]
    env = env_of(container)
    assert "DATABASE_URL" not in env
    dsns = {k for k in env if k.endswith("_DATABASE_URL")}
    assert dsns == {f"AOS_{name.upper()}_DATABASE_URL"}
    assert env[f"AOS_{name.upper()}_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "aos-database",
                                                                                    "key": f"{name}-url"}
    for variable, key in (("AOS_AUTH_JWT_SECRET", "jwt-secret"), ("AOS_PAGE_TOKEN_SECRET", "page-token-secret")):
        assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "aos-keys", "key": key}
    settings = settings_of(container)
    assert settings.bind_host == "0.0.0.0" and settings.migrate_on_start is False
    assert settings.ports[name] == PORTS[name]


def test_export_signs_with_the_shared_key_from_a_secret_it_owns(base):
    """A Secret volume's files belong to root: an init container copies the key, as the
    service's uid with mode 0600, into a memory volume (Export refuses any other)."""
    spec = pod_spec(by_kind(base, "Deployment")["aos-export"])
    env = env_of(spec["containers"][0])
    key_file = Path(env["AOS_EXPORT_SIGNING_KEY_FILE"]["value"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert volumes[mounts[str(key_file.parent)]["name"]]["emptyDir"]["medium"] == "Memory"
    (init,) = spec["initContainers"]
    assert init["command"][:3] == ["install", "-m", "0600"] and init["command"][-1] == str(key_file)
    secret_mount = next(m for m in init["volumeMounts"] if "secret" in volumes[m["name"]])
    assert volumes[secret_mount["name"]]["secret"]["secretName"] == "aos-export-signing-key"
    assert init["command"][-2] == f"{secret_mount['mountPath']}/{key_file.name}"
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's user, who then owns the copy


def test_only_the_migrate_job_holds_the_admin_dsn(base):
    (job,) = by_kind(base, "Job").values()
    container = pod_spec(job)["containers"][0]
    assert container["command"][:3] == ["python", "-m", "aos_runtime.migrate"]
    env = env_of(container)
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "aos-database", "key": "admin-url"}
    # It provisions every login with the password of the DSN that login's service gets.
    assert {k for k in env if k.endswith("_DATABASE_URL") and k != "DATABASE_URL"} == \
        {f"AOS_{n.upper()}_DATABASE_URL" for n in (*SERVICES, "producer")}
    for name, obj in by_kind(base, "Deployment").items():
        for container in pod_spec(obj)["containers"]:
            assert all(e.get("valueFrom", {}).get("secretKeyRef", {}).get("key") != "admin-url"
                       for e in container.get("env", [])), name


def test_every_container_has_requests_limits_and_runs_unprivileged(base):
    for kind in ("Deployment", "Job"):
        for name, obj in by_kind(base, kind).items():
            spec = pod_spec(obj)
            assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
            for container in spec.get("initContainers", []) + spec["containers"]:
                resources = container["resources"]
                assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"]), name
                assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
                assert container["securityContext"]["readOnlyRootFilesystem"] is True, name


def test_a_disruption_budget_and_an_autoscaler_per_deployment(base):
    deployments = by_kind(base, "Deployment")
    pdbs, hpas = by_kind(base, "PodDisruptionBudget"), by_kind(base, "HorizontalPodAutoscaler")
    for name, deployment in deployments.items():
        selects = [p for p in pdbs.values() if p["spec"]["selector"]["matchLabels"].items()
                   <= deployment["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selects) == 1 and selects[0]["spec"]["minAvailable"] < deployment["spec"]["replicas"], name
        scales = [h for h in hpas.values() if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1",
                                                                               "kind": "Deployment", "name": name}]
        assert len(scales) == 1 and scales[0]["spec"]["minReplicas"] >= 2, name


# ---- NetworkPolicies: who reaches whom ------------------------------------------------------

def _selects(selector: dict, labels: dict) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get("matchExpressions")


def _allows_port(rule: dict, port: int) -> bool:
    ports = rule.get("ports")
    return not ports or any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports)


def _ingress_allowed(policies: list[dict], source: dict, target: dict, port: int) -> bool:
    """NetworkPolicy semantics for pods of one namespace: isolated for ingress when some policy
    selecting ``target`` has Ingress in its types; then allowed when one of their rules admits
    ``source`` on ``port``."""
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], target)
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if _allows_port(rule, port) and (peers is None or any(
                    "podSelector" in peer and "namespaceSelector" not in peer and "ipBlock" not in peer
                    and _selects(peer["podSelector"], source) for peer in peers)):
                return True
    return False


def _egress_allowed(policies: list[dict], source: dict, port: int) -> bool:
    """Whether ``source`` may open TCP ``port`` to some destination outside the cluster's pods."""
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], source)
                 and "Egress" in p["spec"].get("policyTypes", [])]
    if not selecting:
        return True
    return any(_allows_port(rule, port) and (not rule.get("to") or any("ipBlock" in peer for peer in rule["to"]))
               for policy in selecting for rule in policy["spec"].get("egress", []))


def pod_labels(docs: list[dict]) -> dict[str, dict]:
    pods = {name: obj["spec"]["template"]["metadata"]["labels"] for name, obj in by_kind(docs, "Deployment").items()}
    pods.update({name: obj["spec"]["template"]["metadata"]["labels"] for name, obj in by_kind(docs, "Job").items()})
    return pods


def test_only_the_gateway_reaches_the_services(base):
    policies = list(by_kind(base, "NetworkPolicy").values())
    pods = pod_labels(base)
    stranger = {"app.kubernetes.io/name": "something-else"}
    for name in SERVICES:
        target = pods[f"aos-{name}"]
        assert _ingress_allowed(policies, pods["aos-gateway"], target, PORTS[name])
        for other, labels in [*pods.items(), ("a pod of another app", stranger)]:
            if other != "aos-gateway":
                assert not _ingress_allowed(policies, labels, target, PORTS[name]), f"{other} reaches {name}"
    # And the gateway takes REST from anyone.
    assert _ingress_allowed(policies, stranger, pods["aos-gateway"], 8080)


def test_only_the_services_and_the_migrate_job_reach_postgres(base):
    policies = list(by_kind(base, "NetworkPolicy").values())
    pods = pod_labels(base)
    clients = {f"aos-{name}" for name in SERVICES} | {"aos-migrate"}
    postgres = {"aos-evidence.io/role": "postgres", "app.kubernetes.io/part-of": "aos-evidence-plane"}
    stranger = {"app.kubernetes.io/name": "something-else"}
    for name, labels in pods.items():
        # Postgres in the namespace (ingress) and outside it (the client's egress) alike.
        reach = _ingress_allowed(policies, labels, postgres, 5432) and _egress_allowed(policies, labels, 5432)
        assert reach == (name in clients), f"{name} {'reaches' if reach else 'cannot reach'} Postgres"
    assert not _ingress_allowed(policies, stranger, postgres, 5432)
    assert {name for name, labels in pods.items() if labels.get(DB_CLIENT) == "true"} == clients


def test_the_replica_overlay_points_overview_and_logs_only_at_the_replica(base, replica):
    deployments = by_kind(replica, "Deployment")
    configmaps = {name.rsplit("-", 1)[0]: doc for name, doc in by_kind(replica, "ConfigMap").items()}
    url = configmaps["aos-read-replica"]["data"]["read-database-url"]
    for name in SERVICES:
        container = pod_spec(deployments[f"aos-{name}"])["containers"][0]
        entry = env_of(container).get("AOS_READ_DATABASE_URL")
        if name in ("export", "ingest"):
            assert entry is None, f"{name} writes (and reads back) the primary"
            continue
        ref = entry["valueFrom"]["configMapKeyRef"]
        assert ref["name"] in by_kind(replica, "ConfigMap") and ref["key"] == "read-database-url"
        settings = settings_of(container)
        assert settings.read_database_url  # accepted by Settings
    # No credential in the overlay's value: each service logs in as itself (provision.read_url).
    assert "@" not in url and url.startswith("postgresql://")
    # Nothing else changed.
    strip = [d for d in replica if d["kind"] != "ConfigMap"]
    for doc in strip:
        for container in (pod_spec(doc)["containers"] if doc["kind"] in ("Deployment", "Job") else []):
            container["env"] = [e for e in container.get("env", []) if e["name"] != "AOS_READ_DATABASE_URL"]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(strip, key=key) == sorted(base, key=key)


def test_the_external_postgres_overlay_narrows_database_egress_to_its_address(base, external):
    policies = by_kind(external, "NetworkPolicy")
    rules = policies["aos-database-clients"]["spec"]["egress"]
    database = [r for r in rules if any(p.get("port") == 5432 for p in r.get("ports", []))]
    assert [peer["ipBlock"]["cidr"] for rule in database for peer in rule["to"]] == ["192.0.2.10/32"]
    # Who may reach Postgres is unchanged: the services and the Job, not the gateway.
    pods = pod_labels(external)
    for name, labels in pods.items():
        reach = _egress_allowed(list(policies.values()), labels, 5432)
        assert reach == (name != "aos-gateway"), name
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert [key(d) for d in sorted(external, key=key)] == [key(d) for d in sorted(base, key=key)]
