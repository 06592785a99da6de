"""Which client a connection counts for, in the per-client connection cap."""

from __future__ import annotations

import ipaddress


def client_address(peer: str, forwarded_for: list[str], trusted: frozenset[str]) -> str:
    """The peer, or behind a trusted proxy the right-most X-Forwarded-For hop
    that is not a trusted proxy itself: a proxy appends the address it saw, so
    hops a client wrote itself are further left and never counted instead."""
    if peer not in trusted:
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        try:
            hop = str(ipaddress.ip_address(hop))
        except ValueError:
            return hop[:64]  # not an address: still one client's key
        if hop not in trusted:
            return hop
    return peer
