"""Configuration, read once from environment variables.

Every variable the suite understands is declared in ``ENV_VARS``: the README's
table, the compose file check and ``Settings.from_env`` all read that one list.
"""
from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aos_runtime import channels


@dataclass(frozen=True)
class EnvVar:
    name: str
    default: str | None
    help: str


_TARGET_FORMS = ("host:port, ipv4:h:p,h:p or dns:///name:port (several instances: round-robin); "
                 "default the local port.")

ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("DATABASE_URL", None,
           "PostgreSQL 15+ admin URL (postgresql://user:pass@host:port/db) for the migration step only (migrations "
           "and the services' login roles); no service process gets it. Unset: an embedded Postgres under "
           "AOS_DATA_DIR."),
    EnvVar("AOS_READ_DATABASE_URL", None,
           "PostgreSQL URL of a streaming replica the read-only services (Overview, Logs) read from: its host, "
           "port and database, with each service's own login and password; unset: the primary."),
    EnvVar("AOS_OVERVIEW_DATABASE_URL", None,
           "DSN of the Overview service's own login role (aos_overview): the only database credential it holds. "
           "Unset: derived from the embedded Postgres (a password generated under AOS_DATA_DIR)."),
    EnvVar("AOS_LOGS_DATABASE_URL", None, "DSN of the Logs service's own login role (aos_logs); as above."),
    EnvVar("AOS_EXPORT_DATABASE_URL", None, "DSN of the Export service's own login role (aos_export); as above."),
    EnvVar("AOS_INGEST_DATABASE_URL", None, "DSN of the Ingest service's own login role (aos_ingest); as above."),
    EnvVar("AOS_PRODUCER_DATABASE_URL", None,
           "DSN of the producers' login role (aos_producer): the demo loader and the recording library."),
    EnvVar("AOS_DATA_DIR", ".aos", "Local state: embedded Postgres data, development secrets, signing keys."),
    EnvVar("AOS_BIND_HOST", "127.0.0.1", "Address every server listens on."),
    EnvVar("AOS_OVERVIEW_PORT", "50051", "OverviewService gRPC port."),
    EnvVar("AOS_LOGS_PORT", "50052", "LlmRuns/SystemLogs/AuditLedger gRPC port."),
    EnvVar("AOS_EXPORT_PORT", "50053", "ExportService gRPC port."),
    EnvVar("AOS_INGEST_PORT", "50054", "IngestService gRPC port (producers write evidence here)."),
    EnvVar("AOS_OVERVIEW_ADDRESS", None, "gRPC target where clients (gateway, CLI) reach Overview: " + _TARGET_FORMS),
    EnvVar("AOS_LOGS_ADDRESS", None, "gRPC target where clients (gateway, CLI) reach Logs: " + _TARGET_FORMS),
    EnvVar("AOS_EXPORT_ADDRESS", None, "gRPC target where clients (gateway, CLI) reach Export: " + _TARGET_FORMS),
    EnvVar("AOS_INGEST_ADDRESS", None, "gRPC target where clients (gateway) reach Ingest: " + _TARGET_FORMS),
    EnvVar("AOS_GATEWAY_PORT", "8080", "REST gateway HTTP port."),
    EnvVar("AOS_GATEWAY_HEADER_TIMEOUT_S", "10",
           "Seconds a gateway client has to send a request's headers and body after connecting (or after its "
           "previous response); a slower connection is closed."),
    EnvVar("AOS_GATEWAY_MAX_CONNECTIONS", "1000",
           "Open connections the gateway keeps; past it a new connection closes the oldest one still waiting "
           "for its request (only when all are busy is the new one refused)."),
    EnvVar("AOS_GATEWAY_HTTP_PARSER", "httptools",
           "The gateway's HTTP/1.1 parser: httptools (C, llhttp) or h11 (pure Python); the same read deadline, "
           "connection cap and 16 KiB head limit either way."),
    EnvVar("AOS_OVERVIEW_METRICS_PORT", "0",
           "Port of the Overview service's Prometheus /metrics (on AOS_BIND_HOST); 0: no metrics endpoint. With "
           "AOS_WORKERS > 1, worker i serves on this port + i. Suggested: 9461 (docs/OBSERVABILITY.md)."),
    EnvVar("AOS_LOGS_METRICS_PORT", "0", "Port of the Logs service's /metrics; as above. Suggested: 9471."),
    EnvVar("AOS_EXPORT_METRICS_PORT", "0", "Port of the Export service's /metrics; as above. Suggested: 9481."),
    EnvVar("AOS_INGEST_METRICS_PORT", "0", "Port of the Ingest service's /metrics; as above. Suggested: 9491."),
    EnvVar("AOS_GATEWAY_METRICS_PORT", "0", "Port of the REST gateway's /metrics; 0: none. Suggested: 9450."),
    EnvVar("AOS_AUTH_JWT_SECRET", None,
           "HS256 secret for bearer JWTs. make run generates one under AOS_DATA_DIR when unset."),
    EnvVar("AOS_AUTH_JWT_PUBLIC_KEY_FILE", None, "PEM Ed25519 public key accepted for EdDSA bearer JWTs."),
    EnvVar("AOS_AUTH_ISSUER", None, "When set, the JWT `iss` claim must equal it."),
    EnvVar("AOS_AUTH_AUDIENCE", "aos-evidence", "Required JWT `aud` claim."),
    EnvVar("AOS_AUTH_MAX_TOKEN_LIFETIME", "86400",
           "Longest bearer-token lifetime accepted, in seconds (exp - iat); longer tokens are UNAUTHENTICATED."),
    EnvVar("AOS_DEV_KEYS", "false",
           "With DATABASE_URL set, generate development keys and secrets under AOS_DATA_DIR for those not "
           "configured instead of refusing to start (never in production)."),
    EnvVar("AOS_PAGE_TOKEN_SECRET", None,
           "Key sealing page tokens (shared by every process of a deployment). A development one is generated "
           "under AOS_DATA_DIR when unset."),
    EnvVar("AOS_EXPORT_SIGNING_KEY_FILE", None,
           "PEM (PKCS#8) Ed25519 private key that signs exports and checkpoints. Unset: one is generated "
           "under AOS_DATA_DIR (development only)."),
    EnvVar("AOS_EXPORT_VERIFICATION_KEY_FILES", None,
           "Comma-separated PEM Ed25519 public keys (or JSON key lists) of retired signing keys: still "
           "listed by ListSigningKeys and accepted by VerifyExport."),
    EnvVar("AOS_LOG_ORIGIN", "aos-evidence.local",
           "Base of the transparency logs' origins (C2SP checkpoints): `<base>/ledger/<tenant_id>` and "
           "`<base>/exports/<tenant_id>`; also the log note key's name."),
    EnvVar("AOS_CHECKPOINT_INTERVAL_S", "60",
           "Seconds between the Export service's publications of C2SP checkpoints for every log that grew; "
           "0: only on demand (GetLedgerCheckpoint)."),
    EnvVar("AOS_RETENTION_INTERVAL_S", "86400",
           "Seconds between the suite launcher's (`make run`) retention rounds: record every tenant's ledger "
           "checkpoint, then apply the tenants' retention policies and legal holds (`python -m "
           "aos_recording.retention apply`); the first round one interval after start; 0: off (run it from cron)."),
    EnvVar("AOS_WITNESS_KEYS", None,
           "Comma- or space-separated witness verifier keys (cosignature/v1 vkeys, "
           "`<name>+<hex id>+<base64>`) whose cosignatures AddCheckpointCosignature accepts."),
    EnvVar("AOS_EXPORT_RATE_PER_HOUR", "600",
           "Exports one tenant may create in any sliding hour, counted from its recorded exports (so every "
           "instance agrees); past it CreateExport answers RESOURCE_EXHAUSTED EXPORT_RATE_LIMITED with RetryInfo "
           "(when the window frees a slot). An idempotent replay is never refused. 0: no limit."),
    EnvVar("AOS_EXPORT_STORED_BYTES_PER_TENANT", str(20 * 1024 ** 3),
           "Artifact bytes one tenant's recorded exports may hold in all (default 20 GiB); an export that would "
           "pass it is refused with RESOURCE_EXHAUSTED EXPORT_STORAGE_QUOTA and QuotaFailure. 0: no limit."),
    EnvVar("AOS_ACCESS_RECORDING", "1",
           "Record every read of a piece of evidence (the RPCs declaring aos.evidence.v1.access) as an "
           "AccessGranted / AccessDenied entry in the caller's audit ledger. Off only to measure its cost."),
    EnvVar("AOS_ACCESS_RECORD_LISTS", "0",
           "Record list pages (ListLlmRuns, ListAuditEntries, …) as access entries too; off: only views by id."),
    EnvVar("AOS_ACCESS_FLUSH_MS", "200",
           "Milliseconds between writes of the buffered access entries (or sooner at 500): what a crash of a "
           "service process can lose while the database keeps up, more (the backlog) when views outrun the "
           "ledger's appends (RELIABILITY.md); a SIGTERM writes them all."),
    EnvVar("AOS_TRUSTED_PROXIES", None,
           "Addresses or CIDR blocks (comma-separated) of proxies whose client address is believed: the gateway "
           "takes X-Forwarded-For only from them, the services the gateway's x-aos-client-ip only from them. "
           "Unset: the connection's own peer is the client (REST calls then record the gateway's address)."),
    EnvVar("AOS_TOKEN", None, "Bearer token the aos-evidence CLI sends (else it mints a development one)."),
    EnvVar("AOS_DB_POOL_SIZE", "10", "Connections per service process."),
    EnvVar("AOS_WORKERS", "1",
           "Server processes per service, all listening on its one port (SO_REUSEPORT; the kernel spreads "
           "connections over them); `auto`: one per CPU. Each worker has its own pool, so a deployment opens "
           "up to services × workers × AOS_DB_POOL_SIZE database connections: keep that below the "
           "database's max_connections."),
    EnvVar("AOS_DB_POOL_TIMEOUT_S", "5", "Seconds a call waits for a pooled connection before RESOURCE_EXHAUSTED."),
    EnvVar("AOS_MAX_INFLIGHT", "32",
           "Light calls (every RPC not declared heavy) one service process runs at once; more wait, round-robin "
           "between tenants, for at most AOS_QUEUE_BUDGET_S (or their deadline), else RESOURCE_EXHAUSTED with "
           "RetryInfo (REST: 429 with Retry-After): at once when recent service times say the wait would be longer."),
    EnvVar("AOS_INGEST_INFLIGHT_BYTES", str(64 * 1024 * 1024),
           "Bytes of ingest requests (AppendAuditEvents, AppendSystemRecords, RecordRun, OTLP Export) one Ingest "
           "process holds in process at once (default 64 MiB); a request that would pass it is refused at once with "
           "RESOURCE_EXHAUSTED INGEST_BYTES_LIMIT and RetryInfo (OTLP/HTTP: 429 with Retry-After), which the OTLP "
           "exporters and aos_recording's client retry. A request alone is always admitted. 0: no limit."),
    EnvVar("AOS_INGEST_INFLIGHT_BYTES_PER_TENANT", str(32 * 1024 * 1024),
           "The same bound for one tenant's ingest requests (default 32 MiB), so that one producer's flood leaves "
           "room for the others. 0: no limit."),
    EnvVar("AOS_OTLP_TRACE_QUIET_S", "30",
           "OTLP trace stitching (docs/INGEST.md): the GenAI spans of a trace whose root span has not arrived are "
           "kept (committed before the Export is acknowledged) and sealed into one run when the root arrives, or "
           "once no span of the trace has arrived for this many seconds (a background task of the Ingest server; "
           "keep it above the exporters' batch delay, 5 s by default in the OpenTelemetry SDKs). A span of a trace "
           "arriving after its run was sealed is refused (OTLP partial success) unless it is already in the run."),
    EnvVar("AOS_QUEUE_BUDGET_S", "0.25",
           "Longest a light call waits to start (its deadline, if sooner, wins), counting the time it waited in "
           "gRPC's own queue while the process was saturated (its event loop's lag); seconds, fractions allowed."),
    EnvVar("AOS_ACCEPTED_TARGET_S", "1",
           "Admission by predicted completion: a call (light or heavy) that cannot start at once is admitted to "
           "wait only if its estimated wait plus its method's recent service time (90th percentile of the last 50) "
           "ends within this many seconds of its arrival, or its deadline if sooner; else it is refused at once "
           "(RESOURCE_EXHAUSTED SERVER_OVERLOADED or TENANT_HEAVY_LIMIT with RetryInfo and QuotaFailure), and a "
           "waiting call gives up once it could no longer end in time. A call that can start at once always "
           "starts. Fractions allowed; 0: off (calls wait up to their queue budget)."),
    EnvVar("AOS_ADAPTIVE_INFLIGHT_MIN", "0",
           "0: light calls at once are AOS_MAX_INFLIGHT. Else an adaptive limit between this and AOS_MAX_INFLIGHT "
           "(a gradient on each call's service time against its method's baseline, as Netflix concurrency-limits' "
           "Gradient2): it shrinks while light calls take more than twice their baseline, and grows back while "
           "they do not (metric aos_admission_inflight_limit)."),
    EnvVar("AOS_SHED_LAG_S", "0.01",
           "When a service process's event loop runs this late (seconds) and a call could not start at once, "
           "the call is refused before any other work (RESOURCE_EXHAUSTED SERVER_OVERLOADED with RetryInfo), "
           "so that a saturated process answers refusals fast instead of queueing them unseen. 0: off."),
    EnvVar("AOS_MAX_PENDING_CALLS", "256",
           "Calls of one RPC method that gRPC's core holds for a service process before the process has taken "
           "them (they queue there while the event loop is busy): beyond it the core refuses a new call at once, "
           "without the process, as CANCELLED (grpc.server.max_pending_requests_hard_limit; the REST gateway "
           "answers it 429 with Retry-After). 0: gRPC's own default (3000)."),
    EnvVar("AOS_PENDING_CALLS_EARLY_DROP", "64",
           "From this many calls of one method held by gRPC's core, a new one is refused with a probability "
           "rising linearly to 1 at AOS_MAX_PENDING_CALLS (grpc.server.max_pending_requests: random early drop)."),
    EnvVar("AOS_MAX_UNREQUESTED_S", "1",
           "Whole seconds a call may wait in gRPC's core before the process takes it; older ones are cancelled "
           "(CANCELLED) when the process next takes a call (grpc.server_max_unrequested_time_in_server)."),
    EnvVar("AOS_HEAVY_CONCURRENCY", "2",
           "Heavy calls (the RPCs whose proto declares `heavy`: CreateExport, DownloadExport, VerifyExport, "
           "GetIntegrityReport) one service process runs at once, on a database pool of as many connections of "
           "their own (beside AOS_DB_POOL_SIZE): they never take the connections light reads need."),
    EnvVar("AOS_HEAVY_PER_TENANT", "1",
           "Heavy calls of one tenant a process runs at once; waiting heavy calls start round-robin between tenants."),
    EnvVar("AOS_HEAVY_QUEUE_PER_TENANT", "8",
           "Heavy calls of one tenant that may wait per process; one more is refused at once (TENANT_HEAVY_LIMIT)."),
    EnvVar("AOS_HEAVY_QUEUE_BUDGET_S", "10",
           "Longest a heavy call waits to start (its deadline, if sooner, wins), else RESOURCE_EXHAUSTED "
           "(TENANT_HEAVY_LIMIT or SERVER_OVERLOADED) with RetryInfo and QuotaFailure."),
    EnvVar("AOS_DOWNLOADS_PER_TENANT", "4",
           "Downloads (DownloadExport) of one tenant a service process streams at once. A download is admitted "
           "as heavy work only to start; then it holds one of these instead, reading one chunk per short "
           "transaction, so a slow reader holds no heavy slot or connection. One more is refused at once "
           "(TENANT_HEAVY_LIMIT with RetryInfo)."),
    EnvVar("AOS_HEAVY_ISOLATION", "on",
           "`off` only to diagnose: heavy calls are then admitted as light ones, on the shared pool, with no "
           "per-tenant limit (the fairness tests show what that costs another tenant)."),
    EnvVar("AOS_HEAVY_PROCESSES", "on",
           "`on`: with the heavy isolation on, a heavy call's CPU-bound work (an export's render, a verification's "
           "re-render, an integrity walk) runs in AOS_HEAVY_CONCURRENCY worker processes of the service at nice "
           "+AOS_HEAVY_NICE, each with one database connection of the service's login, instead of a thread of "
           "the process that serves the light calls (whose interpreter, GIL and pauses it shared). A worker commits "
           "only on its service's word and ends with it (a service killed mid-export leaves no row and no process: "
           "tests/e2e/test_export_crash.py). `off`: in the heavy pool's threads."),
    EnvVar("AOS_HEAVY_WORKER_RECYCLE_MIB", "8",
           "A heavy worker process (AOS_HEAVY_PROCESSES) whose heap after a job (its resident anonymous "
           "memory, after the heap trim) is more than this many MiB above what it held warm, before its first job "
           "(its imports, its connection), ends and is replaced, once the call has its answer: what a large "
           "export grew (Python's memory arenas kept by a few survivors, its connection's buffers) goes back to "
           "the system with it (counted in `aos_heavy_worker_recycles_total`); small calls grow a worker by "
           "~1 MiB and leave it be (RELIABILITY.md). 0: never."),
    EnvVar("AOS_HEAVY_NICE", "10",
           "How much the heavy work yields the CPU (0-19, the `nice` increment): the heavy worker processes "
           "(AOS_HEAVY_PROCESSES) or the heavy pool's threads run at it, and so does each heavy worker's "
           "PostgreSQL backend when the database runs on this machine and may be reniced by this user (a "
           "Unix socket or loopback address; else it keeps its priority and the service says so once in its "
           "log). 0: heavy work competes with the light calls as equals."),
    EnvVar("AOS_HEAVY_BACKEND_NICE", "on",
           "`on`: a heavy worker's PostgreSQL backend runs at AOS_HEAVY_NICE as the worker does (where it can be "
           "reniced: above). `off`: the backends keep the database server's priority."),
    EnvVar("AOS_HEAP_TRIM", "on",
           "When a process's heavy calls and downloads have all ended, close its idle database connections "
           "(the light calls' only once none has run for 2 s) (libpq keeps each one's largest message buffered "
           "until it closes: an artifact chunk, 2–4 MiB) and give its freed heap back to the system (glibc "
           "`malloc_trim`, in a thread; counted in `aos_heap_trims_total`), so its resident memory returns "
           "toward idle. `off` keeps both. Nothing to do where the C library is not glibc."),
    EnvVar("AOS_DB_STATEMENT_TIMEOUT_MS", "30000", "Upper bound on one SQL statement; a shorter client deadline wins."),
    EnvVar("AOS_DB_CONNECT_TIMEOUT_S", "3", "Seconds to wait for a new database connection."),
    EnvVar("AOS_MIGRATE_ON_START", "true",
           "Apply migrations and provision the login roles when a service or the suite starts, in a separate "
           "step (`python -m aos_runtime.migrate upgrade`) that alone uses the admin credentials."),
    EnvVar("AOS_GRACE_PERIOD_S", "10", "Seconds in-flight calls get to finish after SIGTERM."),
    EnvVar("AOS_HEALTH_PROBE_INTERVAL_S", "2", "Seconds between database probes behind the health status."),
    EnvVar("AOS_MAX_MESSAGE_BYTES", str(8 * 1024 * 1024), "Largest gRPC message a server sends or receives."),
    EnvVar("AOS_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR."),
)

