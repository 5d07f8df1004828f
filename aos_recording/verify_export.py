"""Verify an export offline: no database, no service, only the files and the keys you trust.

    python -m aos_recording.verify_export ARTIFACT --envelope EXPORT.dsse.json --key PUBKEY [--keys FILE] [--json]

ARTIFACT is what DownloadExport returned; EXPORT.dsse.json the export's envelope
(GetExport: dsse_envelope). Trust comes only from what the auditor pins:

- ``--key PUBKEY_OR_KEY_ID`` (repeatable): an Ed25519 public key as raw base64 (as
  ListSigningKeys' ``public_key``), raw hex (64), PEM text or a PEM file, obtained out
  of band; or a key id (16 hex, SPEC section 5). A pinned key id takes its public key
  from ``--trust`` or ``--keys``, and only a key whose own computed id equals the pin;
  its public key then comes from untrusted material, so the pin is only as strong as
  the 64-bit id, and the result says so (the signing_key check and the VALID line).
- ``--trust FILE`` (repeatable): a keys document the auditor keeps (ListSigningKeys
  saved when they trusted it, or written by hand): every key in it is pinned, with
  the validity window it states; an entry may carry only ``key_id`` (and validity),
  its public key then comes from ``--keys``.
- ``--keys FILE`` (repeatable) is information only, e.g. the keys.json saved beside
  the artifact (ListSigningKeys as REST or buf curl print it, or our keys document):
  it supplies public keys for pinned key ids and may narrow a key's validity window,
  never widen it, and never makes a key trusted.

The signing time is the one inside the signed manifest (``signed_at``), never the
envelope's unsigned fields or a file's time; the key must have been valid then.
Checks, each reported by name: signature, signing_key (pinned), key_validity,
checksum, size, coverage (the ledger seq range and the counts per record type the
manifest states, against the entries the artifact carries), package (every ZIP
member listed in the signed package manifest, none missing, none extra), and inside
the evidence every unredacted trace step and ledger entry against its hash and links.
A v3 manifest also names the C2SP checkpoint of the tenant's ledger it was built against
(origin, tree size, root, the signed note) and carries one proof that every ledger entry
in the artifact is a leaf of that tree: checks checkpoint (the note states the manifest's
root; with --log-key its signature, with --witness … --min-witnesses K a k-of-n witness
policy) and inclusion. A v2 manifest has neither and verifies as before.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import csv
import enum
import hashlib
import io
import itertools
import json
import re
import sys
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import ijson

from aos_recording import dsse, hashing, note, tlog

# How much of an artifact is read at a time: the verifier holds the artifact as a file it
# reads in blocks (hashing as it reads, ZIP members decompressed as they are read, a slice's
# records parsed one at a time), never whole — a 200,000-entry export is ~700 MiB.
BLOCK = 64 * 1024


class Verdict(enum.Enum):
    """The one answer of a verification, and the exit status it gives."""
    VALID = (0, "every check held, signed by a key you pinned while that key was valid")
    TAMPERED = (1, "the artifact or its evidence differs from what the signed manifest states")
    UNUSABLE_INPUT = (2, "an input could not be read or parsed (a file, a pin, a keys document)")
    UNSIGNED = (3, "no signed envelope: an artifact alone proves nothing")
    UNTRUSTED_KEY = (4, "signed, but by no key you pinned (or you pinned none)")
    KEY_NOT_VALID_AT_SIGNING_TIME = (5, "signed by a pinned key outside its validity window")
    SIGNATURE_INVALID = (6, "the envelope is malformed, of another payload type, or its signature does not verify")

    def __init__(self, exit_code: int, meaning: str) -> None:
        self.exit_code = exit_code
        self.meaning = meaning


def exit_codes_help() -> str:
    return "exit status:\n" + "\n".join(f"  {v.exit_code}  {v.name}: {v.meaning}"
                                        for v in sorted(Verdict, key=lambda v: v.exit_code))


PACKAGE_META = ("package-manifest.json", "package-manifest.dsse.json", "SHA256SUMS")


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    verdict: str = Verdict.TAMPERED.name   # what this check's failure means


class Verification:
    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.signed_by: str | None = None
        self.signed_at: str | None = None
        self.note: str | None = None   # said beside the verdict (a pin weaker than a public key)
        # The ledger entries the artifact carries, (seq, hex content hash): the leaves whose
        # inclusion a v3 manifest proves. None: the artifact shows none (a PDF, an executive summary).
        self.ledger_leaves: list[tuple[int, str]] | None = None

    def add(self, name: str, passed: bool, detail: str, verdict: Verdict = Verdict.TAMPERED) -> None:
        self.checks.append(Check(name, passed, detail, verdict.name))

    @property
    def verdict(self) -> Verdict:
        """The first failed check's verdict (checks are added trust first, content after)."""
        if not self.checks:
            return Verdict.UNSIGNED
        failed = next((c for c in self.checks if not c.passed), None)
        return Verdict.VALID if failed is None else Verdict[failed.verdict]

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.VALID

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict.name, "valid": self.ok, "exit_code": self.verdict.exit_code,
                "signed_by": self.signed_by, "signed_at": self.signed_at, "note": self.note,
                "checks": [c.__dict__ for c in self.checks]}


# --- keys: what is pinned, what is only listed --------------------------------------

@dataclass
class Trust:
    """The keys an auditor pinned (with the validity they trust) and unresolved key-id pins."""
    keys: list[dsse.PublicKey] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)   # pinned key ids with no public key found
    # Pinned key ids whose public key came from material handed to the verifier (--keys, a
    # service's key list), not from the auditor: such a pin is only as strong as the 64-bit
    # id (SPEC section 5), within reach of a second preimage for a large budget.
    by_id_only: set[str] = field(default_factory=set)

    def strength(self, key_id: str) -> str | None:
        """None for a full pin; else the note that says the pin is the weaker 64-bit one."""
        if key_id not in self.by_id_only:
            return None
        return (f"key {key_id} is pinned by its 64-bit key id only, its public key taken from the keys given "
                f"as information: pin the public key itself (--key PUBLIC_KEY: ListSigningKeys' public_key, "
                f"obtained out of band) for the full 256-bit pin")


