"""addons/wire.py, the one place on mitmproxy's connection internals.

The version it was proven against is pinned here: its behaviour under real
traffic is proven by tests/stack/ (test_early_rejection.py, the cut tests in
test_upload_spec.py, test_answers.py, test_keepalive.py, test_pump.py); a new
mitmproxy must be proven again first. Offline, on mitmproxy's `taddons`/`tflow`
and a real loopback connection whose server side is an asyncio transport as
mitmproxy's connection handler holds it: what the gateway's own answer does
to the client's connection (hold, release, the answer, its linger and the
bound on lingering sockets), which upstream connections are dropped as stale,
and which responses the pump may take."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import pytest
from mitmproxy import http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy.server import ConnectionIO
from mitmproxy.test import taddons, tflow
from mitmproxy.version import VERSION

from addons import wire
from policy.config import load  # noqa: F401  (policy must import without mitmproxy patches)

ANSWER = (413, {"content-type": "application/json"}, b'{"code": 413}')


def test_mitmproxy_is_the_version_wire_py_was_proven_against():
    assert VERSION == "12.3.1", (
        "mitmproxy changed: re-run tests/stack/test_early_rejection.py and the cut tests "
        "(test_413_chunked..., test_500_empty_chunked...) many times, then update this pin")


def test_policy_never_imports_mitmproxy():
    code = ("import sys, policy.gate, policy.refusal, policy.routes; "
            "sys.exit(any(m == 'mitmproxy' or m.startswith('mitmproxy.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


class Handler:
    """What wire.py uses of mitmproxy's connection handler: the transports of
    its connections, its layer stack (none here: no TLS session), and close_connection."""

    def __init__(self):
        self.transports: dict = {}
        self.layer = None
        self.closed: list = []

    def close_connection(self, conn) -> None:
        self.closed.append(conn)


class Connected:
    """A flow whose client is a real loopback connection: `client`, the
    client's socket (non-blocking, read and written through the loop), and the
    server side as mitmproxy's handler holds it."""

    def __init__(self, proxyserver: Proxyserver, limit: int = 2 ** 16):
        self.flow = tflow.tflow()
        self.handler = Handler()
        self.proxyserver, self.limit = proxyserver, limit
        proxyserver.connections[self.flow.client_conn.id] = self.handler

    async def __aenter__(self) -> Connected:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            self.client = socket.create_connection(listener.getsockname())
            accepted, _ = listener.accept()
        self.client.setblocking(False)
        self.reader, self.writer = await asyncio.open_connection(sock=accepted, limit=self.limit)
        self.transport = self.writer.transport
        self.handler.transports[self.flow.client_conn] = ConnectionIO(reader=self.reader, writer=self.writer)
        return self

    async def __aexit__(self, *_) -> None:
        self.client.close()
        self.transport.abort()

    async def send(self, data: bytes) -> None:
        await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(self.client, data), 30)

    async def received(self) -> bytes:
        """Everything the client reads until the server's end of the connection (FIN)."""
        data = b""
        while chunk := await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.client, 65536), 30):
            data += chunk
        return data


def in_proxyserver(scenario):
    """Runs scenario(proxyserver) where wire.py finds mitmproxy's proxyserver addon."""
    async def inside():
        proxyserver = Proxyserver()
        with taddons.context(proxyserver):
            return await scenario(proxyserver)
    return asyncio.run(inside())


async def until(check, what: str, timeout: float = 30) -> None:
    """Polls check() in the loop; fails naming `what` after timeout seconds (a guard, not a measure)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def lingering(monkeypatch) -> None:
    """Each test counts its own lingering sockets."""
    monkeypatch.setattr(wire, "_lingering", set())


def test_a_held_client_is_not_read_until_released():
    async def scenario(proxyserver):
        async with Connected(proxyserver) as c:
            wire.hold_client(c.flow)
            assert not c.transport.is_reading()
            await c.send(b"body")
            wire.release_client(c.flow)
            assert c.transport.is_reading()
            assert await asyncio.wait_for(c.reader.readexactly(4), 30) == b"body"
    in_proxyserver(scenario)


def test_a_hold_outlasts_the_readers_own_flow_control():
    """A StreamReader that paused the transport itself (its buffer full)
    resumes it once drained: that must not undo the gateway's hold."""
    async def scenario(proxyserver):
        async with Connected(proxyserver, limit=16) as c:
            await c.send(b"x" * 4096)
            await until(lambda: not c.transport.is_reading(), "the reader never paused its transport")
            wire.hold_client(c.flow)
            await asyncio.wait_for(c.reader.read(4096), 30)  # drained below its limit
            assert not c.transport.is_reading(), "the hold was undone"
            wire.release_client(c.flow)
            assert c.transport.is_reading()
    in_proxyserver(scenario)


def test_hold_and_release_of_a_connection_gone_do_nothing():
    async def scenario(proxyserver):
        gone = tflow.tflow()  # its connection no longer in the proxyserver's
        wire.hold_client(gone)
        wire.release_client(gone)
        async with Connected(proxyserver) as c:
            wire.hold_client(c.flow)
            c.transport.close()
            wire.release_client(c.flow)
            assert not c.transport.is_reading()
    in_proxyserver(scenario)


