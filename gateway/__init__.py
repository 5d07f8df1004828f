"""REST gateway: HTTP/JSON ↔ gRPC, driven by the protos' ``google.api.http`` annotations.

Nothing here is written per RPC. At startup the route table (``routes``) and the
OpenAPI document (``openapi``) are derived from the service descriptors; each
request is transcoded (``transcode``) and forwarded to the service's backend
(``app``). ``python -m gateway`` runs it (``__main__``).
"""
from gateway.app import create_app
from gateway.backends import SERVICE_BACKENDS, backend_addresses

__all__ = ["SERVICE_BACKENDS", "backend_addresses", "create_app"]
