"""Producer library: how other services write evidence (seed 003 sections 5.2 and 6.1).

Every writer works on a SQLAlchemy ``Connection`` inside a transaction the caller
owns (``Producer.transaction``), so a producer can record a step, the violation it
caused and the audit entry that follows atomically. Writers compute content
hashes (``aos_recording.hashing``); the database assigns ledger chains and
``recorded_at``. Writes the seeds call idempotent are keyed: a retry with the same
content is a no-op, a different content under the same key is refused
(``EvidenceConflict``), never overwritten. The key is a unique index
(``ON CONFLICT DO NOTHING``, then compare) or, on the partitioned system_records and
aos_trace_steps, a trigger (migrations 0009, 0011) that skips the same content and refuses
other content with 23505; each such write runs in a savepoint, so a refusal leaves
the caller's transaction usable.
"""
from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Row, make_url
from sqlalchemy.exc import IntegrityError

from aos_recording import hashing, vocabulary
from aos_recording.logins import login_problems


class EvidenceConflict(Exception):
    """The key exists with different content: evidence is never overwritten."""


def now() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(hashing._plain(value))


# AuditLedgerWriter.append_many_once: a batch of entries in one statement, inserted in the
# batch's order (ORDER BY the arrays' ordinality), each row's chain assigned by the trigger.
_LEDGER_COLUMNS = ("id", "tenant_id", "event_type", "entity_type", "entity_id", "actor_type", "actor_id",
                   "action_reason", "correlation_id", "created_at", "before_state", "after_state", "content_hash",
                   "hash_version", "commitments")
_LEDGER_TYPES = ("text", "text", "text", "text", "text", "text", "text", "text", "text", "timestamptz", "text",
                 "text", "bytea", "smallint", "text")
_LEDGER_INSERT_MANY = text(
    "INSERT INTO audit_ledger (" + ", ".join(_LEDGER_COLUMNS) + ", is_synthetic, synthetic_scenario_id) "
    "SELECT u.id, u.tenant_id, u.event_type, u.entity_type, u.entity_id, u.actor_type, u.actor_id, "
    "u.action_reason, u.correlation_id, u.created_at, CAST(u.before_state AS jsonb), CAST(u.after_state AS jsonb), "
    "u.content_hash, u.hash_version, CAST(u.commitments AS jsonb), :is_synthetic, :synthetic_scenario_id "
    "FROM unnest(" + ", ".join(f"CAST(:{c} AS {t}[])" for c, t in zip(_LEDGER_COLUMNS, _LEDGER_TYPES, strict=True))
    + ") WITH ORDINALITY AS u(" + ", ".join(_LEDGER_COLUMNS) + ", ord) ORDER BY u.ord "
    "RETURNING id, seq, prev_hash, chain_hash")


def _check(value: str | None, allowed: frozenset[str], name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not one of {sorted(allowed)}")


def _stored_salts(conn: Connection, tenant_id: str, record_type: str, record_id: str) -> dict[str, bytes]:
    """The salts a v2 record's payloads were committed with, if it was written before (a retry
    recomputes the same commitments, so the same content hash; an erased field has none)."""
    rows = conn.execute(text("SELECT field, salt FROM evidence_payloads WHERE tenant_id = :t AND record_type = :k "
                             "AND record_id = :r"), {"t": tenant_id, "k": record_type, "r": record_id}).all()
    return {row.field: bytes(row.salt) for row in rows}


def _commit_v2(conn: Connection, tenant_id: str, record_type: str, record_id: str, record: Mapping[str, Any],
               payload_fields: tuple[str, ...]) -> tuple[dict[str, str], dict[str, bytes]]:
    return hashing.commit_payloads(record, payload_fields, _stored_salts(conn, tenant_id, record_type, record_id))


_PAYLOAD_INSERT = text(
    "INSERT INTO evidence_payloads (tenant_id, record_type, record_id, field, subject_id, run_id, salt, "
    "payload) VALUES (:t, :k, :r, :f, :s, :run, :salt, CAST(:payload AS jsonb)) ON CONFLICT DO NOTHING")


def _payload_rows(*, tenant_id: str, record_type: str, record_id: str, subject_id: str, run_id: str | None,
                  record: Mapping[str, Any], salts: Mapping[str, bytes]) -> list[dict[str, Any]]:
    return [{"t": tenant_id, "k": record_type, "r": record_id, "f": field, "s": subject_id, "run": run_id,
             "salt": salt, "payload": json.dumps(hashing._plain(record[field]))} for field, salt in salts.items()]


def _store_payloads(conn: Connection, **fields: Any) -> None:
    """A v2 record's payloads and salts, in the erasable side table (docs/ERASURE.md). Written
    once: a retry's identical rows are skipped (the record's content hash already matched)."""
    rows = _payload_rows(**fields)
    if rows:
        conn.execute(_PAYLOAD_INSERT, rows)


def _check_subject(data_subject: str) -> None:
    if not data_subject or len(data_subject) > 256:
        raise ValueError("data_subject must be a non-empty id of at most 256 characters")


@dataclass(frozen=True)
class Synthetic:
    """Marks every row a writer writes as synthetic, with the scenario that wrote it."""
    scenario_id: str


PRODUCER_ROLE = "aos_producer"


class UnsafeProducerLogin(ValueError):
    """The producer's DSN logs in as something other than the bare aos_producer role."""


def check_producer_login(dbapi_conn: Any) -> None:  # the DBAPI (psycopg) connection SQLAlchemy connects
    """Raises UnsafeProducerLogin unless the session (a psycopg connection) is aos_producer's
    login and can become nothing else: no superuser or other role attribute, no membership
    in any role (so no SET ROLE), owner of nothing."""
    problems = login_problems(dbapi_conn, PRODUCER_ROLE)
    if problems:
        raise UnsafeProducerLogin(f"the producer refuses its database login: it {'; '.join(problems)}. Use the "
                                  f"DSN of the login role {PRODUCER_ROLE} (AOS_PRODUCER_DATABASE_URL)")


def _engine_url(url: str) -> str:
    """The SQLAlchemy URL for psycopg 3 (``postgresql://`` → ``postgresql+psycopg://``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"the producer's DSN must be a postgresql:// URL, got {parsed.drivername!r}")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


class Producer:
    """Connections as the ``aos_producer`` login role, each transaction scoped to one tenant.

    ``url`` is that role's own DSN: a superuser's, the owner's or any login that could switch
    to another role is refused at the first connection (and every new one)."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.engine = create_engine(_engine_url(url), pool_size=pool_size, max_overflow=0,
                                    connect_args={"application_name": "aos-producer"})

        @event.listens_for(self.engine, "connect")
        def _check(dbapi_conn: Any, _record: Any) -> None:
            try:
                check_producer_login(dbapi_conn)
            finally:
                dbapi_conn.rollback()

        # Also before SQLAlchemy's own first queries (first_connect runs ahead of "connect"):
        # a stored search_path = pg_temp would fail them with a bare privilege error.
        event.listen(self.engine, "first_connect", _check, insert=True)

    @contextlib.contextmanager
    def transaction(self, tenant_id: str | None) -> Iterator[Connection]:
        """A transaction acting for ``tenant_id`` (None: system-wide records only)."""
        with self.engine.begin() as conn:
            conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant_id or ""})
            yield conn

    def close(self) -> None:
        self.engine.dispose()


