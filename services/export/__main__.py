"""python -m services.export — the export service alone (port AOS_EXPORT_PORT)."""
from aos_runtime.service_main import run_service
from services.export.server import servicers

if __name__ == "__main__":
    run_service("export", servicers)
