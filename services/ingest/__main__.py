"""python -m services.ingest — the ingest service alone (port AOS_INGEST_PORT)."""
from aos_runtime.service_main import run_service
from services.ingest.server import servicers

if __name__ == "__main__":
    run_service("ingest", servicers)