class _Writer:
    def __init__(self, conn: Connection, *, synthetic: Synthetic | None = None) -> None:
        self.conn = conn
        self.synthetic = synthetic

    def _marks(self) -> dict[str, Any]:
        return {"is_synthetic": self.synthetic is not None,
                "synthetic_scenario_id": self.synthetic.scenario_id if self.synthetic else None}


@dataclass(frozen=True)
class LedgerEntry:
    id: str
    seq: int
    content_hash: bytes
    prev_hash: bytes
    chain_hash: bytes


class AuditLedgerWriter(_Writer):
    """Appends canonical audit events (INV-LOGS-002: anything else is refused)."""

    @staticmethod
    def entry(*, tenant_id: str, event_type: str, entity_type: str, entity_id: str, actor_type: str,
              actor_id: str | None = None, action_reason: str | None = None, correlation_id: str | None = None,
              before_state: Mapping[str, Any] | None = None, after_state: Mapping[str, Any] | None = None,
              created_at: datetime | None = None, entry_id: str | None = None) -> dict[str, Any]:
        """The entry's canonical fields (what its content hash covers), checked against the vocabulary."""
        _check(event_type, vocabulary.AUDIT_EVENTS, "event_type")
        _check(entity_type, vocabulary.AUDIT_ENTITIES, "entity_type")
        _check(actor_type, vocabulary.ACTOR_TYPES, "actor_type")
        return {"id": entry_id or new_id("aud"), "tenant_id": tenant_id, "event_type": event_type,
                "entity_type": entity_type, "entity_id": entity_id, "actor_type": actor_type,
                "actor_id": actor_id, "action_reason": action_reason, "correlation_id": correlation_id,
                "created_at": created_at or now(), "before_state": before_state, "after_state": after_state}

    def append(self, *, data_subject: str | None = None, **fields: Any) -> LedgerEntry:
        """Appends the entry ``entry(**fields)`` describes; the database assigns seq and chain.

        ``data_subject``: the entry is written in hash format v2 (docs/ERASURE.md): its
        action_reason, before_state and after_state are committed by salted digest and stored,
        with their salts, in evidence_payloads under that subject, erasable."""
        entry = self.entry(**fields)
        if data_subject is None:
            return self._insert(entry, hashing.ledger_content_hash(entry))
        return self._insert(entry, *self._v2(entry, data_subject))

    def _v2(self, entry: Mapping[str, Any], data_subject: str) -> tuple[bytes, dict[str, str], dict[str, bytes], str]:
        _check_subject(data_subject)
        commitments, salts = _commit_v2(self.conn, entry["tenant_id"], "audit_entry", entry["id"], entry,
                                        hashing.LEDGER_PAYLOAD_FIELDS)
        return hashing.ledger_content_hash_v2(entry, commitments), commitments, salts, data_subject

    def hold_producer_ids(self, tenant_id: str) -> None:
        """Serialises appends under producer-chosen ids in ``tenant_id`` until the transaction
        ends (``append_once``'s look-up-then-insert must not race another's). One lock per
        tenant, taken before any append of the transaction: the chain trigger's own lock comes
        after it, always in that order, so no two transactions wait on each other in a cycle."""
        self.conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('aos_ledger_ids:' || :t, 0))"),
                          {"t": tenant_id})

    def append_once(self, **fields: Any) -> tuple[LedgerEntry, bool]:
        """Appends the entry unless its id (``entry_id``, required) is recorded in the tenant:
        (the entry, True) when appended; (the recorded one, False) when recorded with the same
        content (a retry). EvidenceConflict when recorded with other content: never overwritten.
        The caller holds ``hold_producer_ids`` for the tenant."""
        if not fields.get("entry_id"):
            raise ValueError("append_once needs the producer's entry_id")
        data_subject = fields.pop("data_subject", None)
        entry = self.entry(**fields)
        v2 = self._v2(entry, data_subject) if data_subject is not None else None
        content = v2[0] if v2 else hashing.ledger_content_hash(entry)
        stored = self.conn.execute(text(
            "SELECT seq, content_hash, prev_hash, chain_hash FROM audit_ledger WHERE tenant_id = :t AND id = :id "
            "LIMIT 1"), {"t": entry["tenant_id"], "id": entry["id"]}).first()
        if stored is None:
            return (self._insert(entry, *v2) if v2 else self._insert(entry, content)), True
        if bytes(stored.content_hash) != content:
            raise EvidenceConflict(f"audit entry {entry['id']!r}: already recorded with different content")
        return LedgerEntry(entry["id"], stored.seq, content, bytes(stored.prev_hash), bytes(stored.chain_hash)), False

    def append_many_once(self, items: Sequence[Mapping[str, Any]]) -> list[tuple[LedgerEntry, bool] | EvidenceConflict]:
        """``append_once`` for each item's fields, in order, in two statements for the batch
        (one look-up of the recorded ids, one INSERT of the new entries in request order; the
        chain trigger assigns each its seq as for single appends) instead of two per entry.
        Each answer is what ``append_once`` returns, or the EvidenceConflict it would raise;
        an id twice in the batch is the first's retry (or a conflict) as if sent again.
        An item with ``data_subject`` is written in hash format v2, as ``append_once`` writes it
        (its payloads and salts in evidence_payloads; a retry reuses the stored salts, and an id
        twice in the batch the first's). The caller holds ``hold_producer_ids`` for the tenant."""
        entries = []
        v2s: dict[str, tuple[dict[str, Any], dict[str, str], dict[str, bytes], str]] = {}  # id -> first v2 item's
        for item in items:
            if not item.get("entry_id"):
                raise ValueError("append_many_once needs the producer's entry_id of every item")
            fields = dict(item)
            data_subject = fields.pop("data_subject", None)
            entry = self.entry(**fields)
            if data_subject is None:
                entries.append((entry, hashing.ledger_content_hash(entry)))
                continue
            _check_subject(data_subject)
            first = v2s.get(entry["id"])
            if first is None:
                commitments, salts = _commit_v2(self.conn, entry["tenant_id"], "audit_entry", entry["id"], entry,
                                                hashing.LEDGER_PAYLOAD_FIELDS)
                v2s[entry["id"]] = (entry, commitments, salts, data_subject)
            else:
                commitments, _ = hashing.commit_payloads(entry, hashing.LEDGER_PAYLOAD_FIELDS, first[2])
            entries.append((entry, hashing.ledger_content_hash_v2(entry, commitments)))
        if not entries:
            return []
        tenants = {entry["tenant_id"] for entry, _ in entries}
        if len(tenants) != 1:
            raise ValueError("append_many_once appends to one tenant")
        tenant = tenants.pop()
        recorded: dict[str, LedgerEntry] = {}
        for row in self.conn.execute(text(
                "SELECT id, seq, content_hash, prev_hash, chain_hash FROM audit_ledger "
                "WHERE tenant_id = :t AND id = ANY(CAST(:ids AS text[]))"),
                {"t": tenant, "ids": [entry["id"] for entry, _ in entries]}):
            recorded[row.id] = LedgerEntry(row.id, row.seq, bytes(row.content_hash), bytes(row.prev_hash),
                                           bytes(row.chain_hash))
        new: dict[str, tuple[dict[str, Any], bytes]] = {}
        for entry, content in entries:
            if entry["id"] not in recorded and entry["id"] not in new:
                new[entry["id"]] = (entry, content)
        if new:
            columns: dict[str, list[Any]] = {c: [] for c in _LEDGER_COLUMNS}
            for fresh, fresh_hash in new.values():
                v2 = v2s.get(fresh["id"])
                if v2 is not None and v2[0] is not fresh:
                    v2 = None  # a v1 item first under this id: the v2 one after it is its conflict
                values = {**fresh, "before_state": _json(fresh["before_state"]),
                          "after_state": _json(fresh["after_state"]), "content_hash": fresh_hash,
                          "hash_version": 1, "commitments": None}
                if v2 is not None:  # v2: the payloads go to evidence_payloads, never into the row
                    values.update({f: None for f in hashing.LEDGER_PAYLOAD_FIELDS},
                                  hash_version=hashing.HASH_V2, commitments=_json(v2[1]))
                for column in _LEDGER_COLUMNS:
                    columns[column].append(values[column])
            for inserted in self.conn.execute(_LEDGER_INSERT_MANY, {**columns, **self._marks()}):
                recorded[inserted.id] = LedgerEntry(inserted.id, inserted.seq, new[inserted.id][1],
                                                    bytes(inserted.prev_hash), bytes(inserted.chain_hash))
            for entry_id, (fresh, _) in new.items():
                v2 = v2s.get(entry_id)
                if v2 is not None and v2[0] is fresh:
                    _store_payloads(self.conn, tenant_id=tenant, record_type="audit_entry", record_id=entry_id,
                                    subject_id=v2[3], run_id=fresh.get("correlation_id"), record=fresh,
                                    salts=v2[2])
        answers: list[tuple[LedgerEntry, bool] | EvidenceConflict] = []
        created: set[str] = set()
        for entry, content in entries:
            stored = recorded[entry["id"]]
            if stored.content_hash != content:
                answers.append(EvidenceConflict(f"audit entry {entry['id']!r}: already recorded with different "
                                                "content"))
            elif entry["id"] in new and entry["id"] not in created:
                created.add(entry["id"])
                answers.append((stored, True))
            else:
                answers.append((stored, False))
        return answers

    def _insert(self, entry: Mapping[str, Any], content: bytes, commitments: Mapping[str, str] | None = None,
                salts: Mapping[str, bytes] | None = None, data_subject: str | None = None) -> LedgerEntry:
        payload_entry = entry
        if commitments is not None:  # v2: the payloads go to evidence_payloads, never into the row
            entry = {**entry, **{f: None for f in hashing.LEDGER_PAYLOAD_FIELDS}}
        before_state, after_state = entry["before_state"], entry["after_state"]
        # A v1 row names no v2 column: it is written exactly as before migration 0022.
        v2_columns, v2_values = (", hash_version, commitments", ", 2, CAST(:commitments AS jsonb)") \
            if commitments is not None else ("", "")
        row = self.conn.execute(text(
            "INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, actor_id, "
            "action_reason, correlation_id, created_at, before_state, after_state, content_hash, "
            f"is_synthetic, synthetic_scenario_id{v2_columns}) VALUES (:id, :tenant_id, :event_type, "
            ":entity_type, :entity_id, :actor_type, :actor_id, :action_reason, :correlation_id, :created_at, "
            "CAST(:before_state AS jsonb), CAST(:after_state AS jsonb), :content_hash, :is_synthetic, "
            f":synthetic_scenario_id{v2_values}) RETURNING seq, prev_hash, chain_hash"),
            {**entry, "before_state": _json(before_state), "after_state": _json(after_state),
             "content_hash": content, **self._marks(), "commitments": _json(commitments)}).one()
        if commitments is not None and salts is not None and data_subject is not None:
            _store_payloads(self.conn, tenant_id=entry["tenant_id"], record_type="audit_entry", record_id=entry["id"],
                            subject_id=data_subject, run_id=entry.get("correlation_id"), record=payload_entry,
                            salts=salts)
        return LedgerEntry(entry["id"], row.seq, content, bytes(row.prev_hash), bytes(row.chain_hash))