_BY_NAME = {v.name: v for v in ENV_VARS}

SERVICES = ("overview", "logs", "export", "ingest")
# A server listening on every interface is reached on loopback from this machine.
_LOCAL_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}


class ConfigError(ValueError):
    """A configuration value that cannot be used; raised at start, never mid-call."""


def _address(env: Mapping[str, str], service: str, bind_host: str) -> str:
    """Where clients reach ``service``: AOS_<SERVICE>_ADDRESS (any gRPC target), else its local port."""
    name = f"AOS_{service.upper()}_ADDRESS"
    value = _get(env, name)
    if value is None:
        return f"{_LOCAL_HOSTS.get(bind_host, bind_host)}:{_int(env, f'AOS_{service.upper()}_PORT')}"
    if not channels.is_target(value):
        raise ConfigError(f"{name} must be a gRPC target: host:port, ipv4:host:port,host:port,... or "
                          f"dns:///name:port, got {value!r}")
    return value


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value == "":
        return _BY_NAME[name].default
    return value


def _http_parser(env: Mapping[str, str]) -> str:
    value = (_get(env, "AOS_GATEWAY_HTTP_PARSER") or "httptools").strip().lower()
    if value not in ("h11", "httptools"):
        raise ConfigError(f"AOS_GATEWAY_HTTP_PARSER must be h11 or httptools, got {value!r}")
    return value


