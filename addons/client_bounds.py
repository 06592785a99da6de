"""Slow-client bounds mitmproxy does not have: a deadline for a whole request
head (its idle timeout misses a client trickling one byte at a time), and a
cap of open connections per client address, so one address cannot take every
file descriptor. Behind a trusted proxy the address is X-Forwarded-For's."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from mitmproxy import connection, http

from addons import metrics, wire
from addons.ending import Ending
from policy import decision as rules
from policy.clients import client_address
from policy.config import Config, Gateway

log = logging.getLogger("glance_gate.clients")


class ClientBounds:
    def __init__(self, ending: Ending, config: Callable[[], Config | None]):
        self.ending, self.config = ending, config  # ending: to refuse a request
        self._open: Counter[str] = Counter()  # open connections per client address
        self._address: dict[str, str] = {}  # client connection id -> the address it counts for
        self._deadline: dict[str, asyncio.TimerHandle] = {}

    def client_connected(self, client: connection.Client) -> None:
        conf = self._conf()
        self._arm(client)
        peer = client.peername[0]
        if peer in conf.trusted_proxies:
            return  # counted for the client its first request names
        if not self._count(client, peer):
            client.error = f"more than {conf.max_connections_per_client} connections from {peer}"
            metrics.connection_refused("per_client_cap")

    def client_disconnected(self, client: connection.Client) -> None:
        if timer := self._deadline.pop(client.id, None):
            timer.cancel()
        if address := self._address.pop(client.id, None):
            self._open[address] -= 1
            if not self._open[address]:
                del self._open[address]

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._bound(flow)
        except Exception:
            self.ending.internal_error(flow, "ClientBounds.requestheaders")

    def _bound(self, flow: http.HTTPFlow) -> None:
        self._disarm(flow.client_conn)
        if flow.client_conn.id in self._address:
            return
        conf = self._conf()
        address = client_address(flow.client_conn.peername[0], flow.request.headers.get_all("x-forwarded-for"),
                                 conf.trusted_proxies)
        if not self._count(flow.client_conn, address):
            metrics.connection_refused("per_client_cap")
            self.ending.end(flow, rules.too_many_connections(address, conf.max_connections_per_client))

    def response(self, flow: http.HTTPFlow) -> None:
        self._arm(flow.client_conn)  # the next request head's deadline

    error = response

    def _count(self, client: connection.Client, address: str) -> bool:
        """Counts the connection for the address; False when that passes the cap."""
        self._address[client.id] = address
        self._open[address] += 1
        return self._open[address] <= self._conf().max_connections_per_client

    def _arm(self, client: connection.Client) -> None:
        self._disarm(client)
        self._deadline[client.id] = asyncio.get_running_loop().call_later(
            self._conf().request_head_seconds, self._expired, client)

    def _conf(self) -> Gateway:
        config = self.config()
        assert config
        return config.gateway

    def _disarm(self, client: connection.Client) -> None:
        if timer := self._deadline.pop(client.id, None):
            timer.cancel()

    def _expired(self, client: connection.Client) -> None:
        self._deadline.pop(client.id, None)
        metrics.connection_refused("head_deadline")
        wire.close_client(client)