@dataclass(frozen=True)
class Recorded:
    """A keyed write's outcome: the stored id, its content hash, and whether this write stored it."""
    id: str
    content_hash: bytes
    created: bool


class SystemRecordWriter(_Writer):
    """Platform events; ``tenant_id=None`` writes a system-wide record every tenant sees
    (``platform_records``, migration 0011), a tenant's go to ``system_records``.

    Pass ``record_id`` (and ``created_at``) to make a retry idempotent: an id is recorded
    once per tenant, and once among the system-wide records.
    """

    def write(self, *, tenant_id: str | None, component: str, event_type: str, severity: str, summary: str,
              details: Mapping[str, Any] | None = None, caused_by: str = "SYSTEM", actor_id: str | None = None,
              correlation_id: str | None = None, run_id: str | None = None, environment_id: str | None = None,
              created_at: datetime | None = None, record_id: str | None = None,
              request_id: str | None = None) -> str:
        return self.record(tenant_id=tenant_id, component=component, event_type=event_type, severity=severity,
                           summary=summary, details=details, caused_by=caused_by, actor_id=actor_id,
                           correlation_id=correlation_id, run_id=run_id, environment_id=environment_id,
                           created_at=created_at, record_id=record_id, request_id=request_id).id

    def record(self, *, tenant_id: str | None, component: str, event_type: str, severity: str, summary: str,
               details: Mapping[str, Any] | None = None, caused_by: str = "SYSTEM", actor_id: str | None = None,
               correlation_id: str | None = None, run_id: str | None = None, environment_id: str | None = None,
               created_at: datetime | None = None, record_id: str | None = None,
               request_id: str | None = None, data_subject: str | None = None) -> Recorded:
        """``write`` that also says whether this call stored the record (False: a retry of it).
        ``request_id`` (migration 0019) is stored beside the record, outside its content hash.
        ``data_subject`` (a tenant's record only): hash format v2, summary and details committed
        and kept erasable in evidence_payloads (docs/ERASURE.md)."""
        _check(event_type, vocabulary.SYSTEM_EVENT_TYPES, "event_type")
        _check(severity, vocabulary.SYSTEM_SEVERITIES, "severity")
        _check(caused_by, vocabulary.CAUSED_BY, "caused_by")
        record = {"id": record_id or new_id("sys"), "tenant_id": tenant_id, "component": component,
                  "event_type": event_type, "severity": severity, "summary": summary, "details": details,
                  "caused_by": caused_by, "actor_id": actor_id, "correlation_id": correlation_id,
                  "run_id": run_id, "environment_id": environment_id, "created_at": created_at or now()}
        table, key = ("platform_records", ("id",)) if tenant_id is None else ("system_records", ("tenant_id", "id"))
        row: dict[str, Any]
        if data_subject is None:
            content = hashing.system_record_content_hash(record)
            row = record
        else:
            _check_subject(data_subject)
            if tenant_id is None:
                raise ValueError("a system-wide record has no data subject: it is written in hash format v1")
            commitments, salts = _commit_v2(self.conn, tenant_id, "system_record", str(record["id"]), record,
                                            hashing.SYSTEM_RECORD_PAYLOAD_FIELDS)
            content = hashing.system_record_content_hash_v2(record, commitments)
            row = {**record, "summary": "", "details": None, "hash_version": hashing.HASH_V2,
                   "commitments": commitments}
        if request_id is not None:  # not a hashed field (SPEC §5); only written when given
            row["request_id"] = request_id
        stored, created = _insert_once(self.conn, table, key, row, content, self._marks(),
                                       jsonb=("details", "commitments") if data_subject else ("details",))
        if data_subject is not None and created:
            _store_payloads(self.conn, tenant_id=str(tenant_id), record_type="system_record", record_id=stored,
                            subject_id=data_subject, run_id=run_id, record=record, salts=salts)
        return Recorded(stored, content, created)


