"""Checkpoints of the transparency logs as C2SP signed notes, and witness cosignatures.

Three C2SP formats (https://c2sp.org), so that outside tooling reads ours:

- ``signed-note`` (v1.0.0): a UTF-8 text ending in a newline, a blank line, then one or
  more lines ``— <key name> base64(key id ‖ signature)``. Ed25519 note signatures
  (type 0x01) sign the text; the key id is SHA-256(name ‖ "\\n" ‖ 0x01 ‖ public key)[:4],
  and a verifier key is written ``<name>+<hex key id>+base64(0x01 ‖ public key)``
  (Go's ``golang.org/x/mod/sumdb/note``).
- ``tlog-checkpoint``: the note text of a log's tree head: origin line, tree size in
  decimal, base64 root hash, optional extension lines.
- ``tlog-cosignature`` (cosignature/v1, Ed25519, type 0x04): a witness's signature line
  on a checkpoint, whose signature is ``u64 timestamp ‖ Ed25519 signature`` over
  ``"cosignature/v1\\ntime <timestamp>\\n" ‖ checkpoint text``.

Verification follows signed-note's rules: signatures from unknown keys (name and key id
not both matching a known key) are ignored; a known key's signature that fails to
verify rejects the whole note, and so does a known key signing twice; a note with no
verified signature from a known key is rejected. A k-of-n witness policy
(``require_cosignatures``) counts distinct witness keys.

SPEC §5 names the logs: origin ``<AOS_LOG_ORIGIN>/ledger/<tenant_id>`` (and
``…/exports/<tenant_id>``), which is also the key name of the log's note signature.
Nothing here imports the server: an auditor runs it alone.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aos_recording.tlog import HASH_SIZE

SIG_ED25519 = 0x01       # signed-note: Ed25519 over the note text
SIG_COSIGNATURE = 0x04   # tlog-cosignature: timestamped Ed25519 witness cosignature (cosignature/v1)
MAX_SIGNATURES = 100     # signed-note: verifiers cap the count and MUST accept at least 16 (Go caps at 100)
MAX_NOTE_BYTES = 1 << 20
MAX_TIMESTAMP = (1 << 63) - 1
LOG_KINDS = ("ledger", "exports")
DEFAULT_LOG_ORIGIN = "aos-evidence.local"  # AOS_LOG_ORIGIN's default (SPEC §5)
_EM_DASH_SPACE = "— "
_COSIGNATURE_HEADER = b"cosignature/v1\n"

# NoteError reasons.
MALFORMED_NOTE = "MALFORMED_NOTE"              # not a signed note: encoding, blank line, signature lines
MALFORMED_CHECKPOINT = "MALFORMED_CHECKPOINT"  # a note text that is no tlog-checkpoint
MALFORMED_KEY = "MALFORMED_KEY"                # a verifier key string that does not parse or whose id mismatches
UNVERIFIED = "UNVERIFIED"                      # no signature from a known key
BAD_SIGNATURE = "BAD_SIGNATURE"                # a known key's signature does not verify
DUPLICATE_SIGNATURE = "DUPLICATE_SIGNATURE"    # a known key signs twice
TOO_FEW_COSIGNATURES = "TOO_FEW_COSIGNATURES"  # a k-of-n witness policy is not met


class NoteError(ValueError):
    """A note, checkpoint, key or cosignature failed; ``reason`` is one of the constants above."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


# --- names, keys ----------------------------------------------------------------------------

def is_valid_key_name(name: str) -> bool:
    """signed-note: a key name is non-empty, without Unicode spaces or '+' (nor control characters)."""
    return bool(name) and "+" not in name and not any(
        ch.isspace() or unicodedata.category(ch) == "Zs" or ord(ch) < 0x20 or ch == "\x7f" for ch in name)


def _check_key_name(name: str) -> str:
    if not isinstance(name, str) or not is_valid_key_name(name):
        raise ValueError(f"not a valid note key name: {name!r} (non-empty, no spaces, no '+')")
    return name


