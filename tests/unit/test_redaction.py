"""Export redaction: what is removed, what survives byte for byte, and how it is counted."""
import base64
import json
import re
import time
from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from services.export import redaction
from services.export.redaction import KINDS, PROFILE, RedactionResult, Redactor, redact


def R(kind):
    return f"[REDACTED:{kind}]"


def jwt(header, payload, signature="SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"):
    def b64(doc):
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    return f"{b64(header)}.{b64(payload)}.{signature}"


# Fake credentials, assembled at runtime so secret scanners leave this file alone.
JWT_HS256 = jwt({"alg": "HS256", "typ": "JWT"}, {"sub": "1234567890", "name": "John Doe", "iat": 1516239022})
JWT_RS256 = jwt({"alg": "RS256", "kid": "k1"}, {"iss": "https://auth.example.com", "aud": "aos"})
JWT_NONE = jwt({"alg": "none"}, {"sub": "svc-export"}, signature="")
OPENAI_PROJ = "sk-" + "proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zT3BlbkFJ"
OPENAI_LEGACY = "sk-" + "4f9GhT2kLmN8pQrS6tUvW0xYz1AbCdEf3GhIjKlM5nOp"
ANTHROPIC = "sk-" + "ant-api03-" + "Zq7xW2vB9nM4kL1pR8sT5uY3eA6dF0gH_jK-cX"
AWS_AK = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_STS = "ASIA" + "Y34FZKBOKMUTVV7A"
AWS_SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"
GH_PAT = "ghp_" + "16C7e42F292c6912E7710c838347Ae178B4a"
GH_OAUTH = "gho_" + "aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5"
GH_FINE = "github_pat_" + "11ABCDEFG0123456789_abcdefghijKLMNOPQRSTuvwxyz012345"
SLACK_BOT = "xox" + "b-" + "1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_USER = "xox" + "p-" + "2345678901-3456789012-4567890123-0a1b2c3d4e5f"
SLACK_HOOK = "https://hooks.slack.com/services/" + "T024BE7LD/B08QXRC1Z/4xR9vPq2LmN7sT3wY6zK1aBc"
# Kinds an outside attack found leaking (issue #17 part 6).
STRIPE_SK = "sk_" + "live_" + "51HqLyjWDarjtT1zdp7dcXyZ0vBQpRsT4uVwXyZ01234abcd"
STRIPE_RK = "rk_" + "live_" + "a1B2c3D4e5F6g7H8i9J0k1L2"
OPENAI_LOWER = "sk-" + "proj-" + "qz7xwvbnmkltrpsudyeahgfjcoiq3xw9"
OPENAI_ALL_LOWER = "sk-" + "proj-" + "qzxwvbnmkltrpsudyeahgfjcoiqxw"
ANTHROPIC_LOWER = "sk-" + "ant-" + "api-" + "mqzpwoxnlkvbrtjhgsfdyeaucxz"
SK_LOWER_RANDOM = "sk-" + "qzxwvbnmkltrpsudyeahgfjcoi"
GOOGLE = "AI" + "za" + "SyD-9tSrke72PouQMnMX7KA2qm8bF1ZwE4Q"
PEM_RSA = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
           "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n-----END RSA PRIVATE KEY-----")
PEM_OPENSSH = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
               "QyNTUxOQAAACBHK2Ow5N3AE6oTwy6jBmvsXGyLWZ8rGA5cM4s0pYqJ1wAAAJg=\n-----END OPENSSH PRIVATE KEY-----")
PEM_EC = "-----BEGIN EC PRIVATE KEY-----\r\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\r\n-----END EC PRIVATE KEY-----"
PEM_ENCRYPTED = ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\n"
                 "MIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----")
PEM_PKCS8_ESCAPED = "-----BEGIN PRIVATE KEY-----\\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\\n-----END PRIVATE KEY-----"
PEM_TRUNCATED = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF"
BASIC = "Basic " + "YWxhZGRpbjpvcGVuc2VzYW1l"  # aladdin:opensesame
AWS_SK_RANDOM = "kR4vZ8qT1nYw0" + "Hc7LmB3xJ9eP2sG6uA5dF+oI/Ka"
GITLAB = "glpat-" + "xK3mP9qR2sT5vW8yZ1bC"
SENDGRID = "SG." + "ngeVfQFYQlKU0ufo8x5d1A" + "." + "TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr"