class LlmRunRecordWriter(_Writer):
    """The canonical record of a finished LLM run; one per (tenant, run), written once."""

    def write(self, *, tenant_id: str, run_id: str, provider: str, model: str, execution_status: str,
              started_at: datetime, completed_at: datetime | None = None, trace_id: str | None = None,
              agent_id: str | None = None, project_id: str | None = None, executor_type: str = "LLM",
              outcome: str | None = None, termination_reason: str | None = None, input_tokens: int = 0,
              output_tokens: int = 0, cost_cents: int = 0, source: str = "worker",
              created_at: datetime | None = None, record_id: str | None = None) -> str:
        return self.record(tenant_id=tenant_id, run_id=run_id, provider=provider, model=model,
                           execution_status=execution_status, started_at=started_at, completed_at=completed_at,
                           trace_id=trace_id, agent_id=agent_id, project_id=project_id, executor_type=executor_type,
                           outcome=outcome, termination_reason=termination_reason, input_tokens=input_tokens,
                           output_tokens=output_tokens, cost_cents=cost_cents, source=source,
                           created_at=created_at, record_id=record_id).id

    def record(self, *, tenant_id: str, run_id: str, provider: str, model: str, execution_status: str,
               started_at: datetime, completed_at: datetime | None = None, trace_id: str | None = None,
               agent_id: str | None = None, project_id: str | None = None, executor_type: str = "LLM",
               outcome: str | None = None, termination_reason: str | None = None, input_tokens: int = 0,
               output_tokens: int = 0, cost_cents: int = 0, source: str = "worker",
               created_at: datetime | None = None, record_id: str | None = None) -> Recorded:
        """``write`` that also says whether this call stored the record (False: a retry of it)."""
        record = self.row(tenant_id=tenant_id, run_id=run_id, provider=provider, model=model,
                          execution_status=execution_status, started_at=started_at, completed_at=completed_at,
                          trace_id=trace_id, agent_id=agent_id, project_id=project_id, executor_type=executor_type,
                          outcome=outcome, termination_reason=termination_reason, input_tokens=input_tokens,
                          output_tokens=output_tokens, cost_cents=cost_cents, source=source,
                          created_at=created_at, record_id=record_id)
        content = hashing.llm_run_content_hash(record)
        stored, created = _insert_once(self.conn, "llm_run_records", ("tenant_id", "run_id"), record, content,
                                       self._marks())
        return Recorded(stored, content, created)

    @staticmethod
    def row(*, tenant_id: str, run_id: str, provider: str, model: str, execution_status: str,
            started_at: datetime, completed_at: datetime | None = None, trace_id: str | None = None,
            agent_id: str | None = None, project_id: str | None = None, executor_type: str = "LLM",
            outcome: str | None = None, termination_reason: str | None = None, input_tokens: int = 0,
            output_tokens: int = 0, cost_cents: int = 0, source: str = "worker",
            created_at: datetime | None = None, record_id: str | None = None) -> dict[str, Any]:
        """The run record's row (its hashed fields and id), checked against the vocabulary: what
        ``record`` writes, and what a writer of many runs at once (services/ingest) writes."""
        _check(execution_status, vocabulary.LLM_RUN_STATUSES, "execution_status")
        _check(executor_type, vocabulary.EXECUTOR_TYPES, "executor_type")
        _check(outcome, vocabulary.OUTCOMES, "outcome", optional=True)
        # Deterministic defaults, so a retry of the same run writes the same content.
        record_id = record_id or "llm_" + hashing.sha256(f"{tenant_id}:{run_id}".encode()).hex()[:32]
        return {"id": record_id, "tenant_id": tenant_id, "run_id": run_id, "trace_id": trace_id,
                "agent_id": agent_id, "project_id": project_id, "provider": provider, "model": model,
                "execution_status": execution_status, "executor_type": executor_type, "outcome": outcome,
                "termination_reason": termination_reason, "input_tokens": input_tokens,
                "output_tokens": output_tokens, "cost_cents": cost_cents, "source": source,
                "started_at": started_at, "completed_at": completed_at,
                "created_at": created_at or completed_at or started_at}

    @staticmethod
    def conflict(tenant_id: str, run_id: str) -> EvidenceConflict:
        """What ``record`` raises for a run recorded with other content."""
        return _refused("llm_run_records", {"tenant_id": tenant_id, "run_id": run_id})


