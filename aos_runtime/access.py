"""Access evidence: the suite's own reads of evidence, recorded in the caller's audit ledger.

Which RPCs are reads of evidence is declared in the contract, next to the scope and
``heavy``: ``option (aos.evidence.v1.access)`` (protos/aos/evidence/v1/options.proto), read
once at start (``access_rules``). The server's call wrapper (aos_runtime.server.CallPolicy)
tells the recorder how each such call ended; no handler knows about it.

- VIEW (one piece of evidence by id: a run's drill-downs, an audit entry, an export, its
  download and verification): ``AccessGranted`` when the call answered (a stream: when its
  first message left), ``AccessDenied`` when it was refused with PERMISSION_DENIED (scope)
  or NOT_FOUND (no such id in the caller's tenant — also what another tenant's id answers).
  Both in the CALLER's tenant: the tenant of the verified token, never the id's owner.
- LIST: the same, only with AOS_ACCESS_RECORD_LISTS. Off by default: a console polls its
  lists, and a list shows what a view then opens (the view is recorded); an entry per page
  would multiply the ledger by the console's refresh rate and record the access panel's own
  reads of itself.
- A call without a verified token is not recorded (there is no tenant to record it in), nor
  one that failed for another reason (bad input, overload, database down): those decide
  nothing about access.

Recording is buffered, off the request path: the call only appends a small tuple to a
bounded in-memory buffer; a background task writes the buffer every ``flush_interval_s``
(or at ``batch_size`` entries), one transaction per tenant, through the database function
``aos_record_access`` (migration 0019: access events only, the session's tenant only; the
database assigns the chain). Hashing (SPEC §5) happens in the flush, on a database thread.
A SIGTERM drains the buffer after the in-flight calls finished (ServiceServer.stop). What a
crash (SIGKILL, power loss) can lose: the entries of the last flush interval and of a flush
in progress — RELIABILITY.md states the window and how it was measured. Nothing is dropped
silently: an entry the database refuses, or one still buffered when a drain finds the
database away, is counted (``aos_access_entries_total{outcome="dropped"}``) and logged. When
the buffer holds ``max_buffered`` entries (the database is slower than the reads, or away),
further reads of evidence are refused with RESOURCE_EXHAUSTED until it has room: fail
closed, no evidence read without its entry.

The cost is the ledger's append rate: every view is one chained entry in its tenant's chain
(one lock per tenant, the Merkle tree with it). On the shared 2-core machine one tenant's
chain took 300–600 entries/s in batches of 500 — about the rate one Logs process answers views
— so a single tenant viewing at full speed fills the buffer and is held to that rate
(BENCHMARKS.md, bench/access_recording.py).

The client's address: the gRPC peer's, or — when the peer is one of AOS_TRUSTED_PROXIES (the
gateway) — the address the gateway passes in ``x-aos-client-ip`` (which it takes from
X-Forwarded-For only when its own peer is a trusted proxy). The user agent likewise: the
gateway's ``x-aos-client-user-agent`` from a trusted peer, else the gRPC ``user-agent``.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
import sqlalchemy.exc
from sqlalchemy import text

from aos.evidence.v1 import options_pb2
from aos_recording import hashing, vocabulary
from aos_recording.writers import AuditLedgerWriter, new_id
from aos_runtime import metrics
from aos_runtime.auth import Principal
from aos_runtime.db import Database
from aos_runtime.headers import CLIENT_IP_HEADER, CLIENT_USER_AGENT_HEADER

log = logging.getLogger("aos.access")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Bounds on what a caller controls and an entry carries.
MAX_ID_CHARS = 256
MAX_USER_AGENT_CHARS = 256
LIST_ENTITY_ID = "*"

# A batch in one statement (one round trip, not one per entry): the function runs once per row,
# in order; the chain trigger assigns each its seq as for single appends. The rows travel as one
# JSON array (one orjson call) rather than eleven bound arrays: psycopg adapting 11 × 500 values
# one by one was most of a flush's Python (bench/access_entry_cost.py). The types are the
# function's; the hash as hex, the time as RFC 3339 with microseconds (the value hashed).
_COLUMNS = ("id", "event_type", "entity_type", "entity_id", "actor_type", "actor_id", "action_reason",
            "correlation_id", "created_at", "after_state", "content_hash")
_TYPES = ("text", "text", "text", "text", "text", "text", "text", "text", "timestamptz", "jsonb", "text")
_APPEND = text(
    "SELECT count(aos_record_access(u.id, u.event_type, u.entity_type, u.entity_id, u.actor_type, u.actor_id, "
    "u.action_reason, u.correlation_id, u.created_at, u.after_state, decode(u.content_hash, 'hex'))) "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
    "AS u(" + ", ".join(f"{c} {t}" for c, t in zip(_COLUMNS, _TYPES, strict=True)) + ")")


@dataclass(frozen=True)
class AccessRule:
    """What a method's ``(aos.evidence.v1.access)`` option says."""
    list: bool          # ACCESS_KIND_LIST (recorded only when configured); else a VIEW
    entity_type: str    # canonical AuditEntityType name
    id_field: str       # the request field naming the entity ("" for a list)