def case(template, *found):
    """A positive: `template` has one {} per (kind, secret) in `found`, which must all be redacted."""
    text = template.format(*(secret for _, secret in found))
    expected = template.format(*(R(kind) for kind, _ in found))
    return pytest.param(text, expected, dict(Counter(kind for kind, _ in found)), id=text[:60])


POSITIVES = [
    # bearer_token: the whole "Bearer <token>", counted once even when the token is a JWT or sk- key
    case("Authorization: {}", ("bearer_token", f"Bearer {JWT_HS256}")),
    case("curl -H 'authorization: {}' https://api", ("bearer_token", f"bearer {OPENAI_PROJ}")),
    case("retrying with {} failed", ("bearer_token", "BEARER 7f3c9a1e2b4d6f80a1c3e5f7b9d1f3a5==")),
    # jwt, including an unsigned one
    case("id_token={}&state=xyz", ("jwt", JWT_RS256)),
    case("session {} expired", ("jwt", JWT_NONE)),
    case('{{"access":"{}","refresh":"{}"}}', ("jwt", JWT_HS256), ("jwt", JWT_RS256)),
    # openai_key: any sk- key
    case("export OPENAI_API_KEY={}", ("openai_key", OPENAI_PROJ)),
    case("the legacy key {} was revoked.", ("openai_key", OPENAI_LEGACY)),
    case("fallback ({})", ("openai_key", ANTHROPIC)),
    # aws_access_key; aws_secret_key only after its label, which is kept
    case("aws_access_key_id = {}", ("aws_access_key", AWS_AK)),
    case("assumed role, temporary key {}.", ("aws_access_key", AWS_STS)),
    case("AWS_SECRET_ACCESS_KEY={}", ("aws_secret_key", AWS_SK)),
    case('{{"SecretAccessKey": "{}", "AccessKeyId": "{}"}}', ("aws_secret_key", AWS_SK), ("aws_access_key", AWS_STS)),
    case("secret key: {}", ("aws_secret_key", AWS_SK)),
    # github_token
    case("git clone https://{}@github.com/org/repo.git", ("github_token", GH_PAT)),
    case("oauth app token {}", ("github_token", GH_OAUTH)),
    case("GITHUB_TOKEN={} make release", ("github_token", GH_FINE)),
    # slack_token: tokens and webhook URLs
    case("bot token {}", ("slack_token", SLACK_BOT)),
    case("user={};", ("slack_token", SLACK_USER)),
    case("alerts go to {} on breach", ("slack_token", SLACK_HOOK)),
    # email
    case("contact {} for access", ("email", "alice@example.com")),
    case("cc: {}, {}.", ("email", "Bob.Smith+evidence@corp.example.co.uk"), ("email", "ops-team@sub.domain.io")),
    case("<{}>", ("email", "j_doe99@mail-server.example.org")),
    # card_number: every network, contiguous or grouped
    case("paid with {} today", ("card_number", "4111111111111111")),
    case("card {}, exp 12/27", ("card_number", "4111 1111 1111 1111")),
    case("mc {} / {}", ("card_number", "5555-5555-5555-4444"), ("card_number", "2223003122003222")),
    case("amex {} and discover {}", ("card_number", "3782 822463 10005"), ("card_number", "6011111111111117")),
    case("jcb {}; diners {}; visa13 {}",
         ("card_number", "3530111333300000"), ("card_number", "30569309025904"), ("card_number", "4222222222222")),
    # ssn
    case("SSN {} on file", ("ssn", "123-45-6789")),
    case("applicant ({})", ("ssn", "078-05-1120")),
    case("ssns: {}, {}.", ("ssn", "219-09-9999"), ("ssn", "665-99-0001")),
    # --- issue #17 part 6: kinds that leaked -----------------------------------------
    # Stripe secret and restricted live keys, whatever their length (detect-secrets' pattern, extended)
    case("STRIPE_KEY={} set", ("stripe_key", STRIPE_SK)),
    case("restricted {}", ("stripe_key", STRIPE_RK)),
    # lowercase sk- keys: vendor prefixes, or a random-looking lowercase run
    case("key {} in env", ("openai_key", OPENAI_LOWER)),
    case("key {} in env", ("openai_key", OPENAI_ALL_LOWER)),
    case("x-api-key:{}", ("openai_key", ANTHROPIC_LOWER)),
    case("OPENAI_KEY_{} leaked", ("openai_key", SK_LOWER_RANDOM)),
    # Google API keys
    case("https://maps.googleapis.com/maps/api/geocode/json?key={}&address=x", ("google_api_key", GOOGLE)),
    # PEM private-key blocks, whole: RSA, OpenSSH, EC (CRLF), encrypted with headers, JSON-escaped, cut short
    case("key:\n{}\nend", ("private_key", PEM_RSA)),
    case("{}", ("private_key", PEM_OPENSSH)),
    case("ec={};", ("private_key", PEM_EC)),
    case("{} (encrypted)", ("private_key", PEM_ENCRYPTED)),
    case('{{"pem": "{}"}}', ("private_key", PEM_PKCS8_ESCAPED)),
    case("log cut: {}", ("private_key", PEM_TRUNCATED)),
    # credentials inside URLs: only the password goes, the URL keeps its shape
    case("GET https://alice:{}@api.example.com/v1", ("url_password", "s3cr3t-Pa55")),
    case("DATABASE_URL=postgres://u:{}@h/db", ("url_password", "p")),
    case("redis://:{}@cache:6379/0 and amqp://svc:{}@mq", ("url_password", "hunter2"), ("url_password", "pa$$w0rd!")),
    # Authorization: Basic in free text (label kept), or bare when it decodes to user:password
    case("Authorization: {}", ("basic_auth", BASIC)),
    case('{{"authorization": "{}"}}', ("basic_auth", "basic dXNlcjpwYXNz")),
    case("curl -H '{}' https://api", ("basic_auth", BASIC)),
    # AWS secret access keys without a label: a 40-character run that looks random
    case("creds {} loaded", ("aws_secret_key", AWS_SK)),
    case("[{}, {}]", ("aws_access_key", AWS_AK), ("aws_secret_key", AWS_SK_RANDOM)),
    # internationalised email domains, punycode, and emails inside identifiers
    case("mail {}", ("email", "user@bücher.de")),
    case("mail {}", ("email", "user@例え.jp")),
    case("{} and {}", ("email", "user@xn--bcher-kva.de"), ("email", "ivan@example.xn--p1ai")),
    case("{}-42", ("email", "run-alice@example.com")),
    case("user:{}", ("email", "bob@corp.io")),
    case("by {} at 12:00", ("email", "Jürgen.Müller@bücher.example")),
    # a secret-named field written as text (serialised payloads, logs, env files, query strings)
    case("password={} next", ("secret_assignment", "hunter2")),
    case('{{"pwd": "{}", "user": "bob"}}', ("secret_assignment", "p@ss w0rd")),
    case("GET /x?api_key={}&page=2", ("secret_assignment", "abc123")),
    case('{{\\"client_secret\\": \\"{}\\"}}', ("secret_assignment", "xyz")),
    case("db_pass = {}; host=db; X-Auth-Token: {}", ("secret_assignment", "s3cr3t"), ("secret_assignment", "t0k")),
    # other provider formats from detect-secrets' plugins
    case("GITLAB_TOKEN={}", ("gitlab_token", GITLAB)),
    case("sendgrid {}", ("sendgrid_key", SENDGRID)),
]


