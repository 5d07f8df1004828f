"""docker-compose.yml started for real, where a Docker engine runs.

One test, in order: build the image, `up -d --scale logs=2`; the migrate job exits 0 and every
service turns healthy; the one-shot demo loader loads (and a second run loads nothing); the `cli`
service mints a token; REST calls through the published gateway answer the demo data; an export
made before `up --force-recreate` still verifies after it, and a new one is signed by the same key
(the shared `export_signing_key` secret); a page token from one Logs replica is honoured by the
other (the shared AOS_PAGE_TOKEN_SECRET), and the gateway pages across both; `down -v` leaves no
container, network or volume of the project.

Skipped, saying why, where no engine answers `docker info` (CI and the project's machines when no
dockerd runs: `dockerd &` as root starts one) or no Compose is installed. Base images: PYTHON_IMAGE /
POSTGRES_IMAGE when set, else the official images when the engine has them or can pull them, else
aos-base:local / aos-postgres:local built from Debian's packages by tools/offline_images.sh (a few
minutes, once). With the images and the build cache in place, the test takes about two minutes.
"""
from __future__ import annotations

import json
import os
import secrets as random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy.support import COMPOSE_FILE, REQUIRED, ROOT, docker_daemon

OFFICIAL = {"PYTHON_IMAGE": "python:3.11-slim", "POSTGRES_IMAGE": "postgres:16"}
OFFLINE = {"PYTHON_IMAGE": "aos-base:local", "POSTGRES_IMAGE": "aos-postgres:local"}
APP = ("overview", "logs", "export", "ingest", "gateway")
UP_TIMEOUT_S = 240


def _compose_binary() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def _why_not() -> str | None:
    if not docker_daemon():
        return "no Docker engine answers `docker info` here (start one: `dockerd &` as root)"
    if _compose_binary() is None:
        return "no docker-compose nor `docker compose` here (Debian: apt-get install docker-compose)"
    return None


WHY_NOT = _why_not()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"compose up for real: {WHY_NOT}")


def _have(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def _base_images() -> dict[str, str]:
    """The images to start from: given, official (present or pullable), else built from Debian's packages."""
    if os.environ.get("PYTHON_IMAGE") and os.environ.get("POSTGRES_IMAGE"):
        return {k: os.environ[k] for k in OFFICIAL}
    for images in (OFFICIAL, OFFLINE):
        if all(_have(i) for i in images.values()):
            return images
    if all(subprocess.run(["docker", "pull", "-q", i], capture_output=True, timeout=300).returncode == 0
           for i in OFFICIAL.values()):
        return OFFICIAL
    if not shutil.which("mmdebstrap"):
        pytest.skip("no image registry reachable and no mmdebstrap to build aos-base:local "
                    "(apt-get install mmdebstrap, or set PYTHON_IMAGE and POSTGRES_IMAGE)")
    built = subprocess.run(["bash", str(ROOT / "tools" / "offline_images.sh")], capture_output=True, text=True,
                           timeout=1800)
    assert built.returncode == 0, built.stdout + built.stderr
    return OFFLINE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, tmp_path: Path, images: dict[str, str]):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        key = tmp_path / "export-signing-key.pem"
        key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        os.chmod(key, 0o600)
        if os.geteuid() == 0:
            os.chown(key, 10001, 10001)  # the image's user owns the key it signs with
        self.project = f"aostest{random.token_hex(4)}"
        self.port = _free_port()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
        self.env = {**clean, **{name: random.token_hex(32) for name in REQUIRED}, **images,
                    "AOS_EXPORT_SIGNING_KEY_PATH": str(key), "COMPOSE_PROJECT_NAME": self.project,
                    "GATEWAY_HOST_PORT": str(self.port)}
        self.base = [*_compose_binary(), "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT)]
        self.url = f"http://127.0.0.1:{self.port}"

    def run(self, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.base, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"{' '.join(args)}: {done.stderr[-3000:]}\n{self.logs()}"
        return done

    def logs(self) -> str:
        return subprocess.run([*self.base, "logs", "--tail", "30"], env=self.env, capture_output=True, text=True,
                              timeout=120).stdout[-8000:]

    def containers(self, service: str | None = None, all_: bool = False) -> list[dict]:
        """The project's containers (docker inspect), optionally of one service."""
        labels = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            labels += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = subprocess.run(["docker", "ps", "-q", *(["-a"] if all_ else []), *labels], capture_output=True,
                             text=True, check=True).stdout.split()
        if not ids:
            return []
        return json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True,
                                         check=True).stdout)

    def wait_healthy(self, scale_logs: int) -> None:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while True:
            states = {}
            for c in self.containers():
                service = c["Config"]["Labels"]["com.docker.compose.service"]
                health = (c["State"].get("Health") or {}).get("Status", c["State"]["Status"])
                states.setdefault(service, []).append(health)
            if (all(states.get(s) and set(states[s]) == {"healthy"} for s in (*APP, "postgres"))
                    and len(states["logs"]) == scale_logs):
                return
            assert time.monotonic() < deadline, f"not healthy after {UP_TIMEOUT_S}s: {states}\n{self.logs()}"
            assert not any("unhealthy" in v for v in states.values()), f"{states}\n{self.logs()}"
            time.sleep(3)

    def rest(self, method: str, path: str, token: str, **kwargs) -> dict:
        import httpx

        answer = httpx.request(method, self.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=60,
                               **kwargs)
        assert answer.status_code == 200, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json()