def _refused(table: str, key: Mapping[str, Any]) -> EvidenceConflict:
    return EvidenceConflict(f"{table} {dict(key)}: already recorded with different content")


def _insert_once(conn: Connection, table: str, key: tuple[str, ...], record: Mapping[str, Any], content: bytes,
                 marks: Mapping[str, Any], jsonb: tuple[str, ...] = ()) -> tuple[str, bool]:
    """INSERT … ON CONFLICT DO NOTHING; on conflict the stored content must equal ours.

    Returns the id of the stored row and whether this call inserted it: (ours, True), or
    (the identical one an earlier try wrote, False).
    """
    columns = [*record, "content_hash", *marks]
    values = [f"CAST(:{c} AS jsonb)" if c in jsonb else f":{c}" for c in columns]
    params = {**record, **{c: _json(record[c]) for c in jsonb}, "content_hash": content, **marks}
    refused = _refused(table, {c: record[c] for c in key})
    inserted = _insert_or_refused(conn, f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(values)}) "
                                  "ON CONFLICT DO NOTHING RETURNING id", params, refused)
    if inserted is not None:
        return str(inserted.id), True
    where = " AND ".join(f"{c} = :{c}" for c in key)
    existing = conn.execute(text(f"SELECT id, content_hash FROM {table} WHERE {where}"), params).first()
    if existing is None or bytes(existing.content_hash) != content:
        # None: the key is taken by a row this tenant cannot see — still a conflict, never a leak.
        raise refused
    return str(existing.id), False