_KEY_ID = re.compile(r"[0-9a-f]{16}")
_RAW_HEX = re.compile(r"[0-9a-fA-F]{64}")


def parse_pin(text: str) -> str | bytes:
    """A ``--key`` value: a key id (str) or a raw Ed25519 public key (bytes).

    Accepted: 16 lowercase hex (a key id), 64 hex (raw key), base64 of 32 bytes,
    PEM SubjectPublicKeyInfo text, or a file holding any of those."""
    text = text.strip()
    if _KEY_ID.fullmatch(text):
        return text
    if _RAW_HEX.fullmatch(text):
        return bytes.fromhex(text)
    if text.startswith("-----BEGIN"):
        try:
            (key,) = dsse.public_keys_from(text)
        except ValueError as exc:
            raise ValueError(f"--key: {exc}") from None
        return key.raw
    try:
        raw = base64.b64decode(text, validate=True)
        if len(raw) == 32:
            return raw
    except (binascii.Error, ValueError):
        pass
    path = Path(text)
    if path.is_file():
        content = path.read_text(encoding="utf-8").strip()
        if content and content != text:
            return parse_pin(content)
    raise ValueError(f"--key {text!r}: neither a key id (16 hex), a raw Ed25519 public key (64 hex or base64) "
                     "nor a PEM public key (text or file)")


def load_keys(paths: Iterable[Path]) -> list[dsse.PublicKey]:
    """Keys from keys documents (ours or ListSigningKeys as proto3 JSON) or PEM public keys."""
    keys: list[dsse.PublicKey] = []
    for path in paths:
        data = Path(path).read_bytes()
        try:
            keys += dsse.public_keys_from(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return keys


def trust(pins: Sequence[str] = (), trust_files: Sequence[Path] = (),
          listed: Sequence[dsse.PublicKey] = ()) -> Trust:
    """The pinned keys. A trust file's entries pin keys with the validity they state
    (an entry without a public key pins its key id); ``--key`` pins are valid from the
    epoch with no end unless a trust file dates them. Public keys for pinned ids come
    from the trust files, then from ``listed``, and only when their computed id is the pin."""
    by_id: dict[str, dsse.PublicKey] = {}   # public keys the auditor gave: a full pin
    windows: dict[str, tuple[datetime, datetime | None]] = {}
    wanted: list[str] = []
    for path in trust_files:
        try:
            entries = dsse.key_entries(Path(path).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"--trust {path}: {exc}") from None
        for index, entry in enumerate(entries):
            where = f"--trust {path}: keys[{index}]"
            if "public_key" in entry:
                key = dsse.key_from_entry(entry, where, validity_required=False)
                by_id.setdefault(key.key_id, key)
                wanted.append(key.key_id)
                windows.setdefault(key.key_id, (key.valid_from, key.valid_until))
                continue
            key_id = entry.get("key_id")
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"{where}: needs a public_key or a key_id of 16 lowercase hex")
            try:
                valid_from = dsse.timestamp(entry["valid_from"], "valid_from") if "valid_from" in entry \
                    else dsse.EPOCH
                until = entry.get("valid_until")
                valid_until = None if until is None else dsse.timestamp(until, "valid_until")
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            windows.setdefault(key_id, (valid_from, valid_until))
            wanted.append(key_id)
    for pin in pins:
        value = parse_pin(pin)
        if isinstance(value, bytes):
            key = dsse.PublicKey.from_raw(value)
            by_id.setdefault(key.key_id, key)
            wanted.append(key.key_id)
        else:
            wanted.append(value)
    material: dict[str, dsse.PublicKey] = {}
    for key in listed:  # material only: the listed validity is applied later, as a narrowing
        material.setdefault(key.key_id, dsse.PublicKey.from_raw(key.raw))
    result = Trust()
    for key_id in dict.fromkeys(wanted):
        found = by_id.get(key_id)
        if found is None and key_id in material:
            found = material[key_id]
            result.by_id_only.add(key_id)
        if found is None:
            result.unresolved.append(key_id)
            continue
        valid_from, valid_until = windows.get(key_id, (dsse.EPOCH, None))
        result.keys.append(dsse.PublicKey(found.key_id, found.raw, valid_from, valid_until, found.status))
    return result


def _narrowed(key: dsse.PublicKey, listed: Sequence[dsse.PublicKey]) -> dsse.PublicKey:
    """``key``'s trusted window, narrowed by what a listed keys document says of it (a
    keys document can only shorten a window: editing it never makes a signature valid)."""
    valid_from, valid_until = key.valid_from, key.valid_until
    for other in listed:
        if other.key_id == key.key_id:
            valid_from = max(valid_from, other.valid_from)
            if other.valid_until is not None:
                valid_until = other.valid_until if valid_until is None else min(valid_until, other.valid_until)
    return replace(key, valid_from=valid_from, valid_until=valid_until)


def _window(key: dsse.PublicKey) -> str:
    return f"[{hashing.rfc3339(key.valid_from)}, {hashing.rfc3339(key.valid_until) if key.valid_until else 'no end'})"


# --- the verification ---------------------------------------------------------------

