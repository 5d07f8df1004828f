"""Verify an export offline: no database, no service, only the files and the public keys.

    python -m aos_recording.verify_export ARTIFACT [--envelope EXPORT.dsse.json] --keys KEYS [--keys ...] [--json]

ARTIFACT is what DownloadExport returned. EXPORT.dsse.json is the export's envelope
(GetExport: dsse_envelope); KEYS is the key list ListSigningKeys returns, saved as
JSON (aos_recording.dsse.keys_document), or PEM Ed25519 public keys.

Checks, each reported by name:
- signature: the envelope is a DSSE envelope of an export manifest, signed by a listed key;
- checksum / size: the artifact's SHA-256 and length are the manifest's;
- package: for a ZIP package, every member against SHA256SUMS and against the signed
  package manifest (a package verifies even without the export's envelope);
- trace / steps / ledger: inside a JSON bundle, every unredacted trace step and ledger
  entry re-hashes to its content hash, the trace hash is the hash of its step hashes,
  and each ledger entry's chain hash links its predecessor.
Exit status: 0 when every check passed, 1 when one failed, 2 when the input is unusable.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from aos_recording import dsse, hashing


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


class Verification:
    def __init__(self) -> None:
        self.checks: list[Check] = []

    def add(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append(Check(name, passed, detail))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)


def load_keys(paths: Iterable[Path]) -> list[dsse.PublicKey]:
    keys: list[dsse.PublicKey] = []
    for path in paths:
        text = Path(path).read_text()
        if text.lstrip().startswith("-----BEGIN"):
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"{path}: not an Ed25519 public key")
            keys.append(dsse.PublicKey.from_raw(key.public_bytes(serialization.Encoding.Raw,
                                                                 serialization.PublicFormat.Raw)))
        else:
            keys += dsse.load_keys_document(Path(path))
    return keys


def verify(artifact: bytes, envelope: str | None, keys: list[dsse.PublicKey]) -> Verification:
    v = Verification()
    if envelope is not None:
        try:
            manifest = json.loads(dsse.verify_exact(envelope, keys, dsse.MANIFEST_PAYLOAD_TYPE))
            v.add("signature", True, f"export {manifest.get('export_id')} signed by key "
                                     f"{json.loads(envelope)['signatures'][0].get('keyid')}")
            checksum = hashing.sha256(artifact).hex()
            v.add("checksum", checksum == manifest.get("checksum"),
                  f"artifact SHA-256 {checksum}; manifest {manifest.get('checksum')}")
            v.add("size", len(artifact) == manifest.get("size"),
                  f"artifact {len(artifact)} bytes; manifest {manifest.get('size')}")
        except (dsse.DsseError, ValueError, KeyError) as exc:
            v.add("signature", False, str(exc))
    if artifact[:4] == b"PK\x03\x04":
        _package(v, artifact, keys)
    elif artifact[:1] == b"{":
        _bundle(v, artifact)
    if not v.checks:
        v.add("input", False, "nothing to verify this artifact against: pass the export's --envelope")
    return v


def _package(v: Verification, artifact: bytes, keys: list[dsse.PublicKey]) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(artifact)) as archive:
            members = {info.filename: archive.read(info) for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        v.add("package", False, f"not a readable ZIP: {exc}")
        return
    sums = members.get("SHA256SUMS", b"").decode("utf-8", "replace").splitlines()
    listed = dict(reversed(line.split("  ", 1)) for line in sums if "  " in line)
    bad = [name for name, data in members.items() if name != "SHA256SUMS"
           and listed.get(name) != hashing.sha256(data).hex()]
    missing = sorted(set(listed) - set(members))
    v.add("package_sums", bool(listed) and not bad and not missing,
          f"{len(listed)} members listed in SHA256SUMS"
          + (f"; mismatched: {', '.join(sorted(bad))}" if bad else "")
          + (f"; missing: {', '.join(missing)}" if missing else ""))
    try:
        payload = dsse.verify_exact(members.get("package-manifest.dsse.json", b""), keys,
                                    dsse.PACKAGE_PAYLOAD_TYPE)
        manifest = json.loads(payload)
        files_ok = payload == members.get("package-manifest.json") and all(
            f["name"] in members and f["size"] == len(members[f["name"]])
            and f["sha256"] == hashing.sha256(members[f["name"]]).hex() for f in manifest["files"])
        v.add("package_manifest", files_ok, f"signed package manifest lists {len(manifest['files'])} files"
              + ("" if files_ok else "; a member differs from it"))
    except (dsse.DsseError, ValueError, KeyError, TypeError) as exc:
        v.add("package_manifest", False, str(exc))
    if "evidence.json" in members:
        _bundle(v, members["evidence.json"])


def _bundle(v: Verification, data: bytes) -> None:
    try:
        _bundle_checks(v, json.loads(data))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # A bundle that no longer has the shape this product writes was edited.
        v.add("bundle", False, f"not an evidence bundle this product wrote: {type(exc).__name__}: {exc}")


def _bundle_checks(v: Verification, bundle: dict[str, Any]) -> None:
    trace = bundle.get("trace")
    if trace:
        steps = trace.get("steps", [])
        bad = [s["step_index"] for s in steps if not s.get("redacted")
               and hashing.step_content_hash(s).hex() != s["content_hash"]]
        v.add("steps", not bad, f"{len(steps)} steps, {sum(1 for s in steps if s.get('redacted'))} redacted "
                                f"(hash carried as recorded)" + (f"; mismatched: {bad}" if bad else ""))
        root = hashing.trace_content_hash(bytes.fromhex(s["content_hash"]) for s in steps).hex()
        if trace.get("content_hash"):
            v.add("trace", root == trace["content_hash"], f"trace {trace['trace_id']} hash {trace['content_hash']}")
    entries = bundle.get("governance") or (bundle.get("records") if bundle.get("scope") == "AUDIT_SLICE" else None)
    if entries:
        _ledger(v, entries)


def _ledger(v: Verification, entries: list[dict[str, Any]]) -> None:
    problems = []
    previous: dict[str, Any] | None = None
    for e in entries:
        if not e.get("redacted") and hashing.ledger_content_hash(e).hex() != e["content_hash"]:
            problems.append(f"seq {e['seq']}: content")
        if hashing.chain_hash(bytes.fromhex(e["prev_hash"]), bytes.fromhex(e["content_hash"])).hex() != e["chain_hash"]:
            problems.append(f"seq {e['seq']}: chain hash")
        if previous is not None and e["seq"] == previous["seq"] + 1 and e["prev_hash"] != previous["chain_hash"]:
            problems.append(f"seq {e['seq']}: broken link")
        previous = e
    v.add("ledger", not problems, f"{len(entries)} ledger entries" + (f"; {', '.join(problems[:10])}"
                                                                      if problems else ": hashes and links hold"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aos_recording.verify_export", description=__doc__.split("\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--envelope", type=Path, help="the export's DSSE envelope (GetExport: dsse_envelope)")
    parser.add_argument("--keys", type=Path, action="append", required=True,
                        help="public keys: ListSigningKeys saved as JSON, or a PEM Ed25519 public key (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    args = parser.parse_args(argv)
    try:
        keys = load_keys(args.keys)
        artifact = args.artifact.read_bytes()
        envelope = args.envelope.read_text() if args.envelope else None
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = verify(artifact, envelope, keys)
    if args.json:
        print(json.dumps({"valid": result.ok, "checks": [c.__dict__ for c in result.checks]}, indent=2))
    else:
        for c in result.checks:
            print(f"{'ok  ' if c.passed else 'FAIL'} {c.name}: {c.detail}")
        print("VALID" if result.ok else "INVALID")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