def log_origin(base: str, kind: str, tenant_id: str) -> str:
    """A tenant's log origin (and its note key name), SPEC §5: ``<base>/<kind>/<tenant_id>``
    with ``kind`` "ledger" or "exports" and ``base`` AOS_LOG_ORIGIN (``aos-evidence.local``)."""
    if kind not in LOG_KINDS:
        raise ValueError(f"log kind must be one of {LOG_KINDS}, not {kind!r}")
    if not base or not tenant_id or "/" in tenant_id:
        raise ValueError("a log origin needs a base and a tenant id without '/'")
    return _check_key_name(f"{base.rstrip('/')}/{kind}/{tenant_id}")


def _raw_public(public_key: Ed25519PublicKey | bytes) -> bytes:
    raw = public_key.public_bytes_raw() if isinstance(public_key, Ed25519PublicKey) else public_key
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return raw


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """signed-note key id: SHA-256(name ‖ "\\n" ‖ type ‖ public key)[:4]."""
    return hashlib.sha256(_check_key_name(name).encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


@dataclass(frozen=True)
class NoteVerifier:
    """A known key: its name, 4-byte id, signature type (0x01 note signature, 0x04
    cosignature/v1) and raw Ed25519 public key. Build with ``parse_verifier_key``,
    ``NoteVerifier.ed25519`` or ``NoteVerifier.cosigner``."""

    name: str
    key_id: bytes
    sig_type: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        if self.sig_type not in (SIG_ED25519, SIG_COSIGNATURE):
            raise ValueError(f"unsupported signature type 0x{self.sig_type:02x}")
        _raw_public(self.public_key)
        if self.key_id != key_id(self.name, self.sig_type, self.public_key):
            raise ValueError("key id does not match name, type and public key")

    @classmethod
    def ed25519(cls, name: str, public_key: Ed25519PublicKey | bytes) -> NoteVerifier:
        """A log's (or any signer's) Ed25519 note key."""
        raw = _raw_public(public_key)
        return cls(name, key_id(name, SIG_ED25519, raw), SIG_ED25519, raw)

    @classmethod
    def cosigner(cls, name: str, public_key: Ed25519PublicKey | bytes) -> NoteVerifier:
        """A witness's Ed25519 cosignature/v1 key."""
        raw = _raw_public(public_key)
        return cls(name, key_id(name, SIG_COSIGNATURE, raw), SIG_COSIGNATURE, raw)

    def vkey(self) -> str:
        """The verifier key string ``name+hexid+base64(type ‖ public key)``."""
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(bytes([self.sig_type]) + self.public_key).decode()}"

    def verify(self, text: bytes, signature: bytes) -> int | None:
        """Whether ``signature`` (after the key id) signs note ``text``: None if not; else 0 for a
        note signature, the cosignature's timestamp for a cosignature."""
        key = Ed25519PublicKey.from_public_bytes(self.public_key)
        if self.sig_type == SIG_ED25519:
            message, sig, stamp = text, signature, 0
        else:
            if len(signature) != 8 + 64:
                return None
            (stamp,), sig = struct.unpack(">Q", signature[:8]), signature[8:]
            if stamp > MAX_TIMESTAMP:
                return None
            message = cosignature_message(text, stamp)
        if len(sig) != 64:
            return None
        try:
            key.verify(sig, message)
        except InvalidSignature:
            return None
        return stamp


def verifier_key(name: str, public_key: Ed25519PublicKey | bytes) -> str:
    """The vkey string of an Ed25519 note key (Go ``note.NewEd25519VerifierKey``)."""
    return NoteVerifier.ed25519(name, public_key).vkey()


def cosigner_key(name: str, public_key: Ed25519PublicKey | bytes) -> str:
    """The vkey string of a witness's cosignature/v1 key (type 0x04)."""
    return NoteVerifier.cosigner(name, public_key).vkey()