def verify(artifact: bytes | IO[bytes], envelope: str | bytes | None, trusted: Trust | Sequence[dsse.PublicKey],
           listed: Sequence[dsse.PublicKey] = (), policy: LogPolicy | None = None) -> Verification:
    """Verifies ``artifact`` (its bytes, or a seekable binary file: read in blocks, never
    whole) against its export ``envelope`` under the ``trusted`` keys
    (a Trust, or keys the caller pins with the validity they carry). ``listed`` keys
    (a keys document that travelled with the artifact) only name the signer in
    messages and narrow validity windows. A v3 manifest's transparency section (the
    checkpoint the export was built against and one proof that every ledger entry carried is
    in its tree) is checked too, under ``policy`` (log key, k-of-n witnesses) when given."""
    pinned = trusted if isinstance(trusted, Trust) else Trust(keys=list(trusted))
    source = io.BytesIO(artifact) if isinstance(artifact, bytes | bytearray | memoryview) else artifact
    v = Verification()
    manifest, key = _signature(v, envelope, pinned, listed)
    if manifest is not None:
        digest, size = _digest(source)
        checksum = digest.hex()
        v.add("checksum", checksum == manifest.get("checksum"),
              f"artifact SHA-256 {checksum}; manifest {manifest.get('checksum')}")
        v.add("size", size == manifest.get("size"),
              f"artifact {size} bytes; manifest {manifest.get('size')}")
    fmt = (manifest or {}).get("format") or _sniff(source)
    contents = (manifest or {}).get("contents")
    signer = [key] if key is not None else pinned.keys
    at = signed_time(manifest) if manifest else None
    source.seek(0)
    if fmt == "ZIP":
        _package(v, source, signer, at, contents)
    elif fmt == "JSON":
        _bundle(v, source, contents)
    elif fmt == "CSV":
        _csv(v, source, contents)
    if manifest is not None:
        _transparency(v, manifest, policy or LogPolicy())
    return v


def _digest(source: IO[bytes]) -> tuple[bytes, int]:
    """SHA-256 and size of the whole file, read a block at a time."""
    source.seek(0)
    digest, size = hashlib.sha256(), 0
    while block := source.read(BLOCK):
        digest.update(block)
        size += len(block)
    return digest.digest(), size


def _sniff(source: IO[bytes]) -> str | None:
    source.seek(0)
    start = source.read(4)
    return "ZIP" if start == b"PK\x03\x04" else "JSON" if start[:1] == b"{" else None


def signed_time(manifest: dict[str, Any]) -> datetime | None:
    """When the signed manifest says it was signed (an aware datetime), or None when it
    states no usable time: missing, not a string, not RFC 3339, or without a time zone."""
    # Manifests before signed_at was added are dated by created_at, also inside what is signed.
    value = manifest.get("signed_at", manifest.get("created_at"))
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def _signature(v: Verification, envelope: str | bytes | None, pinned: Trust,
               listed: Sequence[dsse.PublicKey]) -> tuple[dict[str, Any] | None, dsse.PublicKey | None]:
    """The trust checks, in order; the verified manifest and its key, or (None, None)."""
    if envelope is None:
        v.add("signature", False, "no signed envelope: an artifact is VALID only with its export's DSSE envelope "
                                  "(GetExport: dsse_envelope); a ZIP's own package signature carries no signing "
                                  "time and does not suffice", Verdict.UNSIGNED)
        return None, None
    try:
        named = dsse.signature_key_ids(envelope)
    except dsse.DsseError as exc:
        v.add("signature", False, str(exc), Verdict.SIGNATURE_INVALID)
        return None, None
    signer_hint = _listed_signer(envelope, listed) or ", ".join(k or "(no keyid)" for k in named) or "no signature"
    if not pinned.keys:
        missing = (f" (no public key found for pinned key id(s) {', '.join(pinned.unresolved)}: pass --keys or "
                   f"the public key itself)") if pinned.unresolved else ""
        v.add("signing_key", False, f"no key pinned{missing}: pin the export signing key you obtained out of band "
                                    f"with --key PUBLIC_KEY (or --key KEY_ID, a weaker 64-bit pin), or --trust "
                                    f"FILE; a keys file beside the artifact (--keys) is information, not trust. "
                                    f"The envelope is signed by {signer_hint}", Verdict.UNTRUSTED_KEY)
        return None, None
    try:
        payload, key = dsse.open_envelope(envelope, pinned.keys, dsse.MANIFEST_PAYLOAD_TYPE)
    except dsse.DsseError as exc:
        if exc.reason == dsse.UNKNOWN_KEY:
            v.add("signing_key", False, f"signed by {signer_hint}, not by a key you pinned "
                                        f"({', '.join(k.key_id for k in pinned.keys)}): if you obtained that key "
                                        f"out of band, pin it with --key; a keys file is no trust",
                  Verdict.UNTRUSTED_KEY)
        else:  # BAD_SIGNATURE, WRONG_PAYLOAD_TYPE, MALFORMED_ENVELOPE
            v.add("signature", False, str(exc), Verdict.SIGNATURE_INVALID)
        return None, None
    try:
        manifest = json.loads(payload)
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        v.add("signature", False, f"the signed payload is not an export manifest: {exc}", Verdict.SIGNATURE_INVALID)
        return None, None
    if manifest.get("signed_by", key.key_id) != key.key_id:
        v.add("signature", False, f"verified under key {key.key_id}, but the manifest says it was signed by "
                                  f"{manifest.get('signed_by')}", Verdict.SIGNATURE_INVALID)
        return None, None
    v.signed_by = key.key_id
    v.add("signature", True, f"DSSE Ed25519 over PAE(payloadType, payload): export {manifest.get('export_id')}")
    v.note = pinned.strength(key.key_id)
    v.add("signing_key", True, v.note or f"key {key.key_id} is pinned by its public key", Verdict.UNTRUSTED_KEY)
    at = signed_time(manifest)
    window = _narrowed(key, listed)
    if at is None:
        v.add("key_validity", False, "the signed manifest states no signing time (signed_at)",
              Verdict.KEY_NOT_VALID_AT_SIGNING_TIME)
        return None, key
    v.signed_at = hashing.rfc3339(at)
    v.add("key_validity", window.valid_at(at),
          f"signed at {hashing.rfc3339(at)} (inside the signed manifest); key {key.key_id} valid {_window(window)}",
          Verdict.KEY_NOT_VALID_AT_SIGNING_TIME)
    return manifest, key


