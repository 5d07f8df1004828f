"""python -m services.overview — the overview service alone (port AOS_OVERVIEW_PORT)."""
from aos_runtime.service_main import run_service
from services.overview.server import servicers

if __name__ == "__main__":
    run_service("overview", servicers)