# TraceRecorder.add_new_steps: a new trace's steps in one statement, in index order.
_STEP_COLUMNS = ("id", "step_index", "step_type", "level", "source", "timestamp", "tokens", "cost_cents",
                 "duration_ms", "input_data", "output_data", "metadata", "content_hash", "hash_version", "commitments")
_STEP_JSONB = frozenset({"input_data", "output_data", "metadata", "commitments"})
_STEP_TYPES = ("text", "int", "text", "text", "text", "timestamptz", "bigint", "bigint", "bigint", "text", "text",
               "text", "bytea", "smallint", "text")
_STEPS_INSERT_MANY = text(
    "INSERT INTO aos_trace_steps (id, trace_id, tenant_id, step_index, step_type, level, source, \"timestamp\", "
    "tokens, cost_cents, duration_ms, input_data, output_data, metadata, content_hash, hash_version, commitments) "
    "SELECT u.id, :trace_id, :tenant_id, u.step_index, u.step_type, u.level, u.source, u.timestamp, u.tokens, "
    "u.cost_cents, u.duration_ms, CAST(u.input_data AS jsonb), CAST(u.output_data AS jsonb), "
    "CAST(u.metadata AS jsonb), u.content_hash, u.hash_version, CAST(u.commitments AS jsonb) "
    "FROM unnest(" + ", ".join(f"CAST(:{c} AS {t}[])" for c, t in zip(_STEP_COLUMNS, _STEP_TYPES, strict=True))
    + ") AS u(" + ", ".join(_STEP_COLUMNS) + ") ORDER BY u.step_index")


def _insert_or_refused(conn: Connection, sql: str, params: Mapping[str, Any],
                       refused: EvidenceConflict) -> Row[Any] | None:
    """The inserted row (None: skipped, the key holds the same content or a unique index
    said DO NOTHING); ``refused`` when a key trigger refused other content (23505)."""
    try:
        with conn.begin_nested():
            return conn.execute(text(sql), params).first()
    except IntegrityError as err:
        if getattr(err.orig, "sqlstate", None) == "23505":
            raise refused from err
        raise