def _listed_signer(envelope: str | bytes, listed: Sequence[dsse.PublicKey]) -> str | None:
    try:
        _, key = dsse.open_envelope(envelope, listed, dsse.MANIFEST_PAYLOAD_TYPE)
    except dsse.DsseError:
        return None
    return f"key {key.key_id} (listed in the keys file)"


# --- ZIP packages -------------------------------------------------------------------

# A package's own metadata members, read whole (they are a few KiB); every other member is
# only hashed as it is decompressed, and evidence.json parsed as it is read.
PACKAGE_READ = frozenset({"SHA256SUMS", "package-manifest.json", "package-manifest.dsse.json"})
_UNREADABLE_ZIP = (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError, EOFError,
                   zlib.error)  # RuntimeError: an encrypted member; zlib.error: a corrupt deflate stream


def _package(v: Verification, source: IO[bytes], keys: Sequence[dsse.PublicKey], at: datetime | None,
             contents: dict[str, Any] | None) -> None:
    try:
        archive = zipfile.ZipFile(source)
    except _UNREADABLE_ZIP as exc:
        v.add("package", False, f"not a readable ZIP: {type(exc).__name__}: {exc}")
        return
    with archive:
        try:
            infos = archive.infolist()
            # name → (SHA-256 hex, size): a name given twice counts as its last member, as a reader takes it.
            hashed: dict[str, tuple[str, int]] = {}
            meta: dict[str, bytes] = {}
            for info in infos:
                with archive.open(info) as member:
                    digest, size = _digest_stream(member, keep=meta, name=info.filename)
                hashed[info.filename] = (digest, size)
        except _UNREADABLE_ZIP as exc:
            v.add("package", False, f"not a readable ZIP: {type(exc).__name__}: {exc}")
            return
        _package_checks(v, infos, hashed, meta, keys, at)
        if "evidence.json" in hashed:
            evidence = [info for info in infos if info.filename == "evidence.json"][-1]
            try:
                with archive.open(evidence) as member:
                    _bundle(v, member, contents)
            except _UNREADABLE_ZIP as exc:  # read once already: only a file changed under us gets here
                v.add("package", False, f"not a readable ZIP: {type(exc).__name__}: {exc}")


def _digest_stream(member: IO[bytes], *, keep: dict[str, bytes], name: str) -> tuple[str, int]:
    """SHA-256 hex and size of a member, read a block at a time; a PACKAGE_READ member is kept too."""
    digest, size, kept = hashlib.sha256(), 0, bytearray()
    while block := member.read(BLOCK):
        digest.update(block)
        size += len(block)
        if name in PACKAGE_READ:
            kept += block
    if name in PACKAGE_READ:
        keep[name] = bytes(kept)
    return digest.hexdigest(), size


def _package_checks(v: Verification, infos: list[zipfile.ZipInfo], hashed: dict[str, tuple[str, int]],
                    meta: dict[str, bytes], keys: Sequence[dsse.PublicKey], at: datetime | None) -> None:
    names = [info.filename for info in infos]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    sums = meta.get("SHA256SUMS", b"").decode("utf-8", "replace").splitlines()
    listed = {name: digest for digest, name in (line.split("  ", 1) for line in sums if "  " in line)}
    bad = [name for name, (digest, _) in hashed.items() if name != "SHA256SUMS" and listed.get(name) != digest]
    missing = sorted(set(listed) - set(hashed))
    v.add("package_sums", bool(listed) and not bad and not missing,
          f"{len(listed)} members listed in SHA256SUMS"
          + (f"; mismatched: {', '.join(sorted(bad))}" if bad else "")
          + (f"; missing: {', '.join(missing)}" if missing else ""))
    try:
        payload, _ = dsse.open_envelope(meta.get("package-manifest.dsse.json", b""), keys,
                                        dsse.PACKAGE_PAYLOAD_TYPE, at=at)
        manifest = json.loads(payload)
        files = {f["name"]: f for f in manifest["files"]}
        problems = []
        if payload != meta.get("package-manifest.json"):
            problems.append("package-manifest.json is not the signed package manifest")
        problems += [f"{name}: listed, missing" for name in files if name not in hashed]
        problems += [f"{name}: differs from the signed manifest" for name, f in files.items() if name in hashed
                     and (f["size"] != hashed[name][1] or f["sha256"] != hashed[name][0])]
        problems += [f"{name}: not listed in the signed package manifest" for name in hashed
                     if name not in files and name not in PACKAGE_META]
        problems += [f"{name}: present {names.count(name)} times" for name in duplicated]
        v.add("package_manifest", not problems, f"signed package manifest lists {len(files)} files"
              + (f"; {'; '.join(problems)}" if problems else "; every member is listed and matches"))
    except (dsse.DsseError, ValueError, KeyError, TypeError) as exc:
        v.add("package_manifest", False, str(exc))


# --- evidence: JSON bundles and slices, CSV slices ----------------------------------

def _bundle(v: Verification, source: IO[bytes], contents: dict[str, Any] | None) -> None:
    try:
        bundle = _document(source)
        _bundle_checks(v, bundle)
        if contents is not None:
            _coverage(v, contents, _carried(bundle))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, ijson.JSONError) as exc:
        # A bundle that no longer has the shape this product writes was edited (or is not JSON: ijson.JSONError).
        v.add("bundle", False, f"not an evidence bundle this product wrote: {type(exc).__name__}: {exc}")


