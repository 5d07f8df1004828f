"""aos_recording.note: Go's sumdb/note test vectors (a key, a note and signatures made by Go),
checkpoint and cosignature round trips, the signed-note rules, and every tamper caught.
Interop with an implementation not written here: tests/unit/test_tlog_interop.py."""
import base64
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aos_recording import note, tlog

# golang.org/x/mod/sumdb/note note_test.go (BSD-3-Clause, The Go Authors).
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = b"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n".encode()
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n".encode()

ORIGIN = note.log_origin(note.DEFAULT_LOG_ORIGIN, "ledger", "tenant-a")


def peter_key() -> Ed25519PrivateKey:
    raw = base64.b64decode(PETER_SKEY.split("+", 4)[4])
    assert raw[0] == note.SIG_ED25519
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


def reason(call, *args, **kwargs) -> str:
    with pytest.raises(note.NoteError) as exc:
        call(*args, **kwargs)
    return exc.value.reason


# --- Go's vectors -----------------------------------------------------------------------------

def test_go_sign_is_byte_exact():
    assert note.sign_note(TEXT, "PeterNeumann", peter_key()) == TEXT + b"\n" + PETER_SIG
    assert note.verifier_key("PeterNeumann", peter_key().public_key()) == PETER_VKEY


def test_go_verifier_keys_and_every_mangling_refused():
    v = note.parse_verifier_key(PETER_VKEY)
    assert (v.name, v.key_id.hex(), v.sig_type) == ("PeterNeumann", "c74f20a3", note.SIG_ED25519)
    assert v.vkey() == PETER_VKEY
    for i in range(len(PETER_VKEY) + 1):
        for j in range(i + 1, len(PETER_VKEY) + 1):
            if (i, j) != (0, len(PETER_VKEY)):
                with pytest.raises(note.NoteError):
                    note.parse_verifier_key(PETER_VKEY[i:j])
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1:]
        with pytest.raises(note.NoteError):
            note.parse_verifier_key(mangled)
    # wrong key length and unknown algorithm, each with its key id adjusted (Go's cases)
    for bad in ("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
                "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"):
        assert reason(note.parse_verifier_key, bad) == note.MALFORMED_KEY


def test_go_open():
    both = TEXT + b"\n" + PETER_SIG + ENOCH_SIG
    assert note.open_note(both, [PETER_VKEY]) == (TEXT, ("PeterNeumann",))  # Enoch unknown: ignored
    assert note.open_note(both, [PETER_VKEY, ENOCH_VKEY]) == (TEXT, ("PeterNeumann", "EnochRoot"))  # Go-made
    assert reason(note.open_note, both, []) == note.UNVERIFIED
    # a verifier listed twice is fine; two different keys under one name and id are not
    assert note.open_note(TEXT + b"\n" + PETER_SIG, [ENOCH_VKEY, PETER_VKEY, ENOCH_VKEY])[1] == ("PeterNeumann",)
    # too many signatures
    assert reason(note.open_note, TEXT + b"\n" + PETER_SIG * 101, [PETER_VKEY]) == note.MALFORMED_NOTE
    # a bad signature of a known key rejects the note
    bad = PETER_SIG[:60] + b"ABCD" + PETER_SIG[60:]
    assert reason(note.open_note, TEXT + b"\n" + bad, [PETER_VKEY]) == note.BAD_SIGNATURE
    # unknown keys' lines, repeated or corrupt, are ignored...
    enoch_bad = ENOCH_SIG[:60] + b"ABCD" + ENOCH_SIG[60:]
    assert note.open_note(TEXT + b"\n" + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_bad, [PETER_VKEY])[1] == \
        ("PeterNeumann",)
    # ...but a known key signing twice is refused (Go skips the repeat; C2SP verifiers such
    # as aics-tlog refuse it, and so do we: a note has one line per key)
    assert reason(note.open_note, TEXT + b"\n" + PETER_SIG + PETER_SIG, [PETER_VKEY]) == note.DUPLICATE_SIGNATURE
    for msg in (TEXT, TEXT + b"\n", TEXT + b"\n" + PETER_SIG[:-1], b"\x01" + TEXT + b"\n" + PETER_SIG,
                b"\xff" + TEXT + b"\n" + PETER_SIG,
                TEXT + b"\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=".encode(),
                TEXT + b"\n" + PETER_SIG + b"Unexpected line.\n"):
        assert reason(note.open_note, msg, [PETER_VKEY]) == note.MALFORMED_NOTE
    # a line naming another key, or Peter's name with another id, is an unknown key's
    assert reason(note.open_note, TEXT + b"\n" + PETER_SIG.replace(b"PeterNeumann", b"CarmenSandiego"),
                  [PETER_VKEY]) == note.UNVERIFIED
    assert reason(note.open_note, TEXT + b"\n" + PETER_SIG.replace(b"x08g", b"xxxx"), [PETER_VKEY]) == note.UNVERIFIED


