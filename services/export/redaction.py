"""Deterministic redaction applied to every evidence export before it is rendered.

Two mechanisms, both counted per kind for the export's RedactionSummary:

- secret-named fields: the whole value of a dict entry whose key names a secret
  ("password", "pwd", "openai_api_key", "X-Api-Key", ...) becomes
  "[REDACTED:secret_field]", and so does the value of a ``[name, value]`` pair
  (headers as lists: ``[["Authorization", "Bearer ..."]]``) whose name does;
- secrets and PII inside any string value, and inside any string dict key (a token
  used as a key), become "[REDACTED:<kind>]".

The detectors are our own narrow patterns where a library's would miss or over-match
(each says why), and Yelp's detect-secrets plugins for the provider formats and the
entropy measure; only their patterns and pure functions are used, never their scan
or settings machinery, so nothing is shared between calls or exports. Patterns are
precise rather than greedy: a redaction that eats epoch milliseconds, UUIDs or
digests damages the evidence. Redaction is a pure function of its input: the same
value gives the same output and the same counts.
"""
from __future__ import annotations

import base64
import bisect
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.keyword import DENYLIST as _KEYWORD_DENYLIST
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

# Declared in export manifests; a change to what is redacted needs a new profile name.
# v2 (issue #17): more secret field names, provider keys, PEM blocks, URL passwords,
# Basic credentials, header pairs, secrets as dict keys, unlabelled AWS secret keys,
# internationalised emails.
PROFILE = "aos-default-v2"

_SECRET_FIELD = "secret_field"
_FIELD_PLACEHOLDER = f"[REDACTED:{_SECRET_FIELD}]"

# Matched as substrings of the key after lowercasing and dropping separators, so
# "api_key", "API-Key", "apiKey" and "x_api_key" all read as "apikey". detect-secrets'
# KeywordDetector list ("pwd", "priv_key", "db_pass", "client_key", ...) is merged in,
# spelled the same way ("priv_?key" -> "privkey").
_SECRET_KEY_MARKERS = tuple(dict.fromkeys(
    ("password", "passwd", "passphrase", "secret", "token", "apikey", "privatekey",
     "authorization", "credential", "cookie", "sessionkey", "accesskey")
    + tuple(word.replace("_?", "").replace("_", "") for word in _KEYWORD_DENYLIST)))
# Words too short to match as substrings ("pass" is in "passenger", "bypass"), so
# they count only as the key's last word: "pass", "db_pass", "smtpPass", "pw", not
# "pass_rate".
_SECRET_KEY_WORDS = frozenset(("pass", "pw"))
_KEY_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# LLM usage counters ("input_tokens", "max_tokens", "token_count") contain "token" but
# hold no secret, so a key ending in one of these words is exempt from the "token"
# marker. The rest of such a key is still checked, against the other markers and
# against words that make it a list of credentials ("access_tokens", "auth_tokens").
_TOKEN_COUNTER_SUFFIXES = ("tokens", "tokencount")
_CREDENTIAL_TOKEN_QUALIFIERS = ("access", "refresh", "auth", "bearer", "session", "csrf", "api", "jwt")
_KEY_SEPARATORS = re.compile(r"[\s._-]+")
_PLACEHOLDERS = re.compile(r"\[REDACTED:[a-z0-9_]+\]")


@functools.lru_cache(maxsize=4096)  # exports repeat the same few keys millions of times
def _is_secret_key(key: str) -> bool:
    """Whether a dict key names a secret, so its whole value is withheld."""
    # A placeholder in a key stands for what was removed, not for a word of a name
    # ("[REDACTED:aws_access_key]" names nothing): judged as a break between words.
    # Not skipped: "[REDACTED:x] password" still names a password.
    key = _PLACEHOLDERS.sub("\0", key)
    normalised = _KEY_SEPARATORS.sub("", key.lower())
    words = _KEY_WORDS.findall(key)
    if words and words[-1].lower() in _SECRET_KEY_WORDS:
        return True
    for suffix in _TOKEN_COUNTER_SUFFIXES:
        if normalised.endswith(suffix):
            head = normalised[: -len(suffix)]
            return any(word in head for word in _SECRET_KEY_MARKERS + _CREDENTIAL_TOKEN_QUALIFIERS)
    return any(marker in normalised for marker in _SECRET_KEY_MARKERS)