@pytest.mark.parametrize("text, expected, counts", POSITIVES)
def test_secrets_and_pii_in_strings_are_replaced(text, expected, counts):
    assert redact(text) == RedactionResult(expected, counts)


@pytest.mark.parametrize("text, expected, counts", POSITIVES)
def test_positives_are_found_nested_in_containers(text, expected, counts):
    value = {"run": {"messages": [{"content": text}, ("tool", text)]}}
    result = redact(value)
    assert result.value == {"run": {"messages": [{"content": expected}, ("tool", expected)]}}
    assert result.counts == {kind: 2 * n for kind, n in counts.items()}


NEGATIVES = [
    # timestamps: epoch ms/s/us/ns, some of them Luhn-valid on purpose, and ISO forms
    "1732492800000", "created_at_ms=1700000000123", "1732492800005", "ts 1700000000129",
    "epoch 1732492800", "1732492804", "1732492800000004", "1732492800000000005",
    "2024-11-25T00:00:00.123456Z", "2024-11-25 00:00:00+00:00",
    # identifiers and digests
    "550e8400-e29b-41d4-a716-446655440000", "12345678-1234-1234-1234-123456789012",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "4111111111111111" + "ab" * 24,  # a 64-hex digest that begins like a card
    "commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
    "the secret key rotation landed in a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
    # digit runs that are not cards: Luhn failures, no card prefix, embedded, decimals
    "order 4111111111111112", "ORD-1234567890123456",
    "1234567812345670", "9999999999999995", "ref 8888 8888 8888 8888",
    "x4111111111111111", "4111111111111111a", "acct_4111111111111111",
    "12345411111111111111116789", "1234 4111 1111 1111 1111", "total 4111111111111111.50",
    # sk-, task-, near-miss tokens
    "sk-learn", "pip install sk-learn-compatible-estimator-api", "task-1234", "skeleton",
    "risk-assessment-framework-v2",
    "AKIAEXAMPLE", "ghp_short", "xoxb-short", "Bearer authentication is required", "use a Bearer token",
    # phones, addresses, versions
    "+1 (415) 555-2671", "+44 20 7946 0958", "call 415-555-2671",
    "192.168.1.10", "10.0.0.1:8080", "2001:db8::1", "user@localhost", "@dataclass(frozen=True)",
    "gpt-4o-2024-08-06", "claude-3-5-sonnet-20241022", "v1.2.3",
    # never-issued SSNs and other dashed numbers
    "000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000",
    "978-3-16-148410-0", "1-123-45-6789",
    # evidence we emit ourselves: content/chain hashes, seqs, UUIDs, ids, RFC 3339, epoch ms
    "chain_hash 326ffbb99ced4a061f4f86bc8e93861c5888da81685c2d106570bd796069ad07 seq 17",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "tenant-demo.run-support-103", "tenant-demo.trace-support-103", "exp_695c85644af941a4bf5258d048046199",
    "2026-11-01T12:00:00.000000Z", "1790000000123", "seq 42", "7", "118",
    "sha256-b64 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    # 40-character runs that are not secrets: git SHAs, words, low-entropy or one-case runs
    "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3", "ListAuditEntriesRequestPageTokenSealedV2",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "abcdefghijklmnopqrstuvwxyzabcdefghijklmn",
    "0123456789012345678901234567890123456789",
    # prose around the new detectors
    "Basic authentication is required", "the basic plan", "Authorization header missing",
    "the private key is stored in KMS", "-----BEGIN PUBLIC KEY-----", "sk-learn-compatible-estimator-api",
    "sk-internationalization-tests", "ask-questions-first", "https://api.example.com:8443/v1/items?x=1",
    "postgres://localhost:5432/evidence", "http://user@host/path", "see https://example.com/a@b",
    "AIza-short", "sk_test_only", "a@b", "name@host", "x@y.z",
    "max_tokens: 5", "input_tokens=1200", "token_count: 3", "keyboard: qwerty", "author: Jane", "passed: 12",
    "compass=north", "status=ok", "https://example.com/token", "the token expired", "password rotation is due",
    "",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_lookalikes_survive_unchanged(text):
    assert redact(text) == RedactionResult(text, {})
    assert redact({"note": text}) == RedactionResult({"note": text}, {})


@pytest.mark.parametrize("key", [
    "password", "db_passwd", "client_secret", "refresh_token", "openai_api_key", "X-Api-Key", "apiKey",
    "private_key", "Authorization", "aws_credentials", "Set-Cookie", "session_key", "aws_access_key_id",
    "AOS_AUTH_JWT_SECRET", "access_tokens", "secret_tokens",
    # issue #17 part 6: pwd / passphrase / private_key-style names
    "pwd", "PWD", "db_pwd", "passphrase", "ssh_passphrase", "priv_key", "privKey", "db_pass", "smtpPass",
    "pass", "PW", "client_key", "auth_key", "contraseña",
])
def test_secret_named_fields_lose_their_whole_value(key):
    for value in ("hunter2", 12345, 0, False, "", ["a", "b"], {"nested": "x"}):
        assert redact({key: value, "keep": 1}) == \
            RedactionResult({key: R("secret_field"), "keep": 1}, {"secret_field": 1})


def test_secret_named_field_set_to_none_stays_none():
    assert redact({"password": None}) == RedactionResult({"password": None}, {})


@pytest.mark.parametrize("key", [
    "token_count", "input_tokens", "output_tokens", "tokens", "total_tokens", "max_tokens", "inputTokens",
    "cache_read_input_tokens", "signing_key_id", "key", "monkey", "author",
    "passenger", "bypass", "compass_heading", "pass_rate", "passed", "power", "keyword", "primary_key",
])
def test_harmless_keys_are_not_secret_fields(key):
    assert redact({key: 1234}) == RedactionResult({key: 1234}, {})
    assert redact({key: "mail alice@example.com"}) == RedactionResult({key: f"mail {R('email')}"}, {"email": 1})


def test_secret_field_wins_over_string_patterns_and_counts_once():
    value = {"headers": {"Authorization": f"Bearer {JWT_HS256}",
                         "cookie": [f"sid={JWT_RS256}", "alice@example.com"]}}
    assert redact(value) == RedactionResult(
        {"headers": {"Authorization": R("secret_field"), "cookie": R("secret_field")}}, {"secret_field": 2})


def test_secrets_used_as_keys_are_redacted():
    value = {OPENAI_PROJ: {"scope": "all"}, "alice@example.com": "bob@example.com", "plain": 1,
             4111111111111111: "x"}
    assert redact(value) == RedactionResult(
        {R("openai_key"): {"scope": "all"}, R("email"): R("email"), "plain": 1, 4111111111111111: "x"},
        {"email": 2, "openai_key": 1})


def test_redacted_keys_never_collapse_into_one_entry():
    value = {AWS_AK: 1, AWS_STS: 2, "x": {GH_PAT: "a", GH_OAUTH: "b"}}
    assert redact(value) == RedactionResult(
        {R("aws_access_key"): 1, R("aws_access_key") + "#2": 2, "x": {R("github_token"): "a", R("github_token") + "#2": "b"}},
        {"aws_access_key": 2, "github_token": 2})


def test_a_redacted_key_never_overwrites_a_real_one():
    value = {AWS_AK: 1, R("aws_access_key"): 2}
    assert redact(value).value == {R("aws_access_key") + "#2": 1, R("aws_access_key"): 2}


def test_secret_named_key_that_is_itself_a_token():
    # The field rule reads the original key; the key itself is redacted as text.
    assert redact({f"{OPENAI_PROJ}_secret": "v"}) == RedactionResult(
        {f"{R('openai_key')}": R("secret_field")}, {"openai_key": 1, "secret_field": 1})


@pytest.mark.parametrize("pairs, expected", [
    ([["Authorization", f"Bearer {JWT_HS256}"], ["X-Api-Key", "k-123"], ["Accept", "application/json"]],
     [["Authorization", R("secret_field")], ["X-Api-Key", R("secret_field")], ["Accept", "application/json"]]),
    ((("cookie", "sid=abc"), ("User-Agent", "curl/8")), (("cookie", R("secret_field")), ("User-Agent", "curl/8"))),
    ({"headers": [["proxy-authorization", BASIC], ["x-request-id", "r-1"]]},
     {"headers": [["proxy-authorization", R("secret_field")], ["x-request-id", "r-1"]]}),
    ([["db_pass", 1234], ["pwd", ["a", "b"]]], [["db_pass", R("secret_field")], ["pwd", R("secret_field")]]),
])
def test_secret_values_in_name_value_pairs(pairs, expected):
    result = redact(pairs)
    assert result.value == expected
    assert result.counts == {"secret_field": json.dumps(expected).count(R("secret_field"))}


@pytest.mark.parametrize("pair", [
    ["Accept", "application/json"], ["the password is", "hunter2"], ["password"], ["password", None],
    ["tokens", 1200], ["password", "x", "y"],
])
def test_lists_that_are_not_secret_pairs_are_only_scanned(pair):
    assert redact(pair) == RedactionResult(pair, {})


def luhn_valid(number):
    digits = [int(d) for d in reversed(number)]
    return (sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])) % 10 == 0