def _b64decode_strict(text: str) -> bytes:
    """Standard base64 with padding, canonical (re-encodes to the same text)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("not standard base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


def parse_verifier_key(vkey: str) -> NoteVerifier:
    """Parse ``name+hexid+base64(type ‖ public key)`` (Go ``note.NewVerifier``), checking the id.

    Type 0x01 (note signatures) and 0x04 (cosignature/v1) with a 32-byte Ed25519 key."""
    name, _, rest = vkey.partition("+")
    hex_id, _, key64 = rest.partition("+")
    try:
        if len(hex_id) != 8 or not all(ch in "0123456789abcdefABCDEF" for ch in hex_id):
            raise ValueError("key id is not 8 hex digits")
        kid = bytes.fromhex(hex_id)
        raw = _b64decode_strict(key64)
        if len(raw) != 33:
            raise ValueError("key material is not a type byte and a 32-byte Ed25519 key")
        return NoteVerifier(_check_key_name(name), kid, raw[0], raw[1:])
    except ValueError as exc:
        raise NoteError(MALFORMED_KEY, f"verifier key {vkey[:80]!r}: {exc}") from None


def _verifiers(known: Iterable[NoteVerifier | str]) -> dict[tuple[str, bytes], NoteVerifier]:
    table: dict[tuple[str, bytes], NoteVerifier] = {}
    for item in known:
        v = parse_verifier_key(item) if isinstance(item, str) else item
        if (v.name, v.key_id) in table and table[(v.name, v.key_id)] != v:
            raise ValueError(f"ambiguous keys: two keys named {v.name} with id {v.key_id.hex()}")
        table[(v.name, v.key_id)] = v
    return table


# --- signed notes ---------------------------------------------------------------------------

def _check_text(text: bytes, what: str, reason: str) -> str:
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError(reason, f"{what} is not UTF-8") from None
    if any(ord(ch) < 0x20 and ch != "\n" for ch in decoded):
        raise NoteError(reason, f"{what} holds a control character other than newline")
    return decoded


def signature_line(name: str, kid: bytes, signature: bytes) -> bytes:
    """One signature line: ``— <name> base64(key id ‖ signature)\\n``."""
    return f"{_EM_DASH_SPACE}{_check_key_name(name)} {base64.b64encode(kid + signature).decode()}\n".encode()


def sign_note(body: bytes, name: str, private_key: Ed25519PrivateKey) -> bytes:
    """The signed note of ``body`` (a text ending in a newline) with one Ed25519 note
    signature under key name ``name`` (Go ``note.Sign``)."""
    return body + b"\n" + note_signature(body, name, private_key)


def note_signature(body: bytes, name: str, private_key: Ed25519PrivateKey) -> bytes:
    """The Ed25519 signature line that ``sign_note`` appends."""
    _check_body(body)
    kid = key_id(name, SIG_ED25519, private_key.public_key().public_bytes_raw())
    return signature_line(name, kid, private_key.sign(body))


def _check_body(body: bytes) -> None:
    if not isinstance(body, bytes) or not body.endswith(b"\n"):
        raise NoteError(MALFORMED_NOTE, "a note text ends in a newline")
    _check_text(body, "the note text", MALFORMED_NOTE)


def add_signatures(note: bytes, lines: Iterable[bytes]) -> bytes:
    """``note`` with more signature lines (cosignatures, say) appended, skipping exact repeats."""
    body, present = split_note(note)
    out = list(present)
    for line in lines:
        parsed = _parse_signature_line(line.rstrip(b"\n").decode("utf-8", "replace"))
        rendered = signature_line(*parsed)
        if rendered not in out:
            out.append(rendered)
    return body + b"\n" + b"".join(out)


def _parse_signature_line(line: str) -> tuple[str, bytes, bytes]:
    if not line.startswith(_EM_DASH_SPACE):
        raise NoteError(MALFORMED_NOTE, f"not a signature line: {line[:60]!r}")
    name, sep, b64 = line[len(_EM_DASH_SPACE):].partition(" ")
    if not sep or not is_valid_key_name(name):
        raise NoteError(MALFORMED_NOTE, f"bad key name in signature line {line[:60]!r}")
    try:
        raw = _b64decode_strict(b64)
    except ValueError:
        raise NoteError(MALFORMED_NOTE, f"signature of {name} is not canonical base64") from None
    if len(raw) < 5:
        raise NoteError(MALFORMED_NOTE, f"signature of {name} is shorter than a key id and one byte")
    return name, raw[:4], raw[4:]


def split_note(note: bytes) -> tuple[bytes, list[bytes]]:
    """(text, signature lines) of a well-formed signed note; nothing is verified."""
    if not isinstance(note, bytes) or len(note) > MAX_NOTE_BYTES:
        raise NoteError(MALFORMED_NOTE, "not a note (bytes, at most 1 MiB)")
    decoded = _check_text(note, "the note", MALFORMED_NOTE)
    split = decoded.rfind("\n\n")
    if split < 0:
        raise NoteError(MALFORMED_NOTE, "no blank line before the signatures")
    text, sigs = decoded[:split + 1], decoded[split + 2:]
    if not sigs or not sigs.endswith("\n"):
        raise NoteError(MALFORMED_NOTE, "no signature lines, or the last one does not end in a newline")
    lines = sigs[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(MALFORMED_NOTE, f"more than {MAX_SIGNATURES} signatures")
    for line in lines:
        _parse_signature_line(line)
    return text.encode(), [line.encode() + b"\n" for line in lines]


@dataclass(frozen=True)
class VerifiedSignature:
    """A signature of a known key that verified: its name, key id, type, and for a
    cosignature its timestamp (POSIX seconds; 0 for a note signature)."""

    name: str
    key_id: bytes
    sig_type: int
    public_key: bytes
    timestamp: int


def verify_note(note: bytes, verifiers: Iterable[NoteVerifier | str]) -> tuple[bytes, list[VerifiedSignature]]:
    """Open a signed note: (text, the known keys' signatures, all verified), by signed-note's
    rules: unknown keys' lines are ignored; a known key's bad signature or second line
    rejects the note; no verified known signature rejects it. Raises ``NoteError``."""
    table = _verifiers(verifiers)
    text, lines = split_note(note)
    verified: list[VerifiedSignature] = []
    seen: set[tuple[str, bytes]] = set()
    for line in lines:
        name, kid, sig = _parse_signature_line(line[:-1].decode())
        v = table.get((name, kid))
        if v is None:
            continue
        if (name, kid) in seen:
            raise NoteError(DUPLICATE_SIGNATURE, f"key {name}+{kid.hex()} signs the note twice")
        seen.add((name, kid))
        stamp = v.verify(text, sig)
        if stamp is None:
            raise NoteError(BAD_SIGNATURE, f"the signature of known key {name}+{kid.hex()} does not verify")
        verified.append(VerifiedSignature(name, kid, v.sig_type, v.public_key, stamp))
    if not verified:
        raise NoteError(UNVERIFIED, "no signature from a known key")
    return text, verified


def open_note(note: bytes, verifiers: Iterable[NoteVerifier | str]) -> tuple[bytes, tuple[str, ...]]:
    """``verify_note`` reduced to (text, the names of the known keys that signed it)."""
    text, verified = verify_note(note, verifiers)
    return text, tuple(v.name for v in verified)


# --- checkpoints ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint: the log's origin, tree size, RFC 6962 root and optional
    extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin or "\n" in self.origin:
            raise ValueError("a checkpoint origin is one non-empty line")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or not 0 <= self.size <= MAX_TIMESTAMP:
            raise ValueError("a tree size is an integer in [0, 2^63)")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise ValueError(f"a root hash is {HASH_SIZE} bytes")
        if not isinstance(self.extensions, tuple) or any(not e or "\n" in e for e in self.extensions):
            raise ValueError("extension lines are non-empty single lines")
        for line in (self.origin, *self.extensions):
            if any(ord(ch) < 0x20 for ch in line):
                raise ValueError("checkpoint lines hold no control characters")

    def body(self) -> bytes:
        """The note text: origin, size, base64 root, extensions, each ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(line + "\n" for line in lines).encode()

    @classmethod
    def parse(cls, body: bytes) -> Checkpoint:
        """Parse a checkpoint note text, strictly: ≥ 3 non-empty lines, each ending in a
        newline; size in decimal without leading zeros; the root canonical base64 of 32 bytes."""
        text = _check_text(body, "the checkpoint", MALFORMED_CHECKPOINT) if isinstance(body, bytes) else None
        if text is None or not text.endswith("\n"):
            raise NoteError(MALFORMED_CHECKPOINT, "a checkpoint is text ending in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise NoteError(MALFORMED_CHECKPOINT, "a checkpoint has at least three lines, none empty")
        origin, size, root, *extensions = lines
        if not (size.isascii() and size.isdigit()) or str(int(size)) != size or int(size) > MAX_TIMESTAMP:
            raise NoteError(MALFORMED_CHECKPOINT, f"tree size {size[:30]!r} is not a decimal without leading zeros")
        try:
            root_hash = _b64decode_strict(root)
        except ValueError:
            raise NoteError(MALFORMED_CHECKPOINT, "the root hash is not canonical base64") from None
        if len(root_hash) != HASH_SIZE:
            raise NoteError(MALFORMED_CHECKPOINT, f"the root hash is not {HASH_SIZE} bytes")
        return cls(origin, int(size), root_hash, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, private_key: Ed25519PrivateKey, name: str | None = None) -> bytes:
    """The checkpoint as a signed note, signed under its origin (or ``name``)."""
    return sign_note(checkpoint.body(), name or checkpoint.origin, private_key)


def open_checkpoint(note: bytes, log_key: NoteVerifier | str,
                    origin: str | None = None) -> tuple[Checkpoint, list[VerifiedSignature]]:
    """Verify a checkpoint note's log signature (and its origin when given): the parsed
    checkpoint and the signatures of ``log_key`` that verified. Unknown keys' lines are ignored."""
    text, verified = verify_note(note, [log_key])
    checkpoint = Checkpoint.parse(text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(MALFORMED_CHECKPOINT, f"checkpoint of {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint, verified


# --- cosignatures (tlog-cosignature, cosignature/v1) ----------------------------------------

def cosignature_message(checkpoint_body: bytes, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: ``cosignature/v1\\ntime <t>\\n`` ‖ the checkpoint text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError("a cosignature timestamp is in [0, 2^63)")
    return _COSIGNATURE_HEADER + b"time %d\n" % timestamp + checkpoint_body


def cosign(checkpoint_body: bytes, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> bytes:
    """A witness's cosignature/v1 signature line on a checkpoint text, at ``timestamp``
    (POSIX seconds). The body must parse as a checkpoint: a witness signs nothing else."""
    Checkpoint.parse(checkpoint_body)
    kid = key_id(name, SIG_COSIGNATURE, private_key.public_key().public_bytes_raw())
    signature = private_key.sign(cosignature_message(checkpoint_body, timestamp))
    return signature_line(name, kid, struct.pack(">Q", timestamp) + signature)


def verify_cosignatures(note: bytes, witness_keys: Iterable[NoteVerifier | str]) -> list[VerifiedSignature]:
    """The cosignatures of known witnesses on a checkpoint note, all verified (any known
    witness's bad or repeated line rejects the note); other lines (the log's own signature,
    unknown witnesses) are ignored. Raises ``NoteError`` UNVERIFIED when none verifies."""
    keys = [parse_verifier_key(k) if isinstance(k, str) else k for k in witness_keys]
    if any(k.sig_type != SIG_COSIGNATURE for k in keys):
        raise ValueError("witness keys are cosignature/v1 (type 0x04) keys")
    text, verified = verify_note(note, keys)
    Checkpoint.parse(text)
    return verified


def require_cosignatures(note: bytes, witness_keys: Sequence[NoteVerifier | str], k: int,
                         log_key: NoteVerifier | str | None = None,
                         not_after: int | None = None) -> list[VerifiedSignature]:
    """A client's k-of-n witness policy: at least ``k`` distinct witnesses of ``witness_keys``
    (distinct public keys: one key under two names counts once) cosigned the checkpoint,
    and with ``log_key`` the log's own signature verifies too. ``not_after`` (POSIX seconds,
    say now plus a small skew) refuses cosignatures dated later. Returns the witnesses'
    verified cosignatures; raises ``NoteError`` (TOO_FEW_COSIGNATURES when the count falls short)."""
    if not 1 <= k <= len(witness_keys):
        raise ValueError(f"k must be between 1 and the {len(witness_keys)} witness keys")
    if log_key is not None:
        open_checkpoint(note, log_key)
    try:
        verified = verify_cosignatures(note, witness_keys)
    except NoteError as exc:
        if exc.reason != UNVERIFIED:
            raise
        verified = []
    counted = [v for v in verified if not_after is None or v.timestamp <= not_after]
    distinct = {v.public_key for v in counted}
    if len(distinct) < k:
        raise NoteError(TOO_FEW_COSIGNATURES, f"{len(distinct)} of the required {k} witnesses cosigned")
    return counted
