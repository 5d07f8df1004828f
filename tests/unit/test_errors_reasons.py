"""Every google.rpc.ErrorInfo reason the code can send is UPPER_SNAKE_CASE (AIP-193).

The reasons are read from the source (ast), not from a list kept by hand: every
``ApiError(...)``, ``AuthError(...)``, ``unauthenticated(...)``, ``not_found(...)`` and
``ErrorInfo(reason=...)`` in aos_runtime/, services/ and gateway/. A reason must be a
string literal or a ``Resource`` member; the few places that pass a reason through from
a checked source are listed below by file, function and expression, each with the source
this test checks instead — a new computed reason anywhere else fails.
"""
from __future__ import annotations

import ast
from pathlib import Path

import grpc
import pytest

from aos_runtime import errors

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("aos_runtime", "services", "gateway")

# (file, enclosing function, expression): reasons passed through, not made up there.
PASSED_THROUGH = {
    # ApiError.to_status: the error's own reason, checked when the ApiError was built.
    ("aos_runtime/errors.py", "to_status", "self.reason"),
    # not_found: a Resource member's reason (every member checked below).
    ("aos_runtime/errors.py", "not_found", "resource.reason"),
    # A RecordNotFound fault carries a Resource member (typed so; raised with members below the edge).
    ("aos_runtime/errors.py", "_from_fault", "exc.resource"),
    # unauthenticated(reason, ...): its callers' arguments are collected like any reason.
    ("aos_runtime/errors.py", "unauthenticated", "reason"),
    # A proof's entry id missing from its log: the log's Resource, from a map whose values are members.
    ("services/logs/audit_ledger.py", "_inclusion", "_RESOURCE[log]"),
    # The call wrapper hands an AuthError's reason on; every AuthError(...) is collected.
    ("aos_runtime/server.py", "_enter", "exc.reason"),
    # The gateway refuses two Authorization headers itself, with the AuthError the services would raise.
    ("gateway/transcode.py", "call_options", "exc.reason"),
    # HTTP refusals: the (code, reason) pairs of the function's own literal table, collected below.
    ("gateway/app.py", "_http_error", "reason"),
    # The gateway refuses two Authorization headers with the AuthError's reason (collected above).
    ("gateway/transcode.py", "call_options", "exc.reason"),
    # A failure that carried no rich status (an unreachable backend): its grpc.StatusCode's name.
    ("gateway/transcode.py", "status_from_rpc_error", "code.name"),
}


def _sources():
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), filename=str(path))


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _reason_argument(call: ast.Call, name: str) -> ast.expr | None:
    """The expression a call passes as its reason, or None when the call is not one that takes one."""
    for keyword in call.keywords:
        if keyword.arg in ("reason", "resource"):
            return keyword.value
    position = {"ApiError": 1, "AuthError": 0, "unauthenticated": 0, "not_found": 0}.get(name)
    if position is None or len(call.args) <= position:
        return None
    return call.args[position]


def _functions(tree: ast.AST):
    """(enclosing function name, call) for every call in the module."""
    def visit(node: ast.AST, function: str):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Call):
                yield function, child
            yield from visit(child, inner)
    yield from visit(tree, "<module>")


def collect(sources=None) -> tuple[set[str], list[str], set[tuple[str, str, str]]]:
    """(literal reasons, problems, pass-through places seen) over ``sources`` (default: the code)."""
    reasons: set[str] = set()
    problems: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for path, tree in (sources if sources is not None else _sources()):
        for function, call in _functions(tree):
            name = _name(call.func)
            if name == "ErrorInfo":
                argument = next((k.value for k in call.keywords if k.arg == "reason"), None)
            elif name in ("ApiError", "AuthError", "unauthenticated", "not_found"):
                argument = _reason_argument(call, name)
            else:
                continue
            if argument is None:
                continue
            where = f"{path}:{call.lineno} ({function})"
            expression = ast.unparse(argument)
            if name == "not_found" and (path, function, expression) in PASSED_THROUGH:
                seen.add((path, function, expression))
                continue
            if name == "not_found":
                member = expression.rsplit(".", 1)[-1]
                if not (isinstance(argument, ast.Attribute) and expression.endswith(f"Resource.{member}")
                        and member in errors.Resource.__members__):
                    problems.append(f"{where}: not_found takes a Resource member, got {expression}")
                continue
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                reasons.add(argument.value)
            elif (path, function, expression) in PASSED_THROUGH:
                seen.add((path, function, expression))
            else:
                problems.append(f"{where}: reason is computed ({expression}), not a literal")
        if path == "gateway/app.py":
            reasons |= _http_error_reasons(tree)
    return reasons, problems, seen


def _http_error_reasons(tree: ast.AST) -> set[str]:
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef) and n.name == "_http_error")
    return {element.elts[1].value for element in ast.walk(function)
            if isinstance(element, ast.Tuple) and len(element.elts) == 2
            and isinstance(element.elts[1], ast.Constant) and isinstance(element.elts[1].value, str)}


def test_every_reason_the_code_can_raise_is_upper_snake_case():
    reasons, problems, seen = collect()
    reasons |= {member.reason for member in errors.Resource}
    reasons |= {code.name for code in grpc.StatusCode}
    assert not problems, "\n".join(problems)
    bad = sorted(r for r in reasons if not errors.REASON.fullmatch(r))
    assert not bad, f"reasons that are not UPPER_SNAKE_CASE: {bad}"
    # The scan found the code's reasons (a scan that found nothing would pass anything).
    assert {"TRACE_NOT_FOUND", "LLM_RUN_NOT_FOUND", "SYSTEM_BASELINE_NOT_FOUND", "SCOPE_MISSING",
            "TOKEN_EXPIRED", "DATABASE_UNAVAILABLE", "REQUEST_ENTITY_TOO_LARGE", "ROUTE_NOT_FOUND",
            # The domain faults' reasons, from the one edge mapper (errors.from_exception).
            "DATABASE_POOL_EXHAUSTED", "REPLICA_BEHIND", "EXPORT_RATE_LIMITED", "EXPORT_STORAGE_QUOTA",
            "TENANT_HEAVY_LIMIT", "SERVER_OVERLOADED"} <= reasons
    # The scan saw the pass-throughs it knows (each is a real place, not a blanket excuse).
    assert seen >= PASSED_THROUGH - {("gateway/transcode.py", "call_options", "exc.reason")}


def test_a_computed_reason_is_caught_by_the_scan():
    """The scan itself: a reason built from a phrase is reported, whatever its value."""
    module = ast.parse('def f(what):\n    raise errors.ApiError(code, f"{what.upper()}_NOT_FOUND", "m")\n'
                       'def g():\n    raise errors.not_found("trace of run", "r")\n')
    _, problems, _ = collect([("services/x.py", module)])
    assert len(problems) == 2 and "computed" in problems[0] and "Resource member" in problems[1]


@pytest.mark.parametrize("reason", ["TRACE OF RUN_NOT_FOUND", "trace_not_found", "NOT_FOUND_", "_X", "", "A-B"])
def test_api_error_refuses_a_reason_that_is_not_upper_snake_case(reason):
    with pytest.raises(ValueError):
        errors.ApiError(grpc.StatusCode.NOT_FOUND, reason, "message")


def test_not_found_reasons_and_messages():
    error = errors.not_found(errors.Resource.SYSTEM_BASELINE, "tenant-demo.run-1")
    assert error.reason == "SYSTEM_BASELINE_NOT_FOUND"
    assert error.message == "system baseline of run 'tenant-demo.run-1' not found"
    assert error.metadata == {"resource": "system_baseline", "id": "tenant-demo.run-1"}