@pytest.mark.parametrize("number", ["1732492800005", "1700000000129", "1732492804", "1732492800000004",
                                    "1732492800000000005"])
def test_luhn_valid_epoch_timestamps_are_not_card_numbers(number):
    # These pass Luhn (as one in ten timestamps does); what keeps them is the card-prefix rule.
    assert luhn_valid(number)
    assert redact(f"at {number}") == RedactionResult(f"at {number}", {})


def test_non_string_scalars_are_returned_untouched():
    scalars = [4111111111111111, 1732492800000, 3.14, True, None, datetime(2024, 11, 25, tzinfo=timezone.utc),
               Decimal("4111111111111111"), b"alice@example.com"]
    result = redact(scalars)
    assert result.counts == {}
    assert all(a is b for a, b in zip(result.value, scalars))


def test_export_record_end_to_end():
    created = datetime(2024, 11, 25, tzinfo=timezone.utc)
    record = {
        "run_id": "run-7f3c",
        "created_at": created,
        "usage": {"input_tokens": 5, "output_tokens": 812, "token_count": 1234, "cost": Decimal("0.0123")},
        "request": {
            "headers": {"X-Api-Key": OPENAI_PROJ, "Accept": "application/json"},
            "messages": [
                {"role": "user", "content": "My card is 4111 1111 1111 1111, mail alice@example.com, ssn 123-45-6789"},
                {"role": "tool", "content": ("aws", f"key {AWS_AK} posted to {SLACK_HOOK} with Bearer {JWT_HS256}")},
            ],
        },
        "events": [{"ts_ms": 1732492800000, "note": "retry at 1700000000123 by task-1234"}, None, True],
        "password": None,
        "db_password": 12345,
    }
    result = redact(record)
    assert result.value == {
        "run_id": "run-7f3c",
        "created_at": created,
        "usage": {"input_tokens": 5, "output_tokens": 812, "token_count": 1234, "cost": Decimal("0.0123")},
        "request": {
            "headers": {"X-Api-Key": R("secret_field"), "Accept": "application/json"},
            "messages": [
                {"role": "user", "content": f"My card is {R('card_number')}, mail {R('email')}, ssn {R('ssn')}"},
                {"role": "tool", "content": ("aws", f"key {R('aws_access_key')} posted to {R('slack_token')} with "
                                                    f"{R('bearer_token')}")},
            ],
        },
        "events": [{"ts_ms": 1732492800000, "note": "retry at 1700000000123 by task-1234"}, None, True],
        "password": None,
        "db_password": R("secret_field"),
    }
    assert result.counts == {"aws_access_key": 1, "bearer_token": 1, "card_number": 1, "email": 1,
                             "secret_field": 2, "slack_token": 1, "ssn": 1}
    assert list(result.counts) == sorted(result.counts)
    assert list(result.value) == list(record)  # dict order preserved
    assert redact(record) == result  # deterministic


