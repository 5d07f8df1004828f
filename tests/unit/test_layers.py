"""The layers hold: no service imports another service, and the evidence read model
(aos_evidence) sits below the services — it imports nothing of services/.

Imports are read from the source (ast), so a lazy import inside a function counts
as much as one at the top of a module.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            # "from services import logs" names the service in the alias, not the module.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.add("." * node.level + (node.module or ""))
    return names


def _services() -> list[str]:
    return sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())


def crossings(service_dir: Path, service: str) -> list[str]:
    """Every import in the service's modules that names another service, or climbs out of it."""
    found = []
    for path in sorted(service_dir.rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "services" and len(parts) > 1 and parts[1] != service:
                found.append(f"{path.relative_to(service_dir.parent)}: {name}")
            if name.startswith(".."):  # a relative import out of the service's own package
                found.append(f"{path.relative_to(service_dir.parent)}: {name}")
    return found


def test_there_are_services_to_check():
    assert {"logs", "export", "overview"} <= set(_services())


def test_no_service_imports_another_service():
    found = [c for service in _services() for c in crossings(ROOT / "services" / service, service)]
    assert not found, "services import each other (share through aos_evidence or aos_runtime):\n" + "\n".join(found)


def test_the_evidence_read_model_imports_nothing_of_the_services():
    found = [f"{p.relative_to(ROOT)}: {n}" for p in sorted((ROOT / "aos_evidence").rglob("*.py"))
             for n in _imports(p) if n.split(".")[0] in ("services", "gateway")]
    assert not found, "aos_evidence must sit below the services:\n" + "\n".join(found)


def test_the_check_sees_a_crossing(tmp_path):
    """The scan itself catches each form a crossing can take (else the tests above prove nothing)."""
    service = tmp_path / "export"
    service.mkdir()
    (service / "a.py").write_text("from services.logs.store import AuditFilters\n")
    (service / "b.py").write_text("def f():\n    import services.logs.messages\n")
    (service / "c.py").write_text("from services import logs\n")
    (service / "d.py").write_text("from ..logs import store\n")
    (service / "ok.py").write_text("from services.export import store\nfrom aos_evidence import queries\n")
    files = {f.split(":")[0] for f in crossings(service, "export")}
    assert files == {f"export/{name}.py" for name in "abcd"}, files