# Card networks as (prefix digits, lowest prefix, highest prefix, valid lengths).
# Requiring a real IIN *with its length* is what keeps timestamps out: epoch
# milliseconds for 2001-2033 are 13 digits starting with "1", and no network issues
# 1-prefixed cards; the only 13-digit cards are Visa ("4"), which as epoch ms is
# year 2096. Epoch seconds (10 digits) are below the 13-digit minimum, and epoch
# micro/nanoseconds start with "1" until 2033.
_CARD_NETWORKS = (
    (1, 4, 4, (13, 16, 19)),                                                       # Visa
    (2, 51, 55, (16,)), (4, 2221, 2720, (16,)),                                    # Mastercard
    (2, 34, 34, (15,)), (2, 37, 37, (15,)),                                        # Amex
    (4, 6011, 6011, range(16, 20)), (2, 65, 65, range(16, 20)), (3, 644, 649, range(16, 20)),  # Discover
    (4, 3528, 3589, range(16, 20)),                                                # JCB
    (2, 36, 36, range(14, 20)), (2, 38, 38, range(14, 20)), (3, 300, 305, range(14, 20)),  # Diners
)


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _is_card_number(candidate: str) -> bool:
    digits = candidate.replace(" ", "").replace("-", "")
    return any(len(digits) in lengths and low <= int(digits[:width]) <= high
               for width, low, high, lengths in _CARD_NETWORKS) and _luhn_valid(digits)


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    # Lowercase substrings, one of which every match contains. A rule none of whose
    # needles is in the lowercased text is skipped: most strings run few regexes.
    # None: no cheap needle exists, the rule runs on every string of min_length or more.
    needles: tuple[str, ...] | None
    # Final say on a match the regex alone cannot decide (Luhn, card prefix, entropy).
    accept: Callable[[re.Match[str]], bool] | None = None
    # The group holding the secret; the rest of the match (a label, a URL's scheme,
    # user and host) is kept so the reader still sees what was removed. 0: all of it.
    group: int | str = 0
    min_length: int = 0
    # A cheap test of the whole string before the regex runs (None: none needed).
    gate: Callable[[str], bool] | None = None

    @property
    def placeholder(self) -> str:
        return f"[REDACTED:{self.kind}]"


# detect-secrets' Base64 entropy measure (Shannon entropy over the base64 alphabet).
# Only its pure calculate_shannon_entropy is called: the plugin's analyze_line reads
# the library's global settings, which we never touch.
_ENTROPY = Base64HighEntropyString().calculate_shannon_entropy
_HEX = frozenset("0123456789abcdefABCDEF")


def _looks_like_aws_secret(match: re.Match[str]) -> bool:
    """A bare 40-character base64 run is an AWS secret access key only when it looks
    random: mixed case and digits, not hex (git SHAs, our digests), and entropy above
    4.3 bits. Random 40-character keys score 4.3 or less 0.04% of the time (measured
    over 20,000); camel-case identifiers and paths score 4.2-4.3 and lack a digit or a
    case. detect-secrets' own default (4.5) misses 1.9% of real keys."""
    value = match[0]
    return (any(c.isupper() for c in value) and any(c.islower() for c in value)
            and any(c.isdigit() for c in value) and not set(value) <= _HEX and _ENTROPY(value) > 4.3)


def _has_long_word(text: str) -> bool:
    # A 40-character run needs a whitespace-free stretch that long; prose rarely has
    # one, and str.split runs in C (over a 4 KB prompt, a sixth of the regex's scan).
    return len(max(text.split(), key=len, default="")) >= 40


