"""The layers hold: no service imports another service, and the evidence read model
(aos_evidence) sits below the services — it imports nothing of services/.

Imports are read from the source (ast), so a lazy import inside a function counts
as much as one at the top of a module.
"""
from __future__ import annotations

import ast
import subprocess
import sys
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



# --- the recording core, the database module and the gateway ------------------------------

RECORDING_CORE = ("hashing", "writers", "verify", "dsse", "verify_export", "tlog", "note", "intoto", "witness")


def _core_closure() -> list[Path]:
    """The core modules and every aos_recording module they import (lazily or not)."""
    todo, seen = [ROOT / "aos_recording" / f"{name}.py" for name in RECORDING_CORE], set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "aos_recording" and len(parts) > 1:
                    module = ROOT / "aos_recording" / f"{parts[1]}.py"
                    if module.exists():
                        todo.append(module)
    return sorted(seen)


def _forbidden(paths: list[Path], forbidden: tuple[str, ...], base: Path = ROOT) -> list[str]:
    """``path: import`` for every import of ``paths`` that is, or lies inside, a forbidden name."""
    return [f"{p.relative_to(base)}: {n}" for p in paths for n in sorted(_imports(p))
            if any(n == f or n.startswith(f + ".") for f in forbidden)]


def test_the_recording_core_imports_neither_grpc_nor_the_runtime():
    """What an auditor's verifier runs and every writer hashes stands on its own: the
    core (and the library modules it uses: vocabulary, store) names no grpc and nothing
    of the server. Its dev tooling (scenarios, bulk, retention) may."""
    closure = _core_closure()
    assert {p.stem for p in closure} >= {*RECORDING_CORE, "vocabulary", "store"}
    found = _forbidden(closure, ("grpc", "grpc_status", "aos_runtime", "services", "gateway"))
    assert not found, "the recording core imports the server side:\n" + "\n".join(found)


def test_the_database_layer_imports_no_grpc():
    """Database failures are domain faults (aos_runtime.faults), mapped to statuses once at
    the edge (errors.from_exception): the database module knows nothing of gRPC."""
    found = _forbidden([ROOT / "aos_runtime" / f"{name}.py" for name in ("db", "faults", "headers")],
                       ("grpc", "grpc_status", "aos_runtime.errors"))
    assert not found, "\n".join(found)


def test_the_gateway_does_not_import_the_database_layer():
    found = _forbidden(sorted((ROOT / "gateway").rglob("*.py")), ("aos_runtime.db", "sqlalchemy", "psycopg"))
    assert not found, "the gateway imports the database layer:\n" + "\n".join(found)


def _loaded_after(imports: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules under ``prefixes`` a fresh interpreter holds after ``imports``."""
    code = (f"import sys\nimport {imports}\n"
            f"print(sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') for p in {prefixes!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout.strip())


def test_the_same_holds_at_run_time():
    """As the interpreter loads them, indirect imports included."""
    assert _loaded_after(", ".join(f"aos_recording.{m}" for m in RECORDING_CORE), ("grpc", "aos_runtime")) == []
    assert _loaded_after("aos_runtime.db", ("grpc", "grpc_status", "aos_runtime.errors")) == []
    assert _loaded_after("gateway.app, gateway.__main__", ("aos_runtime.db",)) == []
    # The probe itself sees an indirect import: the server runtime loads the database module.
    assert _loaded_after("aos_runtime.server", ("aos_runtime.db",)) == ["aos_runtime.db"]


def test_the_scan_sees_a_forbidden_import(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from aos_runtime.errors import ApiError\n")
    (tmp_path / "b.py").write_text("import grpc.aio\n")
    (tmp_path / "ok.py").write_text("from aos_recording import hashing\nimport grpcio_like\n")
    found = _forbidden([tmp_path / n for n in ("a.py", "b.py", "ok.py")], ("grpc", "aos_runtime"), base=tmp_path)
    assert found == ["a.py: aos_runtime.errors", "a.py: aos_runtime.errors.ApiError", "b.py: grpc.aio"], found