def _int(env: Mapping[str, str], name: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = _get(env, name)
    try:
        value = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def _seconds(env: Mapping[str, str], name: str, *, zero: bool = False) -> float:
    """A positive number of seconds (``zero``: 0 too, which means off)."""
    raw = _get(env, name)
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{name} must be a {'non-negative' if zero else 'positive'} number of seconds, got {raw!r}")
    return value


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    parts = tuple((_get(env, name) or "").replace(",", " ").split())
    for part in parts:
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ConfigError(f"{name} must list IP addresses or CIDR blocks, got {part!r}") from None
    return parts


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = (_get(env, name) or "").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _workers(env: Mapping[str, str]) -> int:
    raw = (_get(env, "AOS_WORKERS") or "").strip().lower()
    if raw == "auto":
        # The CPUs this process may run on (taskset, cpuset), not merely those the machine has.
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return _int(env, "AOS_WORKERS", minimum=1)


_METRICS = (*SERVICES, "gateway")


def _metrics_ports(env: Mapping[str, str], workers: int) -> dict[str, int]:
    """AOS_<PROCESS>_METRICS_PORT of each process; a service's workers take port … port + workers - 1,
    so ranges that overlap (or that meet another process's port) are refused here, naming both."""
    ports = {name: _int(env, f"AOS_{name.upper()}_METRICS_PORT") for name in _METRICS}
    taken: dict[int, str] = {}
    for name, port in ports.items():
        if not port:
            continue
        for p in range(port, port + (workers if name in SERVICES else 1)):
            other = taken.get(p)
            if other is not None:
                raise ConfigError(f"AOS_{name.upper()}_METRICS_PORT={port} and AOS_{other.upper()}_METRICS_PORT "
                                  f"both need port {p} (with AOS_WORKERS={workers} a service's workers use "
                                  "port … port + workers - 1): set them further apart")
            taken[p] = name
    return ports


MIN_SECRET_BYTES = 32  # an HMAC key at least as long as its SHA-256 output (RFC 7518 §3.2)


def _check_secret_length(env: Mapping[str, str], name: str) -> None:
    # A short HMAC secret is brute-forced offline from one token it sealed: refused at start.
    value = _get(env, name)
    if value is not None and len(value.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"{name} must be at least {MIN_SECRET_BYTES} bytes (got {len(value.encode())}); "
                          "generate one with `openssl rand -hex 32`")


def check_dev_key_allowed(settings: Settings, variable: str) -> None:
    """Raises ConfigError unless a missing ``variable`` may be replaced by a development key.

    Yes for the embedded default (DATABASE_URL unset: make run, make test) or with
    AOS_DEV_KEYS=1. With DATABASE_URL set, a throw-away key would make each instance
    sign and seal with its own (page tokens refused by the next instance, exports
    verifiable by nobody after a restart): refused, naming the variable.
    """
    # A service's own DSN (AOS_<SERVICE>_DATABASE_URL, e.g. in compose) is as production-like as DATABASE_URL.
    external = settings.database_url is not None or any(settings.service_database_urls.values())
    if external and not settings.dev_keys:
        raise ConfigError(f"{variable} is not set: with DATABASE_URL set every instance needs the deployment's "
                          f"shared key; set {variable} (or AOS_DEV_KEYS=1 to generate a development one under "
                          "AOS_DATA_DIR)")


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    read_database_url: str | None     # where Overview and Logs read (a replica); None: database_url
    service_database_urls: Mapping[str, str | None]  # AOS_<LOGIN>_DATABASE_URL per login (provision.LOGINS)
    data_dir: Path
    bind_host: str
    ports: Mapping[str, int]
    addresses: Mapping[str, str]      # where a client reaches each service
    jwt_secret: str | None
    jwt_public_key_file: Path | None
    issuer: str | None
    audience: str
    page_token_secret: str | None
    export_signing_key_file: Path | None
    max_token_lifetime_s: int
    dev_keys: bool                    # AOS_DEV_KEYS: see check_dev_key_allowed
    export_verification_key_files: tuple[Path, ...]
    pool_size: int
    workers: int                      # server processes per service
    pool_timeout_s: int
    statement_timeout_ms: int
    connect_timeout_s: int
    migrate_on_start: bool
    grace_period_s: int
    health_probe_interval_s: float
    max_message_bytes: int
    log_level: str
    max_inflight: int = 32               # AOS_MAX_INFLIGHT (aos_runtime.admission)
    queue_budget_s: float = 0.25         # AOS_QUEUE_BUDGET_S
    ingest_inflight_bytes: int = 64 * 1024 * 1024             # AOS_INGEST_INFLIGHT_BYTES (0: none)
    ingest_inflight_bytes_per_tenant: int = 32 * 1024 * 1024  # AOS_INGEST_INFLIGHT_BYTES_PER_TENANT
    otlp_trace_quiet_s: float = 30.0     # AOS_OTLP_TRACE_QUIET_S
    shed_lag_s: float = 0.01             # AOS_SHED_LAG_S
    accepted_target_s: float = 1.0       # AOS_ACCEPTED_TARGET_S (0: off)
    adaptive_inflight_min: int = 0       # AOS_ADAPTIVE_INFLIGHT_MIN (0: off)
    max_pending_calls: int = 256         # AOS_MAX_PENDING_CALLS (gRPC core, per method)
    pending_calls_early_drop: int = 64   # AOS_PENDING_CALLS_EARLY_DROP
    max_unrequested_s: int = 1           # AOS_MAX_UNREQUESTED_S
    heavy_concurrency: int = 2           # AOS_HEAVY_CONCURRENCY
    heavy_per_tenant: int = 1            # AOS_HEAVY_PER_TENANT
    heavy_queue_per_tenant: int = 8      # AOS_HEAVY_QUEUE_PER_TENANT
    heavy_queue_budget_s: float = 10.0   # AOS_HEAVY_QUEUE_BUDGET_S
    heavy_isolation: bool = True         # AOS_HEAVY_ISOLATION
    heavy_processes: bool = True         # AOS_HEAVY_PROCESSES
    heap_trim: bool = True               # AOS_HEAP_TRIM
    heavy_worker_recycle_mib: int = 8    # AOS_HEAVY_WORKER_RECYCLE_MIB (0: never)
    heavy_nice: int = 10                 # AOS_HEAVY_NICE
    heavy_backend_nice: bool = True      # AOS_HEAVY_BACKEND_NICE
    downloads_per_tenant: int = 4        # AOS_DOWNLOADS_PER_TENANT
    gateway_header_timeout_s: int = 10   # AOS_GATEWAY_HEADER_TIMEOUT_S
    gateway_max_connections: int = 1000  # AOS_GATEWAY_MAX_CONNECTIONS
    gateway_http_parser: str = "httptools"  # AOS_GATEWAY_HTTP_PARSER
    log_origin: str = "aos-evidence.local"  # AOS_LOG_ORIGIN
    checkpoint_interval_s: int = 60      # AOS_CHECKPOINT_INTERVAL_S (0: on demand only)
    retention_interval_s: int = 86400    # AOS_RETENTION_INTERVAL_S (0: no scheduled retention)
    witness_keys: tuple[str, ...] = ()   # AOS_WITNESS_KEYS, parsed by the Export service at start
    # AOS_<PROCESS>_METRICS_PORT: /metrics of each service (worker i: port + i) and the gateway; 0: none
    metrics_ports: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(_METRICS, 0))
    export_rate_per_hour: int = 600      # AOS_EXPORT_RATE_PER_HOUR; 0: no limit
    export_stored_bytes_per_tenant: int = 20 * 1024 ** 3  # AOS_EXPORT_STORED_BYTES_PER_TENANT; 0: no limit
    access_recording: bool = True        # AOS_ACCESS_RECORDING (aos_runtime.access)
    access_record_lists: bool = False    # AOS_ACCESS_RECORD_LISTS
    access_flush_ms: int = 200           # AOS_ACCESS_FLUSH_MS
    trusted_proxies: tuple[str, ...] = ()  # AOS_TRUSTED_PROXIES, networks as written (checked in from_env)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        unknown = sorted(k for k in env if k.startswith("AOS_") and k not in _BY_NAME)
        if unknown:
            # A typo in a variable name silently falling back to a default is how
            # a service ends up on the wrong port or database: refuse it.
            raise ConfigError(f"unknown configuration variables: {', '.join(unknown)}")
        key_file = _get(env, "AOS_AUTH_JWT_PUBLIC_KEY_FILE")
        signing_key = _get(env, "AOS_EXPORT_SIGNING_KEY_FILE")
        bind_host = _get(env, "AOS_BIND_HOST") or "127.0.0.1"
        level = (_get(env, "AOS_LOG_LEVEL") or "INFO").upper()
        for name in ("AOS_AUTH_JWT_SECRET", "AOS_PAGE_TOKEN_SECRET"):
            _check_secret_length(env, name)
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"AOS_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        pending, early = _int(env, "AOS_MAX_PENDING_CALLS"), _int(env, "AOS_PENDING_CALLS_EARLY_DROP")
        if pending and early > pending:
            raise ConfigError(f"AOS_PENDING_CALLS_EARLY_DROP ({early}) must be <= AOS_MAX_PENDING_CALLS ({pending})")
        return cls(
            database_url=_get(env, "DATABASE_URL"),
            read_database_url=_get(env, "AOS_READ_DATABASE_URL"),
            service_database_urls={name: _get(env, f"AOS_{name.upper()}_DATABASE_URL")
                                   for name in (*SERVICES, "producer")},
            data_dir=Path(_get(env, "AOS_DATA_DIR") or ".aos").resolve(),
            bind_host=bind_host,
            ports={
                "overview": _int(env, "AOS_OVERVIEW_PORT"),
                "logs": _int(env, "AOS_LOGS_PORT"),
                "export": _int(env, "AOS_EXPORT_PORT"),
                "ingest": _int(env, "AOS_INGEST_PORT"),
                "gateway": _int(env, "AOS_GATEWAY_PORT"),
            },
            addresses={name: _address(env, name, bind_host) for name in SERVICES},
            jwt_secret=_get(env, "AOS_AUTH_JWT_SECRET"),
            jwt_public_key_file=Path(key_file) if key_file else None,
            issuer=_get(env, "AOS_AUTH_ISSUER"),
            audience=_get(env, "AOS_AUTH_AUDIENCE") or "aos-evidence",
            page_token_secret=_get(env, "AOS_PAGE_TOKEN_SECRET"),
            export_signing_key_file=Path(signing_key) if signing_key else None,
            max_token_lifetime_s=_int(env, "AOS_AUTH_MAX_TOKEN_LIFETIME", minimum=1),
            dev_keys=_bool(env, "AOS_DEV_KEYS"),
            export_verification_key_files=tuple(Path(p.strip()) for p in (
                _get(env, "AOS_EXPORT_VERIFICATION_KEY_FILES") or "").split(",") if p.strip()),
            pool_size=_int(env, "AOS_DB_POOL_SIZE", minimum=1),
            workers=_workers(env),
            pool_timeout_s=_int(env, "AOS_DB_POOL_TIMEOUT_S", minimum=1),
            statement_timeout_ms=_int(env, "AOS_DB_STATEMENT_TIMEOUT_MS", minimum=1),
            connect_timeout_s=_int(env, "AOS_DB_CONNECT_TIMEOUT_S", minimum=1),
            migrate_on_start=_bool(env, "AOS_MIGRATE_ON_START"),
            grace_period_s=_int(env, "AOS_GRACE_PERIOD_S"),
            health_probe_interval_s=float(_int(env, "AOS_HEALTH_PROBE_INTERVAL_S", minimum=1)),
            max_message_bytes=_int(env, "AOS_MAX_MESSAGE_BYTES", minimum=1024),
            log_level=level,
            max_inflight=_int(env, "AOS_MAX_INFLIGHT", minimum=1),
            queue_budget_s=_seconds(env, "AOS_QUEUE_BUDGET_S"),
            ingest_inflight_bytes=_int(env, "AOS_INGEST_INFLIGHT_BYTES"),
            ingest_inflight_bytes_per_tenant=_int(env, "AOS_INGEST_INFLIGHT_BYTES_PER_TENANT"),
            otlp_trace_quiet_s=_seconds(env, "AOS_OTLP_TRACE_QUIET_S"),
            shed_lag_s=_seconds(env, "AOS_SHED_LAG_S", zero=True),
            accepted_target_s=_seconds(env, "AOS_ACCEPTED_TARGET_S", zero=True),
            adaptive_inflight_min=_int(env, "AOS_ADAPTIVE_INFLIGHT_MIN"),
            max_pending_calls=_int(env, "AOS_MAX_PENDING_CALLS"),
            pending_calls_early_drop=_int(env, "AOS_PENDING_CALLS_EARLY_DROP"),
            max_unrequested_s=_int(env, "AOS_MAX_UNREQUESTED_S", minimum=1),
            heavy_concurrency=_int(env, "AOS_HEAVY_CONCURRENCY", minimum=1),
            heavy_per_tenant=_int(env, "AOS_HEAVY_PER_TENANT", minimum=1),
            heavy_queue_per_tenant=_int(env, "AOS_HEAVY_QUEUE_PER_TENANT"),
            heavy_queue_budget_s=_seconds(env, "AOS_HEAVY_QUEUE_BUDGET_S"),
            heavy_isolation=_bool(env, "AOS_HEAVY_ISOLATION"),
            heavy_processes=_bool(env, "AOS_HEAVY_PROCESSES"),
            heap_trim=_bool(env, "AOS_HEAP_TRIM"),
            heavy_worker_recycle_mib=_int(env, "AOS_HEAVY_WORKER_RECYCLE_MIB"),
            heavy_nice=_int(env, "AOS_HEAVY_NICE", maximum=19),
            heavy_backend_nice=_bool(env, "AOS_HEAVY_BACKEND_NICE"),
            downloads_per_tenant=_int(env, "AOS_DOWNLOADS_PER_TENANT", minimum=1),
            gateway_header_timeout_s=_int(env, "AOS_GATEWAY_HEADER_TIMEOUT_S", minimum=1),
            gateway_max_connections=_int(env, "AOS_GATEWAY_MAX_CONNECTIONS", minimum=1),
            gateway_http_parser=_http_parser(env),
            log_origin=(_get(env, "AOS_LOG_ORIGIN") or "aos-evidence.local").strip(),
            checkpoint_interval_s=_int(env, "AOS_CHECKPOINT_INTERVAL_S"),
            retention_interval_s=_int(env, "AOS_RETENTION_INTERVAL_S"),
            witness_keys=tuple((_get(env, "AOS_WITNESS_KEYS") or "").replace(",", " ").split()),
            metrics_ports=_metrics_ports(env, _workers(env)),
            export_rate_per_hour=_int(env, "AOS_EXPORT_RATE_PER_HOUR"),
            export_stored_bytes_per_tenant=_int(env, "AOS_EXPORT_STORED_BYTES_PER_TENANT"),
            access_recording=_bool(env, "AOS_ACCESS_RECORDING"),
            access_record_lists=_bool(env, "AOS_ACCESS_RECORD_LISTS"),
            access_flush_ms=_int(env, "AOS_ACCESS_FLUSH_MS", minimum=1),
            trusted_proxies=_networks(env, "AOS_TRUSTED_PROXIES"),
        )