# Vendor prefixes of "sk-" keys whose body may be all lowercase (OpenAI project and
# service-account keys, Anthropic, OpenRouter).
_SK_VENDORS = ("proj-", "svcacct-", "admin-", "ant-", "or-")
_SK_RUNS = re.compile(r"[-_]+")


def _is_sk_key(match: re.Match[str]) -> bool:
    """Any "sk-" key, lowercase ones included, but not slugs like "sk-learn-compatible-api":
    the body holds an uppercase letter or digit, or starts with a vendor prefix, or holds
    a 20+ character run of random-looking characters (entropy > 3.3 bits: random
    lowercase runs of 20+ score 3.3 or more 99.9% of the time, English words well under)."""
    body = match[0][3:]
    return (any(c.isupper() or c.isdigit() for c in body) or body.startswith(_SK_VENDORS)
            or any(len(run) >= 20 and _ENTROPY(run) > 3.3 for run in _SK_RUNS.split(body)))


def _is_basic_credential(match: re.Match[str]) -> bool:
    """"Basic <b64>" is a credential after an Authorization label, or when it decodes to
    printable "user:password"; otherwise it is prose ("Basic authentication")."""
    if match["label"]:
        return True
    token = match["cred"]
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    return ":" in decoded and decoded.isprintable()