def test_a_client_is_read_in_bulk_only_while_a_body_may_pass_unchecked():
    """mitmproxy's loop asks a client's socket for CLIENT_READ bytes: while
    client_reads says BULK_READ, one read returns up to that; after CLIENT_READ
    again, never more than it (a growing quota grant relies on it)."""
    async def first_read(c: Connected, size: int, buffered: int) -> int:
        """The size of mitmproxy's first read once `buffered` bytes wait, all then drained."""
        wire.client_reads(c.flow, size)
        sending = asyncio.create_task(c.send(b"x" * 2 * wire.BULK_READ))
        await until(lambda: len(c.reader._buffer) >= buffered, "the client's bytes")
        first = got = len(await c.reader.read(wire.CLIENT_READ))  # as mitmproxy's loop asks
        while got < 2 * wire.BULK_READ:
            got += len(await asyncio.wait_for(c.reader.read(wire.CLIENT_READ), 30))
        await sending
        return first

    async def scenario(proxyserver):
        async with Connected(proxyserver) as c:
            return await first_read(c, wire.BULK_READ, wire.BULK_READ), await first_read(c, wire.CLIENT_READ, 100_000)
    bulk, again = in_proxyserver(scenario)
    assert bulk == wire.BULK_READ
    assert again == wire.CLIENT_READ


def test_a_refusal_answers_ends_the_connection_and_drops_what_the_client_still_sends():
    """The client that writes its whole body before it reads gets the answer
    and a clean end, never a reset; its body is discarded, never forwarded."""
    async def scenario(proxyserver):
        async with Connected(proxyserver) as c:
            wire.hold_client(c.flow)  # as while the decision is pending
            await c.send(b"x" * 65536)
            wire.refuse(c.flow, *ANSWER, linger=300)
            assert c.flow.error and c.flow.error.msg == "Connection killed.", "nothing goes upstream"
            answer = await c.received()
            assert len(wire._lingering) == 1
            await c.send(b"y" * 4 * 1024 * 1024)  # the rest of the body
            c.client.shutdown(socket.SHUT_WR)
            await until(lambda: not wire._lingering, "the lingering socket was not closed at the client's end")
            assert c.client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0, "reset"
            return answer

    answer = in_proxyserver(scenario)
    assert answer == wire.raw_response(*ANSWER)
    assert answer.startswith(b"HTTP/1.1 413 Payload Too Large\r\n") and answer.endswith(b'{"code": 413}')


def test_lingering_sockets_are_bounded_then_closed_at_once(monkeypatch):
    monkeypatch.setattr(wire, "MAX_LINGERING", 1)

    async def scenario(proxyserver):
        async with Connected(proxyserver) as first, Connected(proxyserver) as second:
            for c in (first, second):
                wire.refuse(c.flow, *ANSWER, linger=300)
            assert len(wire._lingering) == 1
            assert await second.received() == wire.raw_response(*ANSWER), "answered all the same"
            first.client.close()
            await until(lambda: not wire._lingering, "the lingering socket outlived its client")
    in_proxyserver(scenario)


def test_a_linger_ends_after_its_seconds_and_zero_means_none():
    async def scenario(proxyserver):
        async with Connected(proxyserver) as silent, Connected(proxyserver) as at_once:
            wire.refuse(silent.flow, *ANSWER, linger=0.1)
            assert len(wire._lingering) == 1
            await until(lambda: not wire._lingering, "a client that sends nothing kept it open")
            wire.refuse(at_once.flow, *ANSWER, linger=0)
            assert not wire._lingering
            assert await at_once.received() == wire.raw_response(*ANSWER)
    in_proxyserver(scenario)


def test_a_tls_client_without_a_session_to_seal_with_gets_no_plaintext_answer():
    async def scenario(proxyserver):
        async with Connected(proxyserver) as c:
            c.flow.client_conn.tls = True  # and no TLS layer in the handler's stack
            wire.refuse(c.flow, *ANSWER, linger=0)
            return await c.received()
    assert in_proxyserver(scenario) == b"", "only the close"


def test_only_upstream_connections_idle_past_the_bound_are_dropped():
    async def scenario(proxyserver):
        flow = tflow.tflow()
        handler = Handler()
        proxyserver.connections[flow.client_conn.id] = handler
        idle, busy, opening, closed = (tflow.tserver_conn() for _ in range(4))
        for conn in (idle, busy, opening):
            conn.state = ConnectionState.OPEN
        flow.server_conn = idle
        wire.upstream_idle(flow)  # its answer complete
        wire._idle_since[idle] -= 60
        flow.server_conn = busy
        wire.upstream_idle(flow)
        wire._idle_since[closed] = time.monotonic() - 60
        handler.transports = {conn: ConnectionIO() for conn in (flow.client_conn, idle, busy, opening, closed)}
        wire.drop_stale_upstream(flow, max_idle=30)
        return handler.closed, idle
    closed, idle = in_proxyserver(scenario)
    assert closed == [idle], "a first connect (never idle) is no stale one"


def streamed(headers: dict[str, str]) -> http.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.response.headers.clear()
    flow.response.headers.update(headers)
    flow.response.stream = True
    return flow


@pytest.mark.parametrize("headers, handed, pumped", [
    ({"content-length": "1048576"}, True, True),
    ({"content-length": "1048576"}, False, False),  # the addon keeps it
    ({"transfer-encoding": "chunked"}, True, False),  # no known length
    ({"content-length": "10", "transfer-encoding": "chunked"}, True, False),
    ({}, True, False),  # to the connection's close
])
def test_the_pump_takes_only_a_handed_body_of_known_length(headers, handed, pumped):
    flow = streamed(headers)
    if handed:
        wire.pump(flow)
    assert wire._pumpable(flow) is pumped


def test_the_pump_takes_no_body_mitmproxy_buffers():
    flow = streamed({"content-length": "10"})
    flow.response.stream = False
    wire.pump(flow)
    assert not wire._pumpable(flow)
