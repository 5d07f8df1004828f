"""python -m services.logs — the logs service alone (port AOS_LOGS_PORT)."""
from aos_runtime.service_main import run_service
from services.logs.server import servicers

if __name__ == "__main__":
    run_service("logs", servicers)