class _Records:
    """A slice's "records", taken one at a time as they are parsed and kept only as what the
    checks need: each entry's seq and content hash (the ledger's leaves), or a system record's
    (created_at, id), and the ledger walk over them. Which applies is known only at the end
    (JCS puts "scope" after "records"), so both are gathered; what a record lacks is raised
    where the whole list would have raised it, when that list is asked for."""

    def __init__(self) -> None:
        self.count = 0
        self.walk = _LedgerWalk()
        self._leaves: list[tuple[Any, Any]] = []
        self._system: list[tuple[Any, Any]] = []
        self._leaf_error: Exception | None = None
        self._system_error: Exception | None = None
        self._seq_in_system = False

    def add(self, record: Any) -> None:
        self.count += 1
        if self._leaf_error is None:
            try:
                self.walk.add(record)
                self._leaves.append((record["seq"], record["content_hash"]))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self._leaf_error = exc
        if self._system_error is None:
            if isinstance(record, dict) and "seq" in record:
                # A ledger entry: not kept twice (an audit slice's records are its leaves). Were this
                # a system slice after all, its records carry what none of ours does: see system_keys.
                self._seq_in_system = True
                return
            try:
                self._system.append((record["created_at"], record["id"]))
            except (KeyError, TypeError) as exc:
                self._system_error = exc

    def __len__(self) -> int:
        return self.count

    def leaves(self) -> list[tuple[Any, Any]]:
        """(seq, content hash) of every record, an audit slice's ledger entries."""
        if self._leaf_error is not None:
            raise self._leaf_error
        return self._leaves

    def system_keys(self) -> list[tuple[Any, Any]]:
        """(created_at, id) of every record, a system slice's order."""
        if self._system_error is not None:
            raise self._system_error
        if self._seq_in_system:
            raise ValueError("a record of this system slice carries a ledger seq")
        return self._system


def _document(source: IO[bytes]) -> dict[str, Any]:
    """The artifact's JSON object, parsed as it is read (ijson, its C parser): a top-level
    "records" array is never held — its items go one by one to a _Records, which stands in
    for the list — while every other member (a bundle's run, trace, governance…, a slice's
    head and summary: bounded) is built whole. Numbers as json.loads gives them (floats, not
    Decimals), so a record re-hashes to what it hashed to when it was written."""
    events = ijson.parse(source, use_float=True)
    _, event, _ = next(events)
    if event != "start_map":
        raise ValueError("the artifact is not a JSON object")
    top: dict[str, Any] = {}
    for prefix, event, value in events:
        if event == "end_map" and prefix == "":
            for _ in events:  # nothing may follow the object (ijson raises on trailing data)
                raise ValueError("data after the JSON object")
            return top
        if event != "map_key":
            raise ValueError(f"unexpected {event} at the top of the object")
        if value in top:
            raise ValueError(f"member {value!r} appears twice")
        if value == "records":
            _, event, first = next(events)
            if event == "start_array":
                top["records"] = records = _Records()
                for item in _array_items(events):
                    records.add(item)
                continue
            top["records"] = _value(events, event, first)  # not an array: what the checks then refuse
            continue
        _, event, first = next(events)
        top[value] = _value(events, event, first)
    raise ValueError("the JSON object is not closed")


def _value(events: Iterator[tuple[str, str, Any]], event: str, value: Any) -> Any:
    """The value that starts with (event, value), built from the events that follow."""
    if event not in ("start_map", "start_array"):
        return value
    builder = ijson.ObjectBuilder()  # type: ignore[no-untyped-call]  # ijson ships no types
    builder.event(event, value)  # type: ignore[no-untyped-call]
    depth = 1
    for _, event, value in events:
        builder.event(event, value)  # type: ignore[no-untyped-call]
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
            if not depth:
                return builder.value
    raise ValueError("the JSON document ends inside a value")


def _array_items(events: Iterator[tuple[str, str, Any]]) -> Iterator[Any]:
    """The items of the array whose start_array was just read, one at a time."""
    for _, event, value in events:
        if event == "end_array":
            return
        yield _value(events, event, value)
    raise ValueError("the JSON document ends inside an array")


def _carried(bundle: dict[str, Any]) -> dict[str, list[Any]]:
    """The entries the artifact carries, per record type: seqs for ledger entries,
    step indexes for trace steps, a placeholder for the others (only counted)."""
    carried: dict[str, list[Any]] = {}
    trace = bundle.get("trace")
    if isinstance(trace, dict):
        carried["trace_step"] = [s["step_index"] for s in trace.get("steps", [])]
    if "governance" in bundle:
        carried["audit_entry"] = [e["seq"] for e in bundle["governance"]]
    elif isinstance(bundle.get("evidence_hashes"), dict):
        carried["audit_entry"] = [e["seq"] for e in bundle["evidence_hashes"].get("ledger", [])]
    if "records" in bundle:
        records = _as_records(bundle["records"])
        if bundle.get("scope") == "AUDIT_SLICE":
            carried["audit_entry"] = [seq for seq, _ in records.leaves()]
        else:   # a system slice is ordered by (created_at, id)
            carried["system_record"] = records.system_keys()
    for name, kind in (("incidents", "incident"), ("limit_breaches", "limit_breach"), ("proposals", "proposal")):
        if name in bundle:
            carried[kind] = list(range(len(bundle[name])))
    if "run" in bundle:
        carried["llm_run"] = [0] if bundle["run"] else []
    return carried