class TraceRecorder(_Writer):
    """A run's trace: created running, steps appended, a violation marked once, completed once."""

    def create_trace(self, *, tenant_id: str, run_id: str, trace_id: str | None = None,
                     agent_id: str | None = None, started_at: datetime | None = None,
                     policy_snapshot_id: str | None = None, policy_snapshot: Mapping[str, Any] | None = None) -> str:
        trace_id = trace_id or new_id("trace")
        self.conn.execute(text(
            "INSERT INTO aos_traces (trace_id, tenant_id, run_id, agent_id, started_at, policy_snapshot_id, "
            "policy_snapshot, is_synthetic, synthetic_scenario_id) VALUES (:trace_id, :tenant_id, :run_id, "
            ":agent_id, :started_at, :policy_snapshot_id, CAST(:policy_snapshot AS jsonb), :is_synthetic, "
            ":synthetic_scenario_id) ON CONFLICT (tenant_id, trace_id) DO NOTHING"),
            {"trace_id": trace_id, "tenant_id": tenant_id, "run_id": run_id, "agent_id": agent_id,
             "started_at": started_at or now(), "policy_snapshot_id": policy_snapshot_id,
             "policy_snapshot": _json(policy_snapshot), **self._marks()})
        return trace_id

    def add_step(self, *, tenant_id: str, trace_id: str, step_index: int, step_type: str, timestamp: datetime,
                 input_data: Any = None, output_data: Any = None, metadata: Mapping[str, Any] | None = None,
                 level: str = "info", source: str = "agent", tokens: int = 0, cost_cents: int = 0,
                 duration_ms: int = 0, step_id: str | None = None, data_subject: str | None = None) -> bytes:
        """Idempotent on (trace_id, step_index). Returns the step's content hash.

        ``data_subject``: hash format v2 (docs/ERASURE.md): input_data and output_data are
        committed and kept erasable in evidence_payloads under record id ``<trace_id>/<step_index>``."""
        _check(step_type, vocabulary.STEP_TYPES, "step_type")
        _check(level, vocabulary.STEP_LEVELS, "level")
        step = {"step_index": step_index, "step_type": step_type, "input_data": input_data,
                "output_data": output_data, "timestamp": timestamp}
        commitments: dict[str, str] | None = None
        if data_subject is None:
            content = hashing.step_content_hash(step)
        else:
            _check_subject(data_subject)
            record_id = f"{trace_id}/{step_index}"
            commitments, salts = _commit_v2(self.conn, tenant_id, "trace_step", record_id, step,
                                            hashing.STEP_PAYLOAD_FIELDS)
            content = hashing.step_content_hash_v2(step, commitments)
        # The step trigger skips the same content under a taken step_index (a retry)
        # and refuses other content.
        _insert_or_refused(
            self.conn,
            "INSERT INTO aos_trace_steps (id, trace_id, tenant_id, step_index, step_type, level, source, "
            "\"timestamp\", tokens, cost_cents, duration_ms, input_data, output_data, metadata, content_hash"
            + (", hash_version, commitments" if commitments is not None else "") + ") "
            "VALUES (:id, :trace_id, :tenant_id, :step_index, :step_type, :level, :source, :timestamp, :tokens, "
            ":cost_cents, :duration_ms, CAST(:input_data AS jsonb), CAST(:output_data AS jsonb), "
            "CAST(:metadata AS jsonb), :content_hash"
            + (", 2, CAST(:commitments AS jsonb)" if commitments is not None else "") + ") RETURNING id",
            {"id": step_id or new_id("step"), "trace_id": trace_id, "tenant_id": tenant_id,
             "step_index": step_index, "step_type": step_type, "level": level, "source": source,
             "timestamp": timestamp, "tokens": tokens, "cost_cents": cost_cents, "duration_ms": duration_ms,
             "input_data": None if commitments is not None else _json(input_data),
             "output_data": None if commitments is not None else _json(output_data), "metadata": _json(metadata),
             "content_hash": content, "commitments": _json(commitments)},
            EvidenceConflict(f"trace {trace_id} step {step_index}: already recorded with different content"))
        if commitments is not None and data_subject is not None:
            run_id = self.conn.execute(text("SELECT run_id FROM aos_traces WHERE trace_id = :t"),
                                       {"t": trace_id}).scalar()
            _store_payloads(self.conn, tenant_id=tenant_id, record_type="trace_step", record_id=record_id,
                            subject_id=data_subject, run_id=run_id, record=step, salts=salts)
        return content

    def add_new_steps(self, *, tenant_id: str, trace_id: str, steps: Sequence[Mapping[str, Any]]) -> list[bytes]:
        """``add_step`` for each of ``steps`` (its fields; the index is the position), in one
        statement: for a trace created in this transaction, which holds no step yet (so there
        is no retry to skip and no other content to refuse, and no savepoint per step is
        needed). Returns the steps' content hashes."""
        if not steps:
            return []
        columns: dict[str, list[Any]] = {c: [] for c in _STEP_COLUMNS}
        hashes = []
        erasable: list[tuple[str, str, dict[str, Any], dict[str, bytes]]] = []  # (record id, subject, step, salts)
        for index, fields in enumerate(steps):
            step = {"step_index": index, "step_type": fields["step_type"], "input_data": fields.get("input_data"),
                    "output_data": fields.get("output_data"), "timestamp": fields["timestamp"]}
            subject = fields.get("data_subject")
            commitments: dict[str, str] | None = None
            if subject is None:
                content = hashing.step_content_hash(step)
            else:
                # Hash format v2 (docs/ERASURE.md), as add_step writes it: fresh salts (the trace
                # is new), the payloads in the erasable side table, the row's payload columns empty.
                _check_subject(subject)
                commitments, salts = hashing.commit_payloads(step, hashing.STEP_PAYLOAD_FIELDS)
                content = hashing.step_content_hash_v2(step, commitments)
                erasable.append((f"{trace_id}/{index}", subject, step, salts))
            hashes.append(content)
            row = self.step_row(fields, index, content)
            if commitments is not None:
                row.update(input_data=None, output_data=None)
            row.update(hash_version=hashing.HASH_V1 if commitments is None else hashing.HASH_V2,
                       commitments=commitments)
            for column in _STEP_COLUMNS:
                value = row[column]
                columns[column].append(_json(value) if column in _STEP_JSONB else value)
        written = self.conn.execute(_STEPS_INSERT_MANY, {**columns, "trace_id": trace_id,
                                                         "tenant_id": tenant_id}).rowcount
        if written != len(steps):
            raise EvidenceConflict(f"trace {trace_id}: {len(steps) - written} of its steps were already recorded")
        if erasable:
            run_id = self.conn.execute(text("SELECT run_id FROM aos_traces WHERE tenant_id = :t AND trace_id = :trace"),
                                       {"t": tenant_id, "trace": trace_id}).scalar()
            # One executemany for the trace's payloads (psycopg pipelines it), not a statement a field.
            rows = [row for record_id, subject, step, salts in erasable
                    for row in _payload_rows(tenant_id=tenant_id, record_type="trace_step", record_id=record_id,
                                             subject_id=subject, run_id=run_id, record=step, salts=salts)]
            if rows:
                self.conn.execute(_PAYLOAD_INSERT, rows)
        return hashes

    def stored_step_hashes(self, *, tenant_id: str, trace_id: str, steps: Sequence[Mapping[str, Any]]) -> list[bytes]:
        """The content hash each of ``steps`` (``add_new_steps``' fields) has if it is the one
        recorded at its index: a v2 step's commitments recomputed with the salts stored for it
        (an erased field has none, so its hash cannot match: erased evidence is never re-written)."""
        ids = [f"{trace_id}/{i}" for i, f in enumerate(steps) if f.get("data_subject") is not None]
        stored: dict[str, dict[str, bytes]] = {}
        if ids:
            for row in self.conn.execute(text(
                    "SELECT record_id, field, salt FROM evidence_payloads WHERE tenant_id = :t "
                    "AND record_type = 'trace_step' AND record_id = ANY(CAST(:ids AS text[]))"),
                    {"t": tenant_id, "ids": ids}):
                stored.setdefault(row.record_id, {})[row.field] = bytes(row.salt)
        hashes = []
        for index, fields in enumerate(steps):
            step = {"step_index": index, "step_type": fields["step_type"], "input_data": fields.get("input_data"),
                    "output_data": fields.get("output_data"), "timestamp": fields["timestamp"]}
            if fields.get("data_subject") is None:
                hashes.append(hashing.step_content_hash(step))
                continue
            commitments, _ = hashing.commit_payloads(step, hashing.STEP_PAYLOAD_FIELDS,
                                                     stored.get(f"{trace_id}/{index}", {}))
            hashes.append(hashing.step_content_hash_v2(step, commitments))
        return hashes

    @staticmethod
    def step_row(fields: Mapping[str, Any], index: int, content_hash: bytes) -> dict[str, Any]:
        """A new step's row from ``add_step``'s fields (its JSON values as they are), checked
        against the vocabulary: what ``add_new_steps`` writes, and a writer of many traces'."""
        step_type, level = fields["step_type"], fields.get("level", "info")
        _check(step_type, vocabulary.STEP_TYPES, "step_type")
        _check(level, vocabulary.STEP_LEVELS, "level")
        return {"id": fields.get("step_id") or new_id("step"), "step_index": index, "step_type": step_type,
                "level": level, "source": fields.get("source", "agent"), "timestamp": fields["timestamp"],
                "tokens": fields.get("tokens", 0), "cost_cents": fields.get("cost_cents", 0),
                "duration_ms": fields.get("duration_ms", 0), "input_data": fields.get("input_data"),
                "output_data": fields.get("output_data"), "metadata": fields.get("metadata"),
                "content_hash": content_hash}

    def mark_violation(self, *, trace_id: str, step_index: int, policy_id: str, reason: str,
                       timestamp: datetime | None = None, incident_id: str | None = None) -> None:
        """The inflection point: the step where a policy was violated (recorded once)."""
        updated = self.conn.execute(text(
            "UPDATE aos_traces SET violation_step_index = :i, violation_policy_id = :p, violation_reason = :r, "
            "violation_timestamp = coalesce(:ts, (SELECT \"timestamp\" FROM aos_trace_steps "
            "  WHERE trace_id = :t AND step_index = :i)), incident_id = coalesce(:incident, incident_id) "
            "WHERE trace_id = :t AND status = 'running' "
            "AND (violation_step_index IS NULL OR (violation_step_index = :i AND violation_policy_id = :p))"),
            {"t": trace_id, "i": step_index, "p": policy_id, "r": reason, "ts": timestamp, "incident": incident_id})
        if updated.rowcount != 1:
            raise EvidenceConflict(f"trace {trace_id}: not running, unknown, or already marked differently")

    def complete_trace(self, *, trace_id: str, status: str = "completed", completed_at: datetime | None = None,
                       termination_reason: str | None = None) -> bytes:
        """Seals the trace: totals and content hash from its stored steps. Returns the trace hash."""
        _check(status, vocabulary.TRACE_STATUSES - {"running"}, "status")
        steps = self.conn.execute(text(
            "SELECT content_hash, tokens, cost_cents, duration_ms FROM aos_trace_steps "
            "WHERE trace_id = :t ORDER BY step_index"), {"t": trace_id}).all()
        trace_hash = hashing.trace_content_hash(bytes(s.content_hash) for s in steps)
        updated = self.conn.execute(text(
            "UPDATE aos_traces SET status = :status, completed_at = :completed_at, "
            "termination_reason = :reason, step_count = :n, total_tokens = :tokens, total_cost_cents = :cost, "
            "total_duration_ms = :duration, content_hash = :hash WHERE trace_id = :t AND status = 'running'"),
            {"t": trace_id, "status": status, "completed_at": completed_at or now(), "reason": termination_reason,
             "n": len(steps), "tokens": sum(s.tokens for s in steps), "cost": sum(s.cost_cents for s in steps),
             "duration": sum(s.duration_ms for s in steps), "hash": trace_hash})
        if updated.rowcount != 1:
            raise EvidenceConflict(f"trace {trace_id}: not running or unknown")
        return trace_hash