def access_rules(descriptors: Iterable[Any]) -> dict[str, AccessRule]:
    """``/pkg.Service/Method`` → AccessRule for every RPC declaring the option.
    A declaration that names an unknown entity type or request field is a startup error."""
    rules = {}
    for service in descriptors:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(options_pb2.access):
                continue
            access = options.Extensions[options_pb2.access]
            if access.kind == options_pb2.ACCESS_KIND_UNSPECIFIED:
                raise ValueError(f"{method.full_name}: (aos.evidence.v1.access) without a kind")
            if access.entity_type not in vocabulary.AUDIT_ENTITIES:
                raise ValueError(f"{method.full_name}: access entity_type {access.entity_type!r} is not an "
                                 "AuditEntityType canonical name")
            is_list = access.kind == options_pb2.ACCESS_KIND_LIST
            if not is_list:
                field = method.input_type.fields_by_name.get(access.id_field)
                if field is None or field.type != field.TYPE_STRING:
                    raise ValueError(f"{method.full_name}: access id_field {access.id_field!r} is not a string "
                                     f"field of {method.input_type.full_name}")
            rules[f"/{service.full_name}/{method.name}"] = AccessRule(is_list, access.entity_type, access.id_field)
    return rules


def parse_networks(spec: str) -> tuple[Network, ...]:
    """AOS_TRUSTED_PROXIES: comma- or space-separated addresses or CIDR blocks."""
    return tuple(ipaddress.ip_network(part, strict=False) for part in spec.replace(",", " ").split())