def test_redactor_accumulates_counts_across_calls():
    redactor = Redactor()
    assert redactor.counts == {}
    assert redactor.redact("ssn 123-45-6789") == f"ssn {R('ssn')}"
    assert redactor.redact({"token": "t", "to": "alice@example.com"}) == \
        {"token": R("secret_field"), "to": R("email")}
    assert redactor.redact(["078-05-1120"]) == [R("ssn")]
    assert redactor.counts == {"email": 1, "secret_field": 1, "ssn": 2}
    assert list(redactor.counts) == ["email", "secret_field", "ssn"]


def test_redacted_output_is_a_fixed_point():
    once = redact([param.values[0] for param in POSITIVES])
    assert redact(once.value) == RedactionResult(once.value, {})


def test_profile_name():
    # v2 redacts more than v1 did: a manifest naming v1 was redacted less.
    assert PROFILE == "aos-default-v2"


@pytest.mark.parametrize("text", [
    "a" * 100_000 + "@", "a." * 50_000 + "@b", "x@" + "a-" * 50_000, "eyJ" + "A" * 100_000,
    "sk-" + "a-" * 50_000, "4111 " * 20_000, "1" * 100_000, "123-45-" * 20_000, "Bearer " * 20_000,
    "secret key " + "A" * 100_000,
    "-----BEGIN PRIVATE KEY-----" * 5_000, "-----BEGIN PRIVATE KEY-----" + "a-" * 50_000,
    "-----BEGIN PRIVATE KEY-----" + "Proc-Type: " * 10_000, "a://" + "b:" * 50_000, "x://u:" + "p" * 100_000,
    "Authorization: Basic " * 5_000, "basic " + "A" * 100_000, "u@例" + "例-" * 50_000, "ü" * 50_000 + "@",
    "sk-" + "a" * 100_000, "Ab1" * 40_000, "AIza" * 30_000, "sk_live_" * 20_000, "glpat-" + "a" * 100_000,
])
def test_adversarial_inputs_stay_linear(text):
    start = time.perf_counter()
    redact(text)
    assert time.perf_counter() - start < 1.0


