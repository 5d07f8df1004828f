"""Export redaction: what is removed, what survives byte for byte, and how it is counted."""
import base64
import json
import time
from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from services.export.redaction import PROFILE, RedactionResult, Redactor, redact


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
])
def test_harmless_keys_are_not_secret_fields(key):
    assert redact({key: 1234}) == RedactionResult({key: 1234}, {})
    assert redact({key: "mail alice@example.com"}) == RedactionResult({key: f"mail {R('email')}"}, {"email": 1})


def test_secret_field_wins_over_string_patterns_and_counts_once():
    value = {"headers": {"Authorization": f"Bearer {JWT_HS256}",
                         "cookie": [f"sid={JWT_RS256}", "alice@example.com"]}}
    assert redact(value) == RedactionResult(
        {"headers": {"Authorization": R("secret_field"), "cookie": R("secret_field")}}, {"secret_field": 2})


def test_keys_are_never_rewritten():
    value = {"alice@example.com": "bob@example.com", 4111111111111111: "x"}
    assert redact(value) == RedactionResult({"alice@example.com": R("email"), 4111111111111111: "x"}, {"email": 1})


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
    assert PROFILE == "aos-default-v1"


@pytest.mark.parametrize("text", [
    "a" * 100_000 + "@", "a." * 50_000 + "@b", "x@" + "a-" * 50_000, "eyJ" + "A" * 100_000,
    "sk-" + "a-" * 50_000, "4111 " * 20_000, "1" * 100_000, "123-45-" * 20_000, "Bearer " * 20_000,
    "secret key " + "A" * 100_000,
])
def test_adversarial_inputs_stay_linear(text):
    start = time.perf_counter()
    redact(text)
    assert time.perf_counter() - start < 1.0