def test_ambiguous_verifiers_are_a_configuration_error():
    other = Ed25519PrivateKey.generate().public_key()
    same_name_id = note.NoteVerifier.ed25519("PeterNeumann", other)
    object.__setattr__(same_name_id, "key_id", bytes.fromhex("c74f20a3"))  # a forged collision
    with pytest.raises(ValueError):
        note.open_note(TEXT + b"\n" + PETER_SIG, [PETER_VKEY, same_name_id])


# --- checkpoints ------------------------------------------------------------------------------

def test_log_origins_follow_spec_section_5():
    assert note.log_origin("aos-evidence.local", "ledger", "t1") == "aos-evidence.local/ledger/t1"
    assert note.log_origin("evidence.example.com/", "exports", "t1") == "evidence.example.com/exports/t1"
    for bad in (("", "ledger", "t"), ("a", "other", "t"), ("a", "ledger", ""), ("a", "ledger", "x/y"),
                ("a b", "ledger", "t"), ("a+b", "ledger", "t"), ("a", "ledger", "t\n")):
        with pytest.raises(ValueError):
            note.log_origin(*bad)


def test_checkpoint_body_and_strict_parse():
    root = tlog.leaf_hash(b"x")
    cp = note.Checkpoint(ORIGIN, 20852163, root)
    body = cp.body()
    assert body == f"{ORIGIN}\n20852163\n{base64.b64encode(root).decode()}\n".encode()
    assert note.Checkpoint.parse(body) == cp
    with_ext = note.Checkpoint(ORIGIN, 0, tlog.EMPTY_ROOT, ("ext one", "ext-two"))
    assert note.Checkpoint.parse(with_ext.body()) == with_ext
    b64root = base64.b64encode(root).decode()
    # the C2SP example checkpoint parses
    example = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert note.Checkpoint.parse(example).size == 20852163
    for bad in (f"{ORIGIN}\n1\n{b64root}".encode(),            # no final newline
                f"{ORIGIN}\n1\n".encode(),                      # two lines
                f"\n1\n{b64root}\n".encode(),                   # empty origin
                f"{ORIGIN}\n01\n{b64root}\n".encode(),          # leading zero
                f"{ORIGIN}\n-1\n{b64root}\n".encode(),
                f"{ORIGIN}\n+1\n{b64root}\n".encode(),
                f"{ORIGIN}\n١\n{b64root}\n".encode(),           # a non-ASCII digit
                f"{ORIGIN}\n{1 << 63}\n{b64root}\n".encode(),
                f"{ORIGIN}\n1\n{b64root[:-1]}\n".encode(),      # unpadded
                f"{ORIGIN}\n1\n{base64.b64encode(root[:31]).decode()}\n".encode(),
                f"{ORIGIN}\n1\n{b64root}\n\n".encode(),         # an empty extension line
                f"{ORIGIN}\n1\n{b64root}\next\r\n".encode(),    # a control character
                b"\xff\n1\n" + b64root.encode() + b"\n"):
        assert reason(note.Checkpoint.parse, bad) == note.MALFORMED_CHECKPOINT, bad
    # a non-canonical base64 root (unused low bits set) names the same bytes: refused
    noncanonical = b64root[:-2] + chr(ord(b64root[-2]) + 1) + "="
    assert base64.b64decode(noncanonical) == root
    assert reason(note.Checkpoint.parse, f"{ORIGIN}\n1\n{noncanonical}\n".encode()) == note.MALFORMED_CHECKPOINT
    for args in ((ORIGIN, -1, root), (ORIGIN, 1, root[:31]), ("", 1, root), ("a\nb", 1, root),
                 (ORIGIN, 1, root, ("",))):
        with pytest.raises(ValueError):
            note.Checkpoint(*args)


