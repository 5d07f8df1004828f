"""Who a REST call comes from, for the services' access evidence (aos_runtime.access).

The client's address is the connection's peer, unless that peer is one of
AOS_TRUSTED_PROXIES (a load balancer in front of the gateway): then X-Forwarded-For is read
from its right end, each hop a trusted proxy appended, and the first address that is not a
trusted proxy is the client. A client-set X-Forwarded-For reaching the gateway directly is
never believed. The address and the User-Agent go to the backend as x-aos-client-ip and
x-aos-client-user-agent, which the services believe only from a trusted peer (the gateway).
"""
from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from aos_runtime.headers import CLIENT_IP_HEADER, CLIENT_USER_AGENT_HEADER

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_USER_AGENT_CHARS = 256


def networks(spec: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(part, strict=False) for part in spec)


def _ip(value: str) -> Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1:value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str | None:
    address = _ip(peer) if peer else None
    if address is None or not any(address in net for net in trusted):
        return str(address) if address is not None else None
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        candidate = _ip(hop)
        if candidate is None:
            break  # a malformed hop: nothing left of it can be believed
        address = candidate
        if not any(candidate in net for net in trusted):
            break
    return str(address)


def client_metadata(peer: str | None, forwarded_for: Sequence[str], user_agent: str | None,
                    trusted: Sequence[Network]) -> list[tuple[str, str]]:
    metadata = []
    address = client_address(peer, forwarded_for, trusted)
    if address:
        metadata.append((CLIENT_IP_HEADER, address))
    if user_agent:
        # gRPC metadata values are printable ASCII; the rest of a user agent is not worth a refusal.
        cleaned = "".join(ch for ch in user_agent if " " <= ch <= "~")[:MAX_USER_AGENT_CHARS].strip()
        if cleaned:
            metadata.append((CLIENT_USER_AGENT_HEADER, cleaned))
    return metadata


# Per gateway: the metadata of up to this many (peer, X-Forwarded-For, User-Agent), each
# given in at most MAX_CACHED_CHARS characters altogether.
CACHED_CLIENTS = 4096
MAX_CACHED_CHARS = 1024


class ClientMetadata:
    """``client_metadata`` for one gateway's trusted proxies, kept by what it is computed from
    (an LRU of ``max_items``): a connection's calls come from the same peer with the same headers."""

    def __init__(self, trusted: Sequence[Network], max_items: int = CACHED_CLIENTS) -> None:
        self.trusted = tuple(trusted)
        self._cached = functools.lru_cache(maxsize=max_items)(self._uncached)

    def _uncached(self, peer: str | None, forwarded_for: tuple[str, ...],
                  user_agent: str | None) -> tuple[tuple[str, str], ...]:
        return tuple(client_metadata(peer, forwarded_for, user_agent, self.trusted))

    def __call__(self, peer: str | None, forwarded_for: Sequence[str],
                 user_agent: str | None) -> tuple[tuple[str, str], ...]:
        size = len(peer or "") + len(user_agent or "") + sum(len(h) for h in forwarded_for)
        if size > MAX_CACHED_CHARS:
            return self._uncached(peer, tuple(forwarded_for), user_agent)
        return self._cached(peer, tuple(forwarded_for), user_agent)