def _coverage(v: Verification, contents: dict[str, Any], carried: dict[str, list[Any]]) -> None:
    """The signed manifest's seq range and counts against the entries the artifact carries."""
    problems = []
    for kind, stated in sorted(contents.items()):
        if kind not in carried:
            continue  # this artifact does not carry that record type (e.g. an executive summary)
        found = carried[kind]
        if len(found) != stated.get("count"):
            problems.append(f"{kind}: {len(found)} carried, the manifest states {stated.get('count')}")
        if "first_seq" in stated:
            problems += _seq_problems(kind, found, stated)
        elif kind == "system_record":
            # Ordered by (created_at, id), the id in the database's collation: only a step back in
            # time is certain to be a reorder.
            problems += [f"system_record {b[1]} comes after {a[1]} (reordered)"
                         for a, b in itertools.pairwise(found) if b[0] < a[0]][:10]
    v.add("coverage", not problems,
          "; ".join(problems) if problems else
          "entries carried as the manifest states: " + ", ".join(
              f"{kind} {stated.get('count')}" + (f" (seq {stated['first_seq']}..{stated['last_seq']})"
                                                 if stated.get("first_seq") is not None else "")
              for kind, stated in sorted(contents.items()) if kind in carried))


def _is_seq(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seq_problems(kind: str, seqs: list[Any], stated: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    first, last = stated.get("first_seq"), stated.get("last_seq")
    if not ((first is None and last is None) or (_is_seq(first) and _is_seq(last))):
        # A hostile manifest: comparing a seq with null or text would raise, not fail a check.
        return [f"{kind}: the manifest's seq range {first!r}..{last!r} is not a range of numbers"]
    previous = None
    for seq in seqs:
        if not isinstance(seq, int):
            problems.append(f"{kind}: seq {seq!r} is not a number")
        elif first is None or last is None or seq < first or seq > last:
            problems.append(f"{kind}: seq {seq} is outside the manifest's range {first}..{last} (extra)")
        elif previous is not None and seq == previous:
            problems.append(f"{kind}: seq {seq} appears twice (extra)")
        elif previous is not None and seq < previous:
            problems.append(f"{kind}: seq {seq} comes after seq {previous} (reordered)")
        elif stated.get("contiguous") and previous is not None and seq != previous + 1:
            problems.append(f"{kind}: seq {previous + 1} is missing")
        if isinstance(seq, int):
            previous = seq if previous is None else max(previous, seq)
    if seqs and isinstance(seqs[0], int) and seqs[0] != first:
        problems.append(f"{kind}: the first entry is seq {seqs[0]}, the manifest states {first} (seq {first} "
                        f"missing?)")
    if seqs and isinstance(seqs[-1], int) and seqs[-1] != last and first is not None and last is not None \
            and first <= seqs[-1] <= last:
        problems.append(f"{kind}: the last entry is seq {seqs[-1]}, the manifest states {last} (seq {last} missing?)")
    if not seqs and first is not None:
        problems.append(f"{kind}: no entry carried, the manifest states seq {first}..{last}")
    return problems[:10]


def _bundle_checks(v: Verification, bundle: dict[str, Any]) -> None:
    trace = bundle.get("trace")
    if trace:
        steps = trace.get("steps", [])
        bad = [s["step_index"] for s in steps if not s.get("redacted")
               and (hashing.stored_step_content_hash(s).hex() != s["content_hash"]
                    or not hashing.openings_match(s, hashing.STEP_PAYLOAD_FIELDS))]
        v.add("steps", not bad, f"{len(steps)} steps, {sum(1 for s in steps if s.get('redacted'))} redacted "
                                f"(hash carried as recorded)" + (f"; mismatched: {bad}" if bad else ""))
        root = hashing.trace_content_hash(bytes.fromhex(s["content_hash"]) for s in steps).hex()
        if trace.get("content_hash"):
            v.add("trace", root == trace["content_hash"], f"trace {trace['trace_id']} hash {trace['content_hash']}")
    governance = bundle.get("governance")
    if governance:
        _ledger(v, governance)
        v.ledger_leaves = [(e["seq"], e["content_hash"]) for e in governance]
    elif bundle.get("scope") == "AUDIT_SLICE" and "records" in bundle:
        records = _as_records(bundle["records"])
        if records:  # an executive summary lists seqs and chain hashes only: no leaves to prove
            leaves = records.leaves()  # raises what a malformed entry raised on the way
            records.walk.report(v)
            v.ledger_leaves = leaves


def _as_records(value: Any) -> _Records:
    """A slice's records as _document keeps them; a bundle built otherwise (a list) is walked now."""
    if isinstance(value, _Records):
        return value
    if not isinstance(value, list):
        raise TypeError(f"records is a {type(value).__name__}, not an array")
    records = _Records()
    for record in value:
        records.add(record)
    return records


def _ledger(v: Verification, entries: Iterable[dict[str, Any]]) -> None:
    walk = _LedgerWalk()
    for e in entries:
        walk.add(e)
    walk.report(v)


class _LedgerWalk:
    """Ledger entries re-hashed and their links re-checked one at a time (a slice's entries
    as they are read): only the previous entry's seq and chain hash are kept."""

    def __init__(self) -> None:
        self.count = 0
        self.problems: list[str] = []
        self._previous: tuple[Any, Any] | None = None  # (seq, chain_hash)

    def add(self, e: dict[str, Any]) -> None:
        # A CSV row carries no content fields to re-hash (only its hashes): its chain is re-checked.
        if "id" in e and not e.get("redacted") and (hashing.stored_ledger_content_hash(e).hex() != e["content_hash"]
                                                    or not hashing.openings_match(e, hashing.LEDGER_PAYLOAD_FIELDS)):
            self._problem(f"seq {e['seq']}: content")
        if hashing.chain_hash(bytes.fromhex(e["prev_hash"]), bytes.fromhex(e["content_hash"])).hex() != e["chain_hash"]:
            self._problem(f"seq {e['seq']}: chain hash")
        previous = self._previous
        if previous is not None and e["seq"] == previous[0] + 1 and e["prev_hash"] != previous[1]:
            self._problem(f"seq {e['seq']}: broken link")
        self._previous = (e["seq"], e["chain_hash"])
        self.count += 1

    def _problem(self, problem: str) -> None:
        if len(self.problems) < 10:  # the report names ten
            self.problems.append(problem)

    def report(self, v: Verification) -> None:
        v.add("ledger", not self.problems, f"{self.count} ledger entries" + (
            f"; {', '.join(self.problems)}" if self.problems else ": hashes and links hold"))


def _csv(v: Verification, source: IO[bytes], contents: dict[str, Any] | None) -> None:
    text = io.TextIOWrapper(source, encoding="utf-8", newline="")
    try:
        rows = csv.DictReader(text)        # read a row at a time
        first = next(rows, None)
        every = itertools.chain([first] if first is not None else [], rows)
        carried: dict[str, list[Any]]
        if first is not None and "seq" in first:   # an audit slice: chain hashes and links re-checked
            walk, leaves = _LedgerWalk(), list[tuple[int, str]]()
            for r in every:
                seq = int(r["seq"])
                walk.add({"seq": seq, "prev_hash": r["prev_hash"], "content_hash": r["content_hash"],
                          "chain_hash": r["chain_hash"]})
                leaves.append((seq, r["content_hash"]))
            walk.report(v)
            v.ledger_leaves = leaves
            carried = {"audit_entry": [n for n, _ in leaves]}
        elif first is not None and "content_hash" in first:
            carried = {"system_record": [(r["created_at"], r["id"]) for r in every]}
        else:
            carried = {}                   # an executive summary: counts, no entries
        if contents is not None:
            _coverage(v, contents, carried)
    except (ValueError, KeyError, TypeError, AttributeError, csv.Error) as exc:  # UnicodeDecodeError: ValueError
        v.add("csv", False, f"not a CSV slice this product wrote: {type(exc).__name__}: {exc}")
    finally:
        text.detach()  # the caller's file stays open


# --- the transparency log: the checkpoint an export was built against ----------------

@dataclass(frozen=True)
class LogPolicy:
    """What an auditor requires of the checkpoint a v3 manifest names: the log's signature
    under ``log_key`` (pinned out of band), at least ``min_witnesses`` distinct ``witnesses``
    cosigning, each no later than ``not_after`` (POSIX s). ``checkpoint`` replaces the note
    the manifest carries by one fetched later at the same size (with the cosignatures
    collected since: GetLedgerCheckpoint with tree_size)."""
    log_key: str | None = None
    witnesses: tuple[str, ...] = ()
    min_witnesses: int = 0
    not_after: int | None = None
    checkpoint: bytes | None = None

    @property
    def asked(self) -> bool:
        return self.log_key is not None or self.min_witnesses > 0 or self.checkpoint is not None


MANIFEST_V3 = "aos.export-manifest/v3"  # a v2 manifest plus transparency_log


def transparency_section(origin: str, tree_size: int, root: bytes, signed_note: bytes, proof: Sequence[bytes],
                         records: int) -> dict[str, Any]:
    """A v3 manifest's ``transparency_log``: the ledger checkpoint the export was built against
    (origin, size, base64 root, the signed note) and the one proof (``tlog.prove_records``)
    that the ``records`` ledger entries the artifact carries are leaves of its tree."""
    return {"log": "ledger", "origin": origin, "tree_size": tree_size, "root": base64.b64encode(root).decode(),
            "checkpoint": signed_note.decode(), "records": records,
            "inclusion_proof": [base64.b64encode(h).decode() for h in proof]}


def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} is not base64 text")
    return base64.b64decode(text, validate=True)


def _transparency(v: Verification, manifest: dict[str, Any], policy: LogPolicy) -> None:
    section = manifest.get("transparency_log")
    if section is None:
        if policy.asked:
            v.add("checkpoint", False, f"the manifest ({manifest.get('format_version')}) names no checkpoint of "
                                       "the transparency log, but a log key or witnesses were required")
        return
    try:
        origin, size = section["origin"], section["tree_size"]
        root = _b64(section["root"], "the root")
        proof = [_b64(h, "a proof hash") for h in section["inclusion_proof"]]
        if not isinstance(origin, str) or not _is_seq(size) or len(root) != tlog.HASH_SIZE:
            raise ValueError("origin, tree_size or root malformed")
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        v.add("checkpoint", False, f"the manifest's transparency section is malformed: {exc}")
        return
    signed = policy.checkpoint if policy.checkpoint is not None else str(section.get("checkpoint", "")).encode()
    try:
        text, _ = note.split_note(signed)
        stated = note.Checkpoint.parse(text)
        if (stated.origin, stated.size, stated.root) != (origin, size, root):
            raise note.NoteError(note.MALFORMED_CHECKPOINT, f"the checkpoint note is of {stated.origin} size "
                                                            f"{stated.size}, not the manifest's {origin} size {size}")
        details = []
        if policy.log_key is not None:
            note.open_checkpoint(signed, policy.log_key, origin=origin)
            details.append("signed by the pinned log key")
        else:
            details.append("the log's signature not checked (no log key pinned; the signed manifest vouches for "
                           "the root)")
        if policy.min_witnesses:
            cosigned = note.require_cosignatures(signed, list(policy.witnesses), policy.min_witnesses,
                                                 not_after=policy.not_after)
            details.append(f"cosigned by {len({c.public_key for c in cosigned})} of the required "
                           f"{policy.min_witnesses} witnesses ({', '.join(sorted({c.name for c in cosigned}))})")
        v.add("checkpoint", True, f"{origin} at tree size {size}: " + "; ".join(details))
    except (note.NoteError, ValueError) as exc:
        v.add("checkpoint", False, f"the checkpoint does not hold: {exc}")
        return
    leaves = v.ledger_leaves
    if leaves is None:
        # A PDF or an executive summary shows no entry with its content hash: nothing to check
        # offline here (the entries' inclusion is proved on the JSON, CSV or ZIP form).
        v.note = ((v.note + "; ") if v.note else "") + (
            f"the manifest proves {section.get('records')} ledger entries, this artifact shows none with its "
            "content hash (PDF or executive summary): inclusion not checked")
        return
    try:
        hashes = {seq - 1: tlog.leaf_hash(bytes.fromhex(content)) for seq, content in leaves}
        if len(hashes) != len(leaves):
            raise tlog.ProofError("a seq appears twice")
        tlog.check_records(proof, size, root, hashes, keep=False)
    except (tlog.ProofError, ValueError, TypeError) as exc:
        v.add("inclusion", False, f"the {len(leaves)} ledger entries carried are not all in the tree of size "
                                  f"{size}: {exc}")
        return
    v.add("inclusion", True, f"{len(leaves)} ledger entries carried are leaves of the tree of size {size} "
                             f"(one proof of {len(proof)} hashes)")


def inclusion_proof(artifact_leaves: Sequence[tuple[int, str]], section: dict[str, Any], seq: int) -> list[bytes]:
    """The standard RFC 9162 audit path of the carried entry ``seq``, derived from a v3 manifest's
    proof (raises tlog.ProofError when that proof does not verify): what any RFC 6962 verifier
    checks against the checkpoint's root."""
    root = _b64(section["root"], "the root")
    proof = [_b64(h, "a proof hash") for h in section["inclusion_proof"]]
    hashes = {s - 1: tlog.leaf_hash(bytes.fromhex(c)) for s, c in artifact_leaves}
    known = tlog.check_records(proof, section["tree_size"], root, hashes)
    return tlog.record_audit_path(known, section["tree_size"], seq - 1)


# --- the command ----------------------------------------------------------------------

def add_trust_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", action="append", default=[], metavar="PUBKEY_OR_KEY_ID",
                        help="pin a key you obtained out of band: its public key (base64 as ListSigningKeys' "
                             "public_key, 64 hex, PEM text or a PEM file), or only its key id (16 hex: a weaker "
                             "64-bit pin, its public key then taken from --keys; the result says so); repeatable")
    parser.add_argument("--trust", action="append", default=[], type=Path, metavar="FILE",
                        help="a keys document you keep and trust: pins every key in it, with the validity it "
                             "states (entries may carry only key_id and validity); repeatable")
    parser.add_argument("--keys", action="append", default=[], type=Path, metavar="FILE",
                        help="information only: a keys document (ListSigningKeys as REST or buf curl print it) or "
                             "PEM public keys; supplies public keys for pinned key ids, never trust; repeatable")