def _address(text_: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text_:
        return None
    try:
        return ipaddress.ip_address(text_.strip())
    except ValueError:
        return None


@functools.lru_cache(maxsize=1024)  # one peer string per connection; ipaddress parses in Python
def peer_address(peer: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``); None for a unix socket."""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return _address(rest.rsplit(":", 1)[0])
    if kind == "ipv6":
        return _address(rest.rsplit(":", 1)[0].strip("[]").split("%")[0])
    return None


def _printable(value: str | None, limit: int) -> str | None:
    if not value:
        return None
    # The common case (a printable header) without a generator over its characters: that was
    # a third of what recording a view cost on the event loop (bench/access_entry_cost.py).
    cleaned = value[:limit] if value.isprintable() else "".join(ch for ch in value if ch.isprintable())[:limit]
    return cleaned or None


@dataclass(frozen=True)
class Client:
    ip_address: str | None
    user_agent: str | None


def client_of(peer: str | None, metadata: Sequence[tuple[str, Any]], trusted: Sequence[Network]) -> Client:
    """Who called, as far as the connection proves it (see the module's docstring)."""
    address = peer_address(peer)
    meta = {key: value for key, value in metadata if isinstance(value, str)}
    if address is not None and any(address in network for network in trusted):
        forwarded = _address(meta.get(CLIENT_IP_HEADER))
        if forwarded is not None:
            return Client(str(forwarded), _printable(meta.get(CLIENT_USER_AGENT_HEADER), MAX_USER_AGENT_CHARS))
    return Client(str(address) if address is not None else None,
                  _printable(meta.get("user-agent"), MAX_USER_AGENT_CHARS))


@dataclass(frozen=True)
class _Pending:
    """One access, as the call wrapper saw it; hashed and written by the flush."""
    tenant_id: str
    actor_type: str
    actor_id: str
    granted: bool
    entity_type: str
    entity_id: str
    method: str
    reason: str | None
    client: Client
    request_id: str | None
    at: datetime


class AccessRecorder:
    """Buffers access entries and appends them to the ledger in batches (module docstring)."""

    def __init__(self, db: Database, rules: dict[str, AccessRule], *, record_lists: bool = False,
                 trusted_proxies: Sequence[Network] = (), flush_interval_s: float = 0.2, batch_size: int = 500,
                 max_buffered: int = 10_000, service: str = "") -> None:
        self.db = db
        self.rules = {method: rule for method, rule in rules.items() if record_lists or not rule.list}
        self.trusted_proxies = tuple(trusted_proxies)
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.max_buffered = max_buffered
        self.service = service
        self._buffer: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._buffered_gauge = metrics.access_buffered.labels(service=service)

    def rule(self, method: str) -> AccessRule | None:
        return self.rules.get(method)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def full(self) -> bool:
        """The buffer holds ``max_buffered`` entries: the call wrapper refuses further reads
        (RESOURCE_EXHAUSTED) until the database has taken some — nothing is read unrecorded."""
        return len(self._buffer) >= self.max_buffered

    def record(self, method: str, request: Any, principal: Principal, *, granted: bool, reason: str | None,
               peer: str | None, metadata: Sequence[tuple[str, Any]], request_id: str | None) -> None:
        """Notes one access; never blocks and never raises into the call."""
        rule = self.rules.get(method)
        if rule is None:
            return
        try:
            entity_id = LIST_ENTITY_ID if rule.list else str(getattr(request, rule.id_field, ""))[:MAX_ID_CHARS]
            pending = _Pending(principal.tenant_id, principal.actor_type, principal.actor_id, granted,
                               rule.entity_type, entity_id, method, reason,
                               client_of(peer, metadata, self.trusted_proxies), request_id,
                               datetime.now(timezone.utc))
        except Exception:
            log.exception("access entry not built", extra={"method": method})
            self._dropped(1, "unbuildable")
            return
        # Past max_buffered only by the calls admitted before it filled (the call wrapper
        # refuses reads while it is full): kept, never dropped.
        self._buffer.append(pending)
        self._buffered_gauge.set(len(self._buffer))
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    def _dropped(self, count: int, why: str) -> None:
        metrics.access_entries.labels(service=self.service, outcome="dropped").inc(count)
        log.error("access entries dropped", extra={"count": count, "why": why, "service": self.service})

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.service}-access-recorder")

    async def _run(self) -> None:
        backoff = self.flush_interval_s
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
                backoff = self.flush_interval_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is away: keep the entries, retry later
                backoff = min(5.0, backoff * 2)
                log.warning("access entries not written yet; retrying",
                            extra={"error": type(exc).__name__, "buffered": len(self._buffer), "retry_s": backoff})

    async def flush(self) -> None:
        """Writes what is buffered now, batch by batch. On a database failure the unwritten
        entries go back to the front of the buffer, in order, and the failure is raised."""
        async with self._flushing:
            while self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
                by_tenant: dict[str, list[_Pending]] = {}
                for item in batch:
                    by_tenant.setdefault(item.tenant_id, []).append(item)
                done: set[str] = set()
                try:
                    for tenant, items in by_tenant.items():
                        await self._write(tenant, items)
                        done.add(tenant)
                except BaseException:
                    self._buffer.extendleft(reversed([item for item in batch if item.tenant_id not in done]))
                    raise
                finally:
                    metrics.access_buffered.labels(service=self.service).set(len(self._buffer))

    async def _write(self, tenant: str, items: list[_Pending]) -> None:
        started = time.monotonic()
        try:
            await self.db.run(tenant, _append, items, read_write=True)
        except sqlalchemy.exc.DBAPIError as exc:
            if exc.connection_invalidated or isinstance(exc, sqlalchemy.exc.OperationalError):
                raise  # the database is away: retried
            # Refused by the database (a tenant it has no row for, an entry the function
            # refuses): one at a time, so one bad entry does not take its batch with it.
            for item in items:
                try:
                    await self.db.run(tenant, _append, [item], read_write=True)
                except sqlalchemy.exc.DBAPIError as single:
                    if single.connection_invalidated or isinstance(single, sqlalchemy.exc.OperationalError):
                        raise
                    log.error("access entry refused by the database",
                              extra={"tenant_id": tenant, "method": item.method, "error": type(single.orig).__name__})
                    self._dropped(1, "refused")
                else:
                    metrics.access_entries.labels(service=self.service, outcome="recorded").inc()
            return
        metrics.access_entries.labels(service=self.service, outcome="recorded").inc(len(items))
        metrics.access_flush.labels(service=self.service).observe(time.monotonic() - started)

    async def drain(self) -> None:
        """Stops the background task and writes everything buffered (a SIGTERM's drain).
        What still cannot be written (the database is away) is counted and logged as lost."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001
            lost = len(self._buffer)
            self._buffer.clear()
            if lost:
                log.error("access entries lost at shutdown: the database did not take them",
                          extra={"error": type(exc).__name__})
                self._dropped(lost, "shutdown")


def _entry(item: _Pending) -> dict[str, Any]:
    """The ledger fields of one access (what its content hash covers)."""
    after: dict[str, Any] = {"rpc": item.method, "success": item.granted}
    if item.reason:
        after["failure_reason"] = item.reason
    if item.client.ip_address:
        after["ip_address"] = item.client.ip_address
    if item.client.user_agent:
        after["user_agent"] = item.client.user_agent
    return AuditLedgerWriter.entry(
        tenant_id=item.tenant_id, event_type="AccessGranted" if item.granted else "AccessDenied",
        entity_type=item.entity_type, entity_id=item.entity_id, actor_type=item.actor_type,
        actor_id=item.actor_id or None, action_reason=item.reason or item.method,
        correlation_id=item.request_id, after_state=after, created_at=item.at, entry_id=new_id("acc"))


def _append(conn, items: list[_Pending]) -> None:
    """In one transaction of the items' tenant: hash each entry, append them all in one statement."""
    rows = []
    for item in items:
        entry = _entry(item)
        rows.append({**entry, "created_at": hashing.rfc3339(entry["created_at"]),
                     "content_hash": hashing.ledger_content_hash(entry).hex()})
    written = conn.execute(_APPEND, {"rows": orjson.dumps(rows).decode()}).scalar_one()
    if written != len(items):
        raise RuntimeError(f"aos_record_access appended {written} of {len(items)} entries")