# Applied in this order, each to the output of the previous one, so a secret is
# counted once under the first kind that claims it ("Bearer eyJ..." is a
# bearer_token, not a jwt). Placeholders match none of the patterns.
_OWN_RULES = (
    # Our own pattern: detect-secrets' PrivateKeyDetector flags only the BEGIN line, and
    # an export must lose the whole block. The body is base64, whitespace, escaped
    # newlines and RFC 1421 headers ("Proc-Type: 4,ENCRYPTED"); a block cut short
    # (no END line) still loses what follows its BEGIN line. Linear: the body's
    # alternatives never overlap at a character that ends them.
    _Rule("private_key", re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[A-Za-z0-9+/=\s\\]|[A-Za-z-]+: [A-Za-z0-9,-]*)*"
        r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)?"),
        ("private key",), min_length=27),
    _Rule("bearer_token", re.compile(
        # RFC 6750 b64token; 16+ characters so prose like "Bearer authentication" survives.
        r"(?i)(?<![A-Za-z0-9_])bearer\s+[A-Za-z0-9._~+/-]{16,}=*"),
        ("bearer",), min_length=23),
    _Rule("basic_auth", re.compile(
        # RFC 7617 credentials in free text ("Authorization: Basic dXNlcjpwYXNz", a curl
        # trace); the label is kept. detect-secrets' BasicAuthDetector is about URLs only.
        r"(?P<label>(?i:authorization)[\"']?\s*[:=]\s*[\"']?)?"
        r"(?P<secret>(?<![A-Za-z0-9_])(?i:basic)\s+(?P<cred>[A-Za-z0-9+/]{4,}={0,2}))(?![A-Za-z0-9+/=])"),
        ("basic",), _is_basic_credential, group="secret", min_length=10),
    _Rule("jwt", re.compile(
        # header.payload.signature; the signature may be empty (alg "none").
        r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
        ("eyj",), min_length=7),
    _Rule("openai_key", re.compile(
        # Any "sk-" key (sk-proj-, sk-ant-, sk-svcacct-, ...), after anything but a letter
        # or digit ("risk-", "task-" stay). detect-secrets' OpenAIDetector requires the
        # legacy "T3BlbkFJ" marker, which project and Anthropic keys do not carry.
        r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{20,}"),
        ("sk-",), _is_sk_key, min_length=23),
    _Rule("google_api_key", re.compile(
        # Not in detect-secrets 1.5: "AIza" and 35 URL-safe characters.
        r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])"),
        ("aiza",), min_length=39),
    _Rule("aws_access_key", re.compile(
        r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        ("akia", "asia"), min_length=20),
    _Rule("aws_secret_key", re.compile(
        # After a secret-key label, whatever its entropy; the label is kept.
        r"(?i:(?:aws[ _-]?)?secret[ _-]?(?:access[ _-]?)?key)[\"']?\s*[:=]?\s*[\"']?"
        r"(?P<secret>(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"),
        ("secret",), group="secret", min_length=49),
    _Rule("aws_secret_key", re.compile(
        # Unlabelled: a whole 40-character base64 run that looks random (see the check).
        r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
        None, _looks_like_aws_secret, min_length=40, gate=_has_long_word),
    _Rule("github_token", re.compile(
        r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), min_length=33),
    _Rule("slack_token", re.compile(
        r"(?<![A-Za-z0-9])xox[baprs]-[A-Za-z0-9-]{10,}"
        r"|(?:https?://)?hooks\.slack\.com/services/[A-Za-z0-9]+/[A-Za-z0-9]+/[A-Za-z0-9]+"),
        ("xox", "hooks.slack.com"), min_length=15),
    _Rule("url_password", re.compile(
        # The password of a URL's userinfo (RFC 3986 3.2.1): "postgres://u:[REDACTED]@h/db"
        # keeps the URL's shape. detect-secrets' BasicAuthDetector pattern refuses
        # sub-delimiters ("!$&'()*+,;=") in the password, which real passwords hold.
        r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s:/?#\[\]@]*:"
        r"(?P<secret>[^\s/?#\[\]@]+)@"),
        ("://",), group="secret", min_length=7),
    _Rule("email", re.compile(
        # Unicode local part and domain (RFC 6531/5890: "user@bücher.de", "user@例え.jp"),
        # punycode TLDs ("xn--p1ai"), and inside identifiers: "run-alice@example.com-42"
        # loses the address, a trailing "-42" is not part of a TLD. [^\W_] is a Unicode
        # letter or digit. Every repetition is bounded or delimited: no catastrophic
        # backtracking.
        r"(?<![\w.%+-])[^\W_][\w.%+-]{0,63}"
        r"@(?:[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?\.)+(?:(?i:xn--)[A-Za-z0-9-]{1,59}|[^\W\d_]{2,63})(?![^\W_])"),
        ("@",), min_length=6),
    _Rule("card_number", re.compile(
        # A whole digit run (never part of a word, decimal or longer run), either
        # contiguous or in groups with one consistent separator (4-4-4-4, 4-6-5, ...).
        r"(?<![A-Za-z0-9_])(?<![0-9]\.)"
        r"(?:[0-9]{13,19}"
        r"|(?<![0-9][ -])[0-9]{4}(?P<sep>[ -])[0-9]{3,6}(?:(?P=sep)[0-9]{3,6}){1,3}(?![ -][0-9]))"
        r"(?![A-Za-z0-9_])(?!\.[0-9])"),
        # No needle: ten digit needles cost more than this regex's own scan.
        None, lambda match: _is_card_number(match[0]), min_length=13),
    _Rule("ssn", re.compile(
        # Areas 000, 666 and 900-999, group 00 and serial 0000 are never issued.
        r"(?<![A-Za-z0-9_.-])(?!000|666|9)[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![A-Za-z0-9_-])(?!\.[0-9])"),
        ("-",), min_length=11),
)


def _library_rules() -> tuple[_Rule, ...]:
    """Provider formats from detect-secrets' regex plugins: their compiled `denylist`
    patterns, matched here with sub (the plugins' own analyze_string only yields values,
    not where they are, and for a pattern with a group yields the group even when it is
    GitLab's "glpat" prefix). Where the secret is a group, that group is redacted; a
    whole match is extended over the rest of its token, because some stop at a
    fixed length their keys have outgrown (Stripe's 24 characters; live keys are
    longer). Kinds are our stable names, not the plugins' display names."""
    def each(kind: str, needles: tuple[str, ...] | None, group: int = 0) -> tuple[str, tuple[str, ...] | None, int]:
        return kind, needles, group

    plugins = (
        # (plugin, (kind, needles, group of the secret) per pattern). GitLab's group is
        # its prefix ("glpat"), not the secret; AWS's second pattern's group is the key.
        (StripeDetector, (each("stripe_key", ("_live_",)),)),
        (AWSKeyDetector, (each("aws_access_key", None), each("aws_secret_key", ("aws",), 1))),
        (GitLabTokenDetector, (each("gitlab_token", ("gl", "gr1348941")),) * len(GitLabTokenDetector.denylist)),
        (SendGridDetector, (each("sendgrid_key", None),)),
        (PypiTokenDetector, (each("pypi_token", None),) * 2),
        (AzureStorageKeyDetector, (each("azure_storage_key", None),)),
        (SquareOAuthDetector, (each("square_oauth_secret", None),)),
        (TwilioKeyDetector, (each("twilio_key", None),) * 2),
        (MailchimpDetector, (each("mailchimp_key", ("-us",)),)),
    )
    rules = []
    for plugin, kinds in plugins:
        patterns = tuple(plugin.denylist)
        assert len(patterns) == len(kinds), plugin  # a new pattern in a library upgrade needs a kind
        for pattern, (kind, needles, group) in zip(patterns, kinds, strict=True):
            if group == 0:
                # Over the rest of the token; the inner groups keep their numbers.
                pattern = re.compile(f"(?:{pattern.pattern})[A-Za-z0-9]*", pattern.flags)
            # 20: the shortest any of these patterns matches (an AWS key id).
            rules.append(_Rule(kind, pattern, needles, group=group, min_length=20))
    return tuple(rules)


# Last of all, so a value a specific rule already claimed stays under its kind (the
# placeholder is skipped): a secret-named field written as text, as serialised
# payloads, logs, env files and query strings carry it: 'password=hunter2',
# '"pwd": "x"', '?api_key=abc&', '{\\"secret\\": \\"x\\"}'. The name is judged by the
# same rule as a dict key (so "max_tokens: 5" stays). An unquoted value ends at
# whitespace or a delimiter; a quoted one at its quote. detect-secrets'
# KeywordDetector patterns eat to the end of the line and only report the first
# match of a string, so they neither bound the cut nor find the second secret.
_ASSIGNMENT = _Rule("secret_assignment", re.compile(
    r"(?<![A-Za-z0-9_.-])(?P<name>[A-Za-z][A-Za-z0-9_.-]{0,63})(?P<q1>\\?[\"'])?[ \t]*[:=][ \t]*"
    r"(?P<q2>\\?[\"'])?(?!\[REDACTED:)"
    r"(?P<secret>(?(q2)[^\"'\\\n]{1,256}|[^\s\"'\\&,;)}\]]{1,256}))"),
    # Roots every secret name holds, separators or not ("api_key", "x-auth-token").
    ("pass", "pw", "secret", "token", "key", "auth", "cookie", "credential", "contrase"),
    lambda match: _is_secret_key(match["name"]), group="secret", min_length=3)

_RULES = _OWN_RULES + _library_rules() + (_ASSIGNMENT,)

# The needles, each looked for once per string, not once per rule (measured by
# bench/redaction_cost.py: per-rule checks cost more than the regexes they spare); a rule with
# needles runs only on a string holding one of them. A regex with a literal prefix that sre
# scans for in C ("AKIA|ASIA|...", "AC[a-z0-9]{32}") needs no needle: over a 4 KB prompt it
# costs what a substring test does.
_NEEDLE_TEXTS = tuple(dict.fromkeys(needle for rule in _RULES for needle in rule.needles or ()))
# The lengths at which a rule starts to apply: a string's place among them (bisect) says which
# rules its length admits.
_LENGTHS = tuple(sorted({rule.min_length for rule in _RULES}))


@functools.lru_cache(maxsize=4096)  # a handful of (needles found, length class) pairs in practice
def _rules_of(found: tuple[str, ...], length_class: int) -> tuple[tuple[_Rule, ...], bool]:
    """The rules, in their order, a string can match given the needles it holds (``found``) and
    how long it is (``length_class``: how many of _LENGTHS it reaches); and whether any of them
    has a gate (which the string itself must pass)."""
    rules = tuple(rule for rule in _RULES if bisect.bisect_right(_LENGTHS, rule.min_length) <= length_class
                  and (rule.needles is None or not set(found).isdisjoint(rule.needles)))
    return rules, any(rule.gate is not None for rule in rules)


def _rules_for(text: str) -> tuple[_Rule, ...]:
    """The rules that can match `text`, in their order: not those none of whose needles is in the
    lowercased text, nor those whose min_length the text is short of or whose gate refuses it."""
    # The needles found and the length's class name the rules in one cached look-up (a plain loop
    # of `in` tests is the cheapest way to find the needles; tests/unit/test_redaction_fast.py
    # holds this to the rules picked one by one).
    lowered = text.lower()
    rules, gated = _rules_of(tuple([needle for needle in _NEEDLE_TEXTS if needle in lowered]),
                             bisect.bisect_right(_LENGTHS, len(text)))
    if gated:
        return tuple(rule for rule in rules if rule.gate is None or rule.gate(text))
    return rules


def _replace(rule: _Rule, counts: dict[str, int], match: re.Match[str]) -> str:
    if rule.accept is not None and not rule.accept(match):
        return match[0]
    counts[rule.kind] = counts.get(rule.kind, 0) + 1
    start, end = match.span(rule.group)
    offset = match.start()
    return match[0][:start - offset] + rule.placeholder + match[0][end - offset:]


def _scan(text: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    """A string redacted, and what was replaced in it per kind: a pure function."""
    counts: dict[str, int] = {}
    # Until nothing changes: removing a secret can complete another match (a
    # boundary the secret's last character blocked), so one pass is not always a
    # fixed point. A string with nothing to redact (almost all) takes one pass; each
    # further pass removes at least one character that is not a placeholder, so it ends.
    while True:
        before = text
        for rule in _rules_for(text):
            # A rule that finds nothing leaves the text as it is: one search, no substitution
            # (and no replacement function made) for it.
            if rule.pattern.search(text) is not None:
                text = rule.pattern.sub(functools.partial(_replace, rule, counts), text)
        if text == before:
            return text, tuple(counts.items())


# Exports repeat the same short strings (keys, statuses, ids) endlessly, so short
# strings are scanned once: at most 16,384 of at most 128 characters (a few MiB).
_scan_short = functools.lru_cache(maxsize=16_384)(_scan)


@functools.lru_cache(maxsize=16_384)
def _plain_key(key: str) -> bool | None:
    """For a dict key with nothing to redact in it (the scan leaves it as it is, counting
    nothing): whether it names a secret; None for a key the scan changes. One cached look-up
    for what Redactor.redact_dict asks of every key (exports repeat the same few keys)."""
    text, found = _scan_short(key)
    return _is_secret_key(key) if text == key and not found else None


# Every kind a manifest can name.
KINDS = tuple(sorted({_SECRET_FIELD} | {rule.kind for rule in _RULES}))


@dataclass(frozen=True)
class RedactionResult:
    value: Any
    counts: dict[str, int]


def _is_secret_name(value: Any) -> bool:
    """The first item of a [name, value] pair that names a secret (a header name, a
    field name): one word, no whitespace, so prose in a two-item list is not a name."""
    return isinstance(value, str) and 0 < len(value) <= 64 and not any(c.isspace() for c in value) \
        and _is_secret_key(value)


class Redactor:
    """Redacts values; counts accumulate across calls, so one Redactor serves one export."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self.total = 0  # the sum of the counts, kept as they grow (read once per exported record)

    @property
    def counts(self) -> dict[str, int]:
        # Only kinds that occurred are ever stored, so every entry is > 0.
        return dict(sorted(self._counts.items()))

    def redact(self, value: Any) -> Any:
        kind = type(value)  # exact types first (every value of every exported state passes here)
        if kind is str:
            return self.redact_text(value)
        if kind is dict:
            return self.redact_dict(value)
        if kind is int or kind is bool or value is None or kind is float:
            return value
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return self.redact_dict(value)
        if isinstance(value, (list, tuple)):
            if len(value) == 2 and isinstance(value[0], str):
                # [["Authorization", "Bearer ..."], ["X-Api-Key", "..."]]: the value after a
                # secret's name is withheld whole, as it would be under that dict key. The
                # name is judged as given and as redacted, so redacting again finds the
                # same pair (idempotence).
                name = self.redact_text(value[0])
                secret = value[1] is not None and (_is_secret_name(value[0]) or _is_secret_name(name))
                items = [name, self._withhold(value[1]) if secret else self.redact(value[1])]
            else:
                items = [self.redact(item) for item in value]
            return items if isinstance(value, list) else tuple(items)
        return value

    def redact_dict(self, value: dict[Any, Any]) -> dict[Any, Any]:
        """``redact`` of a dict."""
        redacted: dict[Any, Any] = {}
        for key, item in value.items():
            if type(key) is str and len(key) <= 128:
                secret = _plain_key(key)
                if secret is not None:  # the loop's own steps for a key with nothing to redact in it
                    if secret and item is not None:
                        redacted[key] = self._withhold(item)
                        continue
                    # redact's first steps, inline (every member of every exported state is here)
                    kind = type(item)
                    if kind is str:
                        text, found = _scan_short(item) if len(item) <= 128 else _scan(item)
                        if found:
                            self._add(found)
                        redacted[key] = text
                    elif kind is int or kind is bool or item is None or kind is float:
                        redacted[key] = item
                    else:
                        redacted[key] = self.redact(item)
                    continue
            new_key = key
            if isinstance(key, str):
                # A token used as a key ({"sk-proj-...": {...}}) leaks like any other string.
                new_key = self.redact_text(key)
                # Two redacted keys must not collapse into one entry (a value would be lost):
                # the second becomes "[REDACTED:kind]#2", in the dict's own order.
                number, base = 2, new_key
                while new_key != key and (new_key in redacted or new_key in value):
                    new_key, number = f"{base}#{number}", number + 1
            # The field rule wins: its value is dropped whole, not scanned, and counted
            # once. The key is judged as given and as redacted (see the pairs above).
            if item is not None and isinstance(key, str) and (_is_secret_key(key) or _is_secret_key(new_key)):
                redacted[new_key] = self._withhold(item)
            else:
                redacted[new_key] = self.redact(item)
        return redacted

    def _withhold(self, value: Any) -> str:
        # Already withheld (a redacted export redacted again) is not counted twice.
        if value != _FIELD_PLACEHOLDER:
            self._count(_SECRET_FIELD)
        return _FIELD_PLACEHOLDER

    def redact_text(self, text: str) -> str:
        """``redact`` of a str."""
        text, found = _scan_short(text) if len(text) <= 128 else _scan(text)
        if found:
            self._add(found)
        return text

    def _add(self, found: tuple[tuple[str, int], ...]) -> None:
        for kind, count in found:
            self._counts[kind] = self._counts.get(kind, 0) + count
            self.total += count

    def _count(self, kind: str) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self.total += 1


def redact(value: Any) -> RedactionResult:
    """Redacts one value with a fresh Redactor: the redacted copy and its counts."""
    redactor = Redactor()
    redacted = redactor.redact(value)
    return RedactionResult(redacted, redactor.counts)
