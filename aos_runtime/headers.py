"""Metadata header names the services and the REST gateway share.

Kept apart from the database module so that the gateway, which only passes these
headers on, imports nothing of the database layer.
"""
from __future__ import annotations

# Read-your-writes on a replica (docs/SERVING.md): a write answers with the WAL position
# after its commit (WAL_POSITION_HEADER); a read that passes it back (MIN_WAL_POSITION_HEADER)
# waits until its database has replayed that far.
WAL_POSITION_HEADER = "x-aos-wal-lsn"
MIN_WAL_POSITION_HEADER = "x-aos-min-lsn"

# The client of a REST call, as the gateway saw it (its TCP peer, or X-Forwarded-For's client when
# that peer is a trusted proxy): the services believe these only from a peer in AOS_TRUSTED_PROXIES
# (aos_runtime.access), so a direct gRPC caller cannot name another address.
CLIENT_IP_HEADER = "x-aos-client-ip"
CLIENT_USER_AGENT_HEADER = "x-aos-client-user-agent"