def add_log_policy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-key", metavar="VKEY",
                        help="the transparency log's verifier key, pinned out of band: the checkpoint the export "
                             "names must be signed by it")
    parser.add_argument("--witness", metavar="VKEY", action="append", default=[],
                        help="a witness's cosignature/v1 verifier key (repeat for each)")
    parser.add_argument("--min-witnesses", metavar="K", type=int, default=0,
                        help="at least K distinct --witness keys must have cosigned that checkpoint")
    parser.add_argument("--checkpoint", metavar="FILE", type=Path,
                        help="the checkpoint note at the export's tree size as fetched later, with its "
                             "cosignatures (GetLedgerCheckpoint with tree_size; default: the note the manifest "
                             "carries)")


def log_policy_of(args: argparse.Namespace) -> LogPolicy:
    """The policy of ``add_log_policy_arguments``' arguments (OSError, ValueError when unusable)."""
    return log_policy(args.log_key, args.witness, args.min_witnesses,
                      args.checkpoint.read_bytes() if args.checkpoint else None)


def log_policy(log_key: str | None, witnesses: Sequence[str], min_witnesses: int,
               checkpoint: bytes | None = None) -> LogPolicy:
    """The policy from the command's arguments; ValueError for a key that does not parse or a
    K outside 0..len(witnesses)."""
    if log_key is not None and note.parse_verifier_key(log_key).sig_type != note.SIG_ED25519:
        raise ValueError("--log-key: a log key is an Ed25519 note key (type 0x01)")
    for vkey in witnesses:
        if note.parse_verifier_key(vkey).sig_type != note.SIG_COSIGNATURE:
            raise ValueError(f"--witness {vkey[:40]}…: a witness key is a cosignature/v1 (type 0x04) key")
    if not 0 <= min_witnesses <= len(witnesses):
        raise ValueError(f"--min-witnesses must be between 0 and the {len(witnesses)} --witness keys given")
    return LogPolicy(log_key, tuple(witnesses), min_witnesses, int(time.time()) + 600, checkpoint)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aos_recording.verify_export",
                                     description=__doc__.split("\n")[0],
                                     epilog=exit_codes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--envelope", type=Path, help="the export's DSSE envelope (GetExport: dsse_envelope)")
    add_trust_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the verdict and the checks as JSON")
    add_log_policy_arguments(parser)
    args = parser.parse_args(argv)
    try:
        listed = load_keys(args.keys)
        pinned = trust(args.key, args.trust, listed)
        envelope = args.envelope.read_bytes() if args.envelope else None
        policy = log_policy_of(args)
        artifact = args.artifact.open("rb")  # read in blocks by verify, never whole
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: a keys file nested too deeply
        print(f"error: {exc}", file=sys.stderr)
        return Verdict.UNUSABLE_INPUT.exit_code
    try:
        with artifact:
            result = verify(artifact, envelope, pinned, listed, policy)
    except Exception as exc:  # noqa: BLE001 - hostile input never ends in a traceback, nor in exit 0
        print(f"error: the inputs could not be verified: {type(exc).__name__}: {exc}", file=sys.stderr)
        return Verdict.UNUSABLE_INPUT.exit_code
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        for c in result.checks:
            print(f"{'ok  ' if c.passed else 'FAIL'} {c.name}: {c.detail}")
        print(f"{result.verdict.name}: {result.verdict.meaning}" + (f" (note: {result.note})" if result.note else ""))
    return result.verdict.exit_code


if __name__ == "__main__":
    sys.exit(main())
