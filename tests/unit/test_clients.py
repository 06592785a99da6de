"""Which client a connection counts against for max_connections_per_client
(policy/clients.py): the peer, or behind trusted proxies the X-Forwarded-For client."""

from __future__ import annotations

import pytest

from policy.clients import client_address


@pytest.mark.parametrize("peer, forwarded, counted", [
    ("10.0.0.1", ["10.9.9.9"], "10.0.0.1"),  # not a trusted proxy: its header means nothing
    ("192.0.2.1", ["10.0.0.7"], "10.0.0.7"),
    ("192.0.2.1", ["10.0.0.99, 10.0.0.7"], "10.0.0.7"),  # the client's own hops are further left
    ("192.0.2.1", ["10.0.0.7, 192.0.2.2"], "10.0.0.7"),  # through two trusted proxies
    ("192.0.2.1", ["10.0.0.7", "10.0.0.8"], "10.0.0.8"),  # several headers: one list
    ("192.0.2.1", [], "192.0.2.1"),
])
def test_client_address_for_the_connection_cap(peer, forwarded, counted):
    assert client_address(peer, forwarded, frozenset({"192.0.2.1", "192.0.2.2"})) == counted