# Run inside the compose network (the cli service's image): page 1 from one Logs replica, page 2
# from the other with page 1's token, page 3 from the first again; the same entries as one page.
PAGES_ACROSS_REPLICAS = """
import sys, grpc
from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as rpc
token, first, second = sys.argv[1:4]
meta = (("authorization", "Bearer " + token),)
stubs = [rpc.AuditLedgerServiceStub(grpc.insecure_channel(a + ":50052")) for a in (first, second, first)]
ids, page_token = [], ""
for stub in stubs:
    page = stub.ListAuditEntries(pb.ListAuditEntriesRequest(page_size=3, page_token=page_token), metadata=meta)
    ids += [e.id for e in page.entries]
    page_token = page.next_page_token
    assert page_token, "ran out of pages"
whole = stubs[1].ListAuditEntries(pb.ListAuditEntriesRequest(page_size=9), metadata=meta)
assert ids == [e.id for e in whole.entries], (ids, [e.id for e in whole.entries])
try:
    stubs[1].ListAuditEntries(pb.ListAuditEntriesRequest(page_size=3, page_token=page_token[:-4] + "AAAA"),
                              metadata=meta)
    raise SystemExit("a forged page token was accepted")
except grpc.RpcError as exc:
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
print(len(ids), "entries over three pages from two replicas")
"""


@pytest.fixture()
def stack(tmp_path):
    images = _base_images()
    s = Stack(tmp_path, images)
    try:
        yield s
    finally:
        s.run("--profile", "demo", "--profile", "tools", "down", "-v", "--remove-orphans", timeout=300, check=False)


def test_compose_up_for_real(stack):
    s = stack
    s.run("build", timeout=1800)
    s.run("up", "-d", "--scale", "logs=2", timeout=600)
    s.wait_healthy(scale_logs=2)
    [migrate] = s.containers("migrate", all_=True)
    assert migrate["State"]["Status"] == "exited" and migrate["State"]["ExitCode"] == 0

    # The one-shot demo loader, as the producers' login; again: nothing more, still exit 0.
    assert "demo data present" in s.run("--profile", "demo", "run", "--rm", "demo").stdout
    s.run("--profile", "demo", "run", "--rm", "demo")

    token = s.run("--profile", "tools", "run", "--rm", "-T", "cli", "token", "mint", "--tenant",
                  "tenant-demo").stdout.strip()
    assert token.count(".") == 2, token

    highlights = s.rest("GET", "/api/v1/runtime/overview/highlights", token)
    assert highlights, highlights
    runs = s.rest("GET", "/api/v1/logs/llm-runs", token, params={"page_size": 5})["runs"]
    assert runs, "the demo loaded no LLM run"
    run_id = runs[0]["run_id"]

    # The gateway pages the audit ledger across both Logs replicas: every entry once.
    seen, page_token = [], ""
    total = s.rest("GET", "/api/v1/logs/audit", token, params={"page_size": 1000})["entries"]
    while True:
        page = s.rest("GET", "/api/v1/logs/audit", token, params={"page_size": 7, "page_token": page_token})
        seen += [e["id"] for e in page.get("entries", [])]
        page_token = page.get("next_page_token", "")
        if not page_token:
            break
    assert seen == [e["id"] for e in total] and len(seen) > 7

    # A page token minted by one replica is honoured by the other (and a forged one refused).
    replicas = [c["Name"].lstrip("/") for c in s.containers("logs")]
    assert len(replicas) == 2
    across = s.run("--profile", "tools", "run", "--rm", "-T", "--entrypoint", "python", "cli", "-c",
                   PAGES_ACROSS_REPLICAS, token, *replicas)
    assert "9 entries over three pages from two replicas" in across.stdout, across.stdout + across.stderr

    body = {"run_id": run_id, "bundle_type": "BUNDLE_TYPE_EVIDENCE", "format": "EXPORT_FORMAT_JSON"}
    before = s.rest("POST", "/api/v1/logs/exports", token, json=body)["export"]
    assert s.rest("POST", f"/api/v1/logs/exports/{before['export_id']}:verify", token,
                  json={"recompute": True})["valid"] is True

    # Every container anew: the export still verifies, and a new one is signed by the same key.
    s.run("up", "-d", "--force-recreate", "--scale", "logs=2", timeout=600)
    s.wait_healthy(scale_logs=2)
    verdict = s.rest("POST", f"/api/v1/logs/exports/{before['export_id']}:verify", token, json={"recompute": True})
    assert verdict["valid"] is True, verdict
    after = s.rest("POST", "/api/v1/logs/exports", token,
                   json={**body, "bundle_type": "BUNDLE_TYPE_SOC2"})["export"]
    assert after["signing_key_id"] == before["signing_key_id"]
    keys = s.rest("GET", "/api/v1/logs/exports/signing-keys", token)["keys"]
    assert [k["key_id"] for k in keys] == [before["signing_key_id"]], keys

    s.run("--profile", "demo", "--profile", "tools", "down", "-v", "--remove-orphans", timeout=300)
    assert s.containers(all_=True) == []
    leftovers = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                                f"label=com.docker.compose.project={s.project}"], capture_output=True, text=True)
    assert leftovers.stdout.split() == []
    networks = subprocess.run(["docker", "network", "ls", "-q", "--filter",
                               f"label=com.docker.compose.project={s.project}"], capture_output=True, text=True)
    assert networks.stdout.split() == []
