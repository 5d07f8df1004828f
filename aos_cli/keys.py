"""Public signing keys: as ListSigningKeys lists them, or as an auditor saved them."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timezone
from pathlib import Path

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as pb
from aos_cli.client import Client, UsageError, VerificationFailed
from aos_cli.values import enum_label
from aos_recording import dsse, verify_export


def _public_key(key: bundle_pb2.SigningKey) -> dsse.PublicKey:
    # The validity window matters: a checkpoint or export must be signed while its key was valid.
    return dsse.PublicKey(
        key_id=key.key_id, raw=key.public_key,
        valid_from=key.valid_from.ToDatetime(tzinfo=timezone.utc) if key.HasField("valid_from") else dsse.EPOCH,
        valid_until=key.valid_until.ToDatetime(tzinfo=timezone.utc) if key.HasField("valid_until") else None,
        status=enum_label("aos.evidence.v1.SigningKeyStatus", key.status))


def server_keys(client: Client) -> list[dsse.PublicKey]:
    listed = client.exports.ListSigningKeys(pb.ListSigningKeysRequest()).keys
    try:
        return [_public_key(key) for key in listed]
    except ValueError as exc:  # a key id that is not its key's: nothing it signed can be trusted
        raise VerificationFailed(f"ListSigningKeys returned an unusable key: {exc}") from None


def file_keys(paths: list[Path]) -> list[dsse.PublicKey]:
    """A saved keys document (keys.json) or PEM Ed25519 public keys."""
    try:
        return verify_export.load_keys(paths)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--keys: {exc}") from None


def signing_keys_trusted(pins: Sequence[str], trust_files: Sequence[Path], listed: list[dsse.PublicKey],
                         service_keys: Callable[[], list[dsse.PublicKey]]) -> verify_export.Trust:
    """The keys a signature is checked against: only those the auditor pinned (``--key``,
    ``--trust``), as in the offline export verifier. ``--keys`` files and the service's
    ListSigningKeys only supply public keys for pinned key ids (such a pin is the weaker
    64-bit one, and ``Trust.strength`` says so); with no pin the Trust is empty and the
    signature check fails: the audited service's own key list vouches for nothing."""
    if not pins and not trust_files:
        return verify_export.Trust()
    try:
        # Public keys for pinned ids may come from the files or from the service: material
        # only, accepted for a pin only when the key's own id is the pinned one.
        pinned = verify_export.trust(pins, trust_files, [*listed, *service_keys()])
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if pinned.unresolved:
        raise UsageError(f"no public key found for pinned key id(s) {', '.join(pinned.unresolved)}: "
                         "pass it with --key or --trust, or a --keys file that lists it")
    return pinned
