"""Helpers of the operations tests: scraping a /metrics endpoint, the metric names a PromQL expression uses."""
from __future__ import annotations

import re
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# The tenant the operations tests write to (exports, checkpoints).
OPS = "tenant-ops"


def scrape(port: int, host: str = "127.0.0.1") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``host:port``/metrics: {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    return sum(v for (n, have), v in samples.items()
               if n == name and all((k, x) in have for k, x in labels.items()))


def names(samples) -> set[str]:
    return {name for name, _ in samples}


_FUNCTIONS = {"sum", "min", "max", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "abs",
              "clamp_min", "clamp_max", "absent", "time", "topk", "bottomk", "delta", "deriv", "label_replace",
              "vector", "scalar", "round", "ceil", "floor", "sort", "sort_desc", "quantile_over_time",
              "avg_over_time", "max_over_time", "min_over_time"}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside label matchers, grouping
    clauses, range selectors and strings that are neither functions nor keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)             # strings
    text = re.sub(r"\{[^}]*\}", "", text)                           # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                          # range selectors ([5m], [$__rate_interval])
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    found = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        following = text[match.end():].lstrip()[:1]
        if word in _KEYWORDS or (word in _FUNCTIONS and following == "("):
            continue
        if match.start() and text[match.start() - 1] in "$.0123456789":  # $__vars, 1e3, 0.5
            continue
        found.add(word)
    return found
