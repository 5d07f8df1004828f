"""Tests share fixtures through conftest.py and helpers through helper modules, never through each other.

A test module imported by another runs its module-level code twice under two names,
drags its fixtures and marks along, and breaks when a test is moved or renamed; a
conftest imported as a module re-registers its fixtures under another plugin. So,
read from the source (ast), including Python code passed to a child interpreter as a
string: no module under tests/ imports a ``test_*`` module, a ``conftest`` module or a
private (``_x``) name from a tests module, and nothing outside tests/ imports tests/.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Code that ships or measures: none of it may depend on the test suite.
OUTSIDE = ("aos_cli", "aos_evidence", "aos_recording", "aos_runtime", "bench", "gateway", "services", "tools")
# "from tests.x import a, b" or "import tests.x" inside a string (a child interpreter's code).
_IN_STRING = re.compile(r"\bfrom\s+(tests(?:\.\w+)*)\s+import\s+([\w\s,]+)|\bimport\s+(tests(?:\.\w+)*)")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _imports(path: Path, tree: ast.AST, *, strings: bool = True):
    """(line, imported module, imported name or None) for every import, absolute names resolved."""
    package = _module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([module] if module else [])])
            for alias in node.names:
                yield node.lineno, module, alias.name
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in _IN_STRING.finditer(node.value):
                if match.group(3):
                    yield node.lineno, match.group(3), None
                else:
                    for name in match.group(2).replace("\n", " ").split(","):
                        if name.strip():
                            yield node.lineno, match.group(1), name.strip().split()[0]


def _is_test_module(dotted: str) -> bool:
    leaf = dotted.rsplit(".", 1)[-1]
    return leaf == "conftest" or leaf.startswith("test_")


def problems(sources) -> list[str]:
    """What breaks the rule in ``sources``: (path relative to the root, source text) pairs."""
    found: list[str] = []
    for relative, text in sources:
        path = ROOT / relative
        inside = relative.parts[0] == "tests"
        # This module's own strings are the scan's examples, not code a child runs.
        strings = path != Path(__file__).resolve()
        for line, module, name in _imports(path, ast.parse(text, filename=str(path)), strings=strings):
            if not (module == "tests" or module.startswith("tests.")):
                continue
            where = f"{relative.as_posix()}:{line}"
            if not inside:
                found.append(f"{where}: imports the test suite ({module})")
            elif _is_test_module(module):
                found.append(f"{where}: imports the test module {module}; share through conftest.py or a helper")
            elif name is not None and _is_test_module(f"{module}.{name}"):
                found.append(f"{where}: imports the test module {module}.{name}")
            elif name is not None and name.startswith("_"):
                found.append(f"{where}: imports the private name {name} from {module}")
    return list(dict.fromkeys(found))  # one line per import, however many names it takes


def _code():
    for folder in ("tests", *OUTSIDE):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT), path.read_text()


def test_no_test_imports_another_test_module_or_a_private_name():
    sources = list(_code())
    # The scan read the suite (a scan that found no files would pass anything).
    assert sum(1 for p, _ in sources if p.name.startswith("test_")) > 50
    found = problems(sources)
    assert not found, "\n".join(found)


def test_the_scan_catches_each_kind_of_import():
    cases = {
        "tests/a/test_x.py": "from tests.e2e.conftest import demo, suite\n",
        "tests/a/test_y.py": "from tests.db.test_schema import make_tenant\n",
        "tests/a/test_z.py": "def f():\n    from tests.e2e.support import _private\n",
        "tests/a/test_w.py": "from tests.gateway import conftest\n",
        "tests/a/test_v.py": "from .test_x import helper\n",
        "tests/a/test_u.py": "CODE = 'import sys; from tests.unit.test_render import sample_report; run()'\n",
        "bench/b.py": "import tests.logins\n",
    }
    found = problems((Path(p), text) for p, text in cases.items())
    assert [f.split(":", 1)[0] for f in found] == list(cases), "\n".join(found)
    # A helper module's public names are how tests share code: allowed.
    allowed = {"tests/a/test_t.py": "from tests.e2e.support import BASE, auth\nfrom tests.logins import login_url\n"
                                    "from . import support\nCODE = 'from tests.unit.samples import report'\n"}
    assert problems((Path(p), text) for p, text in allowed.items()) == []
