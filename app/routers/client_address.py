"""Which address a request comes from: the peer, or, when the peer is a trusted proxy, the
address its `X-Forwarded-For` names (the nearest one that is not itself a trusted proxy)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None, networks: Sequence[Network]) -> str:
    """The client's address. `X-Forwarded-For` is read only from a trusted peer, right to left
    (each proxy appends the address it saw), skipping the trusted proxies themselves: entries
    further left are the client's own claims and could be forged."""
    address = peer or "unknown"
    if forwarded_for is None or not _trusted(address, networks):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        address = hop
        if not _trusted(hop, networks):
            break
    return address