def test_signed_checkpoint_round_trip_and_wrong_origin():
    log = Ed25519PrivateKey.generate()
    cp = note.Checkpoint(ORIGIN, 5, tlog.leaf_hash(b"5"))
    signed = note.sign_checkpoint(cp, log)
    vkey = note.verifier_key(ORIGIN, log.public_key())
    assert note.open_checkpoint(signed, vkey, origin=ORIGIN)[0] == cp
    assert note.open_note(signed, [vkey]) == (cp.body(), (ORIGIN,))
    other = note.log_origin(note.DEFAULT_LOG_ORIGIN, "ledger", "tenant-b")
    assert reason(note.open_checkpoint, signed, vkey, origin=other) == note.MALFORMED_CHECKPOINT
    # another key under the same name is an unknown key
    assert reason(note.open_checkpoint, signed, note.verifier_key(ORIGIN, Ed25519PrivateKey.generate().public_key())) \
        == note.UNVERIFIED


# --- cosignatures -----------------------------------------------------------------------------

def test_cosignature_is_cosignature_v1():
    witness = Ed25519PrivateKey.generate()
    body = note.Checkpoint(ORIGIN, 7, tlog.leaf_hash(b"7")).body()
    line = note.cosign(body, "witness.example/w1", witness, 1679315147)
    assert line.startswith("— witness.example/w1 ".encode()) and line.endswith(b"\n")
    raw = base64.b64decode(line.split(b" ")[2])
    pub = witness.public_key().public_bytes_raw()
    assert raw[:4] == note.key_id("witness.example/w1", 0x04, pub)
    assert struct.unpack(">Q", raw[4:12])[0] == 1679315147
    # the signed message, spelled out as in the spec
    witness.public_key().verify(raw[12:], b"cosignature/v1\ntime 1679315147\n" + body)
    assert note.cosigner_key("witness.example/w1", pub) == \
        f"witness.example/w1+{raw[:4].hex()}+{base64.b64encode(bytes([4]) + pub).decode()}"
    with pytest.raises(note.NoteError):
        note.cosign(b"not a checkpoint\n", "w", witness, 1)


@pytest.fixture(scope="module")
def cosigned():
    log = Ed25519PrivateKey.generate()
    witnesses = [Ed25519PrivateKey.generate() for _ in range(3)]
    names = [f"witness.example/w{i}" for i in range(3)]
    body = note.Checkpoint(ORIGIN, 1000, tlog.leaf_hash(b"1000")).body()
    signed = note.sign_note(body, ORIGIN, log)
    lines = [note.cosign(body, n, w, 1_700_000_000 + i) for i, (n, w) in enumerate(zip(names, witnesses))]
    return {"log": note.verifier_key(ORIGIN, log.public_key()),
            "witnesses": [note.cosigner_key(n, w.public_key()) for n, w in zip(names, witnesses)],
            "signed": signed, "lines": lines, "body": body, "names": names, "keys": witnesses}


