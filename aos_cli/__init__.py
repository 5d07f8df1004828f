"""``aos-evidence``: the operator CLI of the AOS Evidence Plane (gRPC client of the three services)."""