# --- properties: deterministic and idempotent over arbitrary nested values -------------

FRAGMENTS = [param.values[0] for param in POSITIVES] + NEGATIVES + [
    "password", "Authorization", "X-Api-Key", "pwd", "pass", "Pass", "_pw", "[REDACTED:email]", "[REDACTED:x] ",
    "@", "://", ":", "=", "-", ".", "#2", " ", "\n"]
_ALPHABET = "abcXYZ019@.:/-_+=[]#' \n\\üé例"
TEXT = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(_ALPHABET, max_size=12)), max_size=6).map("".join)
VALUES = st.recursive(
    st.one_of(TEXT, st.integers(), st.none(), st.booleans()),
    lambda children: st.one_of(st.lists(children, max_size=4), st.tuples(TEXT, children),
                               st.dictionaries(st.one_of(TEXT, st.sampled_from(FRAGMENTS)), children, max_size=4)),
    max_leaves=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES)
def test_redaction_is_deterministic_and_idempotent(value):
    once = redact(value)
    assert redact(value) == once                                  # same input, same output and counts
    assert redact(once.value) == RedactionResult(once.value, {})  # nothing left to redact, nothing recounted


def test_a_placeholder_in_a_key_does_not_hide_a_secret_name():
    # A key holding our placeholder text is still judged by its words.
    assert redact({"[REDACTED:x] password": "hunter2"}) == \
        RedactionResult({"[REDACTED:x] password": R("secret_field")}, {"secret_field": 1})