def test_k_of_n_policy(cosigned):
    full = note.add_signatures(cosigned["signed"], cosigned["lines"][:2])
    assert note.add_signatures(full, cosigned["lines"][:2]) == full  # repeats are not added twice
    got = note.require_cosignatures(full, cosigned["witnesses"], 2, log_key=cosigned["log"])
    assert [(v.name, v.timestamp) for v in got] == [(cosigned["names"][0], 1_700_000_000),
                                                     (cosigned["names"][1], 1_700_000_001)]
    assert reason(note.require_cosignatures, full, cosigned["witnesses"], 3) == note.TOO_FEW_COSIGNATURES
    assert reason(note.require_cosignatures, cosigned["signed"], cosigned["witnesses"], 1) == \
        note.TOO_FEW_COSIGNATURES
    # a cosignature dated after not_after does not count
    assert reason(note.require_cosignatures, full, cosigned["witnesses"], 2,
                  not_after=1_700_000_000) == note.TOO_FEW_COSIGNATURES
    # one key listed under two names counts once
    twin = note.cosigner_key("witness.example/twin", cosigned["keys"][0].public_key())
    twin_line = note.cosign(cosigned["body"], "witness.example/twin", cosigned["keys"][0], 1_700_000_005)
    doubled = note.add_signatures(cosigned["signed"], [cosigned["lines"][0], twin_line])
    assert reason(note.require_cosignatures, doubled, [cosigned["witnesses"][0], twin], 2) == \
        note.TOO_FEW_COSIGNATURES
    # the log's own signature is no cosignature, and a note key is no witness key
    with pytest.raises(ValueError):
        note.require_cosignatures(full, [cosigned["log"]], 1)
    with pytest.raises(ValueError):
        note.require_cosignatures(full, cosigned["witnesses"], 0)
    # the log key must verify when given
    assert reason(note.require_cosignatures, note.add_signatures(
        note.sign_note(cosigned["body"], ORIGIN, Ed25519PrivateKey.generate()), cosigned["lines"]),
        cosigned["witnesses"], 2, log_key=cosigned["log"]) == note.UNVERIFIED


def test_a_cosignature_for_another_checkpoint_or_time_fails(cosigned):
    other_body = note.Checkpoint(ORIGIN, 1001, tlog.leaf_hash(b"1001")).body()
    moved = note.cosign(other_body, cosigned["names"][0], cosigned["keys"][0], 1_700_000_000)
    assert reason(note.require_cosignatures, note.add_signatures(cosigned["signed"], [moved]),
                  cosigned["witnesses"], 1) == note.BAD_SIGNATURE
    # the timestamp is signed: change it and the signature fails
    name, b64 = cosigned["lines"][0][len("— ".encode()):-1].split(b" ")
    raw = bytearray(base64.b64decode(b64))
    raw[11] ^= 1
    retimed = "— ".encode() + name + b" " + base64.b64encode(bytes(raw)) + b"\n"
    assert reason(note.require_cosignatures, note.add_signatures(cosigned["signed"], [retimed]),
                  cosigned["witnesses"], 1) == note.BAD_SIGNATURE


def test_every_bit_flip_of_a_cosigned_checkpoint_is_caught(cosigned):
    """Flip each bit of a checkpoint note carrying the log's signature and two cosignatures:
    the client's check (log key, 2 of the witnesses) refuses every one."""
    full = note.add_signatures(cosigned["signed"], cosigned["lines"][:2])
    note.require_cosignatures(full, cosigned["witnesses"], 2, log_key=cosigned["log"])
    for bit in range(len(full) * 8):
        tampered = bytearray(full)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(note.NoteError):
            note.require_cosignatures(bytes(tampered), cosigned["witnesses"], 2, log_key=cosigned["log"])


def test_note_structure_limits():
    log = Ed25519PrivateKey.generate()
    body = note.Checkpoint(ORIGIN, 1, tlog.leaf_hash(b"1")).body()
    with pytest.raises(note.NoteError):
        note.sign_note(b"no final newline", ORIGIN, log)
    with pytest.raises(ValueError):
        note.sign_note(body, "bad name", log)
    signed = note.sign_note(body, ORIGIN, log)
    vkey = note.verifier_key(ORIGIN, log.public_key())
    # sixteen unknown signatures beside ours are accepted (signed-note: MUST accept ≥ 16)
    others = [note.note_signature(body, f"other.example/{i}", Ed25519PrivateKey.generate()) for i in range(16)]
    assert note.open_note(note.add_signatures(signed, others), [vkey])[1] == (ORIGIN,)
    assert reason(note.open_note, b"x" * (note.MAX_NOTE_BYTES + 1), [vkey]) == note.MALFORMED_NOTE
    assert reason(note.open_note, signed.replace("—".encode(), b"-"), [vkey]) == note.MALFORMED_NOTE