def test_detect_secrets_global_settings_play_no_part(monkeypatch):
    # Only the plugins' patterns and pure functions are used: the library's global
    # settings (which its scanner and analyze_line read) neither change what is found
    # nor are changed by redaction, and its verify() (an HTTP call to Stripe, AWS, ...
    # that analyze_line makes when the verification filter is on) is never reached.
    import socket

    from detect_secrets.settings import get_settings, transient_settings

    def no_network(*args, **kwargs):
        raise AssertionError("redaction opened a network connection")

    def fresh(value):
        redaction._scan_short.cache_clear()  # scanned now, under these settings, not remembered
        return redact(value)

    monkeypatch.setattr(socket.socket, "connect", no_network)
    value = {"note": f"stripe {STRIPE_SK}, gitlab {GITLAB}, aws {AWS_SK_RANDOM}", "pwd": "x"}
    expected = fresh(value)
    before = get_settings().json()
    with transient_settings({"plugins_used": [], "filters_used": []}):
        assert fresh(value) == expected
    verifying = {"path": "detect_secrets.filters.common.is_ignored_due_to_verification_policies", "min_level": 2}
    with transient_settings({"plugins_used": [{"name": "StripeDetector"}], "filters_used": [verifying]}):
        assert fresh(value) == expected
    assert get_settings().json() == before
    assert expected.counts == {"aws_secret_key": 1, "gitlab_token": 1, "secret_field": 1, "stripe_key": 1}


def test_kinds_have_stable_manifest_names():
    # Manifests name these kinds; renaming one breaks comparisons across exports.
    assert KINDS == (
        "aws_access_key", "aws_secret_key", "azure_storage_key", "basic_auth", "bearer_token", "card_number",
        "email", "github_token", "gitlab_token", "google_api_key", "jwt", "mailchimp_key", "openai_key",
        "private_key", "pypi_token", "secret_assignment", "secret_field", "sendgrid_key", "slack_token",
        "square_oauth_secret", "ssn", "stripe_key", "twilio_key", "url_password")


def test_the_contract_names_every_kind():
    # protos/aos/evidence/v1/bundle.proto documents the kinds a manifest may name.
    from pathlib import Path

    proto = (Path(__file__).resolve().parents[2] / "protos/aos/evidence/v1/bundle.proto").read_text()
    comment = proto[proto.index("message RedactionCount {"):proto.index("string kind = 1;")]
    words = set(re.findall(r"[a-z0-9_]+", comment))
    assert set(KINDS) <= words, set(KINDS) - words
    assert PROFILE in comment
