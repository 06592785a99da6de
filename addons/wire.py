"""The only place that reaches into mitmproxy's connection internals.

mitmproxy 12 has no public way to answer a request before its body is read, nor
to cut a streamed request so that the upstream sees an *incomplete* message:
- a response set in `requestheaders` is sent only after the whole body is buffered;
- a killed or raising stream hands the upstream a truncated but well-formed body.
- a chunked request with trailers makes its HTTP/1 server raise, leaving the
  client without an answer and the upstream with a half-sent body;
- an idle upstream connection is reused however long it idled, and one that
  fails before its answer is a 502, even for a GET;
- nothing closes a client connection on a deadline;
- every piece of a streamed body costs ~90 Python calls and 5 copies (a
  download through it runs at a fifth of Glance direct).
So these helpers work on the asyncio transports of the flow's connection
handler (an answer written there bypasses the TLS layer: it is sealed with
that layer's own session first), and patch two parser methods (a request's
trailers, a response body's count) and two of HttpStream's (the protocol-error
handler, the start of a streamed answer). tests/unit/test_wire.py pins the
mitmproxy version they were proven
against (by test_early_rejection.py, test_answers.py, the cut tests of
test_upload_spec.py, test_hostile.py, test_fail_closed.py, test_keepalive.py,
test_slow_clients.py, test_pump.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import weakref
from collections.abc import Callable

from OpenSSL import SSL
from mitmproxy import connection, ctx, http
from mitmproxy.connection import Server
from mitmproxy.proxy import mode_servers, server_hooks
from mitmproxy.net.http.http1 import assemble_response
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.layers.tls import TLSLayer
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import (ErrorCode, RequestEndOfMessage, RequestHeaders,
                                                   ResponseProtocolError)
from h11._readers import ContentLengthReader

TRAILERS_REFUSED = "HTTP/1 request trailers are not supported"
# Reads of an upstream connection: Glance's answers (downloads) are never
# inspected, and mitmproxy's 64 KiB reads cap a download near 250 MB/s. A
# client is read in BULK_READ pieces too while a request body streams that
# nothing checks within a read (`client_reads`), 64 KiB otherwise: an upload's
# growing quota grant must outrun one read (reservations.HEADROOM), and a
# request is decided before more than one read of its body is taken in.
BULK_READ = 1024 * 1024
CLIENT_READ = 65535  # what mitmproxy's loop asks of a client's socket
STREAM_LIMIT, RECV_SIZE = 2 ** 16, 256 * 1024  # asyncio's StreamReader limit and bytes per recv()


def _handler(client: connection.Client):
    handler = ctx.master.addons.get("proxyserver").connections.get(client.id)
    return handler, (handler.transports if handler else {})


def _transports(flow: http.HTTPFlow):
    return _handler(flow.client_conn)


def _transport(flow: http.HTTPFlow, conn) -> asyncio.Transport | None:
    _, transports = _transports(flow)
    io = transports.get(conn)
    return io.writer.transport if io and io.writer else None


def reset(client: connection.Client) -> None:
    """Drop a client connection at once. mitmproxy's own close of a failed
    TLS start leaves the client waiting for the server's handshake."""
    _, transports = _handler(client)
    if (io := transports.get(client)) and io.writer:
        io.writer.transport.abort()


def _client_streams(flow: http.HTTPFlow):
    """The client connection's reader and writer, when mitmproxy holds them as asyncio streams."""
    _, transports = _transports(flow)
    io = transports.get(flow.client_conn)
    return io if io and io.writer and isinstance(io.reader, asyncio.StreamReader) else None


def hold_client(flow: http.HTTPFlow) -> None:
    """Stop reading the client's socket: while the decision is pending, body
    bytes stay in the kernel's buffers instead of queueing in the proxy."""
    if not (io := _client_streams(flow)):
        return
    io.writer.transport.pause_reading()
    # A StreamReader that paused the transport for its own flow control resumes
    # it once drained, which would undo this hold: make it forget that pause.
    io.reader._paused = False


def release_client(flow: http.HTTPFlow) -> None:
    if (transport := _transport(flow, flow.client_conn)) and not transport.is_closing():
        transport.resume_reading()


def client_reads(flow: http.HTTPFlow, size: int) -> None:
    """Read the client's socket `size` bytes at a time from now on: BULK_READ
    for a request body that streams on unchecked within a read, CLIENT_READ
    again once it is done."""
    if not (io := _client_streams(flow)):
        return
    reader = io.reader
    if not hasattr(reader, "glance_gate_read"):
        if size == CLIENT_READ:
            return  # as mitmproxy reads it
        read = reader.read
        reader.read = lambda n=-1: read(reader.glance_gate_read)  # mitmproxy's loop asks for CLIENT_READ
    reader.glance_gate_read = size
    reader._limit = max(size, STREAM_LIMIT)  # the buffer pauses the socket at twice this
    io.writer.transport.max_size = max(size, RECV_SIZE)


def raw_response(status: int, headers: dict[str, str], body: bytes) -> bytes:
    return assemble_response(http.Response.make(status, body, headers))


def _tls_of(handler, conn: connection.Connection) -> SSL.Connection | None:
    """The OpenSSL connection of `conn`'s TLS layer, found down the handler's
    layer stack (NextLayer holds `.layer`, the others `.child_layer`), and in
    the HTTP layer's stacks of the upstream connections it opened itself."""
    todo = [handler.layer] if handler else []
    while todo:
        node = todo.pop()
        while node is not None:
            if isinstance(node, TLSLayer) and node.conn is conn:
                return node.tls
            if isinstance(node, http_layer.HttpLayer) and (opened := node.connections.get(conn)) is not None:
                todo.append(opened)
            node = node.layer if isinstance(node, layer.NextLayer) else getattr(node, "child_layer", None)
    return None


def _sealed(tls: SSL.Connection, data: bytes) -> bytes:
    """data as TLS records, then close_notify: a client still sending its body
    when the connection closes reads the answer, then a clean end."""
    try:
        tls.sendall(data)
        tls.shutdown()
    except SSL.Error:  # the client already closed its side: it reads nothing more
        pass
    records = bytearray()
    while True:
        try:
            records += tls.bio_read(65536)
        except SSL.WantReadError:
            return bytes(records)


def _answer(flow: http.HTTPFlow, status: int, headers: dict[str, str], body: bytes) -> None:
    """The one way the gateway writes an answer of its own to the client: on
    the client's transport, sealed by its TLS layer when the connection is TLS.
    mitmproxy's layers never see it, so this answer ends the connection: the
    caller closes it (`_linger`)."""
    handler, transports = _transports(flow)
    io = transports.get(flow.client_conn)
    if not io or not io.writer or io.writer.transport.is_closing():
        return
    data = raw_response(status, headers, body)
    if flow.client_conn.tls:
        if (tls := _tls_of(handler, flow.client_conn)) is None:
            return  # no session to seal it with: the close alone is the answer, never plaintext
        data = _sealed(tls, data)
    io.writer.transport.write(data)


MAX_LINGERING = 256  # connections per process; past it, closed at once
_lingering: set[int] = set()


def _linger(transport: asyncio.Transport | None, seconds: float) -> None:
    """End the client's side after an answer (FIN, after close_notify on TLS),
    but keep its socket open on a duplicate descriptor, discarding what the
    client still sends (never parsed, never forwarded), until it stops or
    `seconds` pass. Closed with unread bytes, the socket would be reset: a
    client that writes its whole body before it reads (urllib3, so the
    openstack CLI and openstacksdk) would see the reset, over TLS an
    `SSLEOFError`, instead of the answer. mitmproxy closes its own
    descriptor as usual."""
    if transport is None or transport.is_closing():
        return
    transport.write_eof()  # after what is buffered: the answer
    sock = transport.get_extra_info("socket")
    if seconds <= 0 or sock is None or len(_lingering) >= MAX_LINGERING:
        return
    fd = os.dup(sock.fileno())  # shares the socket and its O_NONBLOCK
    loop = asyncio.get_running_loop()

    def end() -> None:
        loop.remove_reader(fd)
        timer.cancel()
        _lingering.discard(fd)
        os.close(fd)

    def discard() -> None:
        try:
            if os.read(fd, 256 * 1024):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        end()  # the client is done sending, or gone

    _lingering.add(fd)
    loop.add_reader(fd, discard)
    timer = loop.call_later(seconds, end)


def refuse(flow: http.HTTPFlow, status: int, headers: dict[str, str], body: bytes, linger: float) -> None:
    """Answer from `requestheaders`, before any body byte is read, then close.

    The caller must drop `Expect: 100-continue` from the request first, or
    mitmproxy sends `100 Continue` after the hook."""
    _answer(flow, status, headers, body)
    if transport := _transport(flow, flow.client_conn):
        _linger(transport, linger)
        transport.close()  # flushes the answer first
    # Killing the flow stops mitmproxy from sending anything of its own or
    # ever opening a connection to the upstream.
    flow.kill()


def abort(flow: http.HTTPFlow, status: int, headers: dict[str, str], body: bytes, linger: float) -> None:
    """Cut a request whose body is being streamed upstream.

    The upstream connection is torn down first, from inside the stream
    callback, so no later chunk (above all the terminating one) can follow:
    Glance sees a dropped connection, never a shorter well-formed body. Then
    the client gets the status and the connection is closed."""
    handler, transports = _transports(flow)
    if (server := _transport(flow, flow.server_conn)) is not None:
        server.abort()
    _answer(flow, status, headers, body)
    _linger(_transport(flow, flow.client_conn), linger)
    if handler and flow.client_conn in transports:
        # Marks the client closed, so mitmproxy adds no 502 of its own when it
        # notices the upstream is gone; the pending write is flushed on close.
        handler.close_connection(flow.client_conn)


# When each open upstream connection finished its last answer. mitmproxy reuses
# a client's upstream connection for its next request while it looks open; it
# has no idle bound of its own.
_idle_since: weakref.WeakKeyDictionary[Server, float] = weakref.WeakKeyDictionary()


def upstream_idle(flow: http.HTTPFlow) -> None:
    """The answer is complete: the flow's upstream connection is idle from now."""
    _idle_since[flow.server_conn] = time.monotonic()


def drop_stale_upstream(flow: http.HTTPFlow, max_idle: float) -> None:
    """Before mitmproxy picks an upstream connection for this request: close the
    client's upstream connections idle longer than max_idle, so a fresh one is
    opened. One the server is closing for its own keep-alive timeout at this
    very moment would fail the request with 502, or cut an upload."""
    handler, transports = _transports(flow)
    now = time.monotonic()
    for conn in [c for c in transports if isinstance(c, Server) and c.connected]:
        if now - _idle_since.get(conn, now) > max_idle:
            handler.close_connection(conn)  # marks it closed at once: it is not reused


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RETRIED = "glance_gate_retried"  # flow.metadata: the request was sent again once


def retry_on_fresh_connection() -> None:
    """A bodyless GET/HEAD/OPTIONS whose reused upstream connection fails before
    any byte of the answer (the server closed it as the request went out) is
    sent once more, on a fresh connection, instead of answered 502. An upload
    never is: its body is streamed and gone."""
    stream = http_layer.HttpStream
    if getattr(stream.handle_protocol_error, "retries", False):
        return
    handle_protocol_error = stream.handle_protocol_error

    def handle_protocol_error_retrying(self, event):
        flow = self.flow
        if (isinstance(event, ResponseProtocolError) and not flow.metadata.get(RETRIED)
                and flow.request.method in SAFE_METHODS and not flow.request.raw_content
                and self.client_state == self.state_done
                and self.server_state == self.state_wait_for_response_headers
                and flow.server_conn in _idle_since):  # reused, not a first connect
            flow.metadata[RETRIED] = True
            # a warning: it survives the lean Master's quiet connection log (process/main.py)
            yield commands.Log(f"retrying {flow.request.method} on a fresh upstream connection: {event.message}",
                               logging.WARNING)
            if (yield from self.make_server_connection()):
                yield http_layer.SendHttp(RequestHeaders(self.stream_id, flow.request, True), self.context.server)
                yield http_layer.SendHttp(RequestEndOfMessage(self.stream_id), self.context.server)
            return
        yield from handle_protocol_error(self, event)

    handle_protocol_error_retrying.retries = True
    stream.handle_protocol_error = handle_protocol_error_retrying


def close_client(client) -> None:
    """Close a client connection from outside its flows (a deadline)."""
    handler = ctx.master.addons.get("proxyserver").connections.get(client.id)
    if handler and client in handler.transports:
        handler.close_connection(client)


def refuse_request_trailers(answer: Callable[[], bytes]) -> None:
    """Turn mitmproxy's crash on request trailers into a refusal: the client
    gets `answer()`, and the request fails as if its framing were broken, so the
    upstream connection is closed before the body ends (Glance sees it cut)."""
    server = _http1.Http1Server
    if getattr(server.read_body, "refuses_trailers", False):
        return
    read_body = server.read_body

    def read_body_refusing_trailers(self, event):
        try:
            yield from read_body(self, event)
        except NotImplementedError:
            yield commands.SendData(self.conn, answer())
            yield commands.CloseConnection(self.conn)
            yield ReceiveHttp(self.ReceiveProtocolError(
                self.stream_id, TRAILERS_REFUSED, code=ErrorCode.GENERIC_CLIENT_ERROR))

    read_body_refusing_trailers.refuses_trailers = True
    server.read_body = read_body_refusing_trailers


def listen_on(sock: socket.socket, backlog: int) -> None:
    """Serve mitmproxy's TCP proxy modes on an already bound and listening
    socket (a worker's, inherited from the supervisor) instead of binding one.

    mitmproxy binds with `asyncio.start_server(handler, host, port)`; this
    hands asyncio the socket instead. Closing the server later closes only this
    process's descriptor: connections keep queuing for the next worker."""
    listen = mode_servers.AsyncioServerInstance.listen

    async def listen_inherited(self, host, port):
        # An https reverse mode is "both": TCP, and UDP for HTTP/3, which the
        # gateway never serves (SAFE_OPTIONS): only its TCP half is listened on.
        if self.mode.transport_protocol not in ("tcp", "both"):
            return await listen(self, host, port)
        return [await asyncio.start_server(self.handle_stream, sock=sock, backlog=backlog)]

    mode_servers.AsyncioServerInstance.listen = listen_inherited


def stop_accepting() -> None:
    """Close the listening sockets; established connections are served on."""
    for instance in ctx.master.addons.get("proxyserver").servers:
        if isinstance(instance, mode_servers.AsyncioServerInstance):
            for server in instance._servers:
                server.close()


def bulk_reads(data: server_hooks.ServerConnectionHookData) -> None:
    """Read an upstream connection in BULK_READ pieces (from `server_connected`),
    and run the pump of a body handed to it (`pump`) in place of a read."""
    handler, transports = _handler(data.client)
    io = transports.get(data.server)
    if not io or not isinstance(io.reader, asyncio.StreamReader) or not io.writer:
        return
    reader, server = io.reader, data.server
    read = reader.read

    async def read_or_pump(n: int = -1) -> bytes:  # mitmproxy's loop asks for 65535
        # Only between mitmproxy's events, with nothing read and not yet parsed:
        # the body reader's count is then exactly what is still in the socket
        # (over TLS, and in the upstream session).
        if (pumped := _pumps.get(server)) and pumped.body is not None and not reader._buffer:
            del _pumps[server]
            if not await pumped.run(handler, transports.get(server), transports.get(data.client)):
                return b""  # both connections aborted: mitmproxy ends the flow as failed
        return await read(BULK_READ)

    reader.read = read_or_pump
    reader._limit = BULK_READ  # the buffer pauses the socket at twice this
    io.writer.transport.max_size = BULK_READ  # bytes per recv()


# The pump. A response body of known length that nothing inspects is moved
# from Glance's socket to the client's by the gateway itself, large reads
# straight into one buffer, instead of through mitmproxy's layers. On a TLS leg
# it goes through that leg's own OpenSSL session (as `_answer` seals), so the
# TLS state stays the layer's. mitmproxy sent the head; it reads the last
# PUMP_TAIL bytes itself (over TLS, also what the session decrypted past the
# pump's share, handed to its TLS layer), so the end of the message
# (keep-alive, the `response` hook, metrics, a drain's close) is its own as
# before. Anything that fails mid-body aborts both connections: the client gets
# a short body, never a complete-looking one.
PUMP = "glance_gate_pump"  # flow.metadata: the addon hands the response body to the pump
PUMP_TAIL = 64 * 1024
# SO_RCVLOWAT: no wake-up for less. Never above the tail, which is always still
# to come; and a larger one clamps the TCP window (Linux's tcp_set_rcvlowat):
# 256 KiB cut a download from Glance to a third.
PUMP_LOWAT = PUMP_TAIL
# A wait longer than this drops the low-water mark for the rest of the body:
# the bytes of a trickling Glance then count as activity at once, so the idle
# timeout cuts a stalled upstream, never a slow one.
PUMP_SLOW_SECONDS = 0.5
TLS_RECORD = 16 * 1024  # the most plaintext one record holds: an SSL_read returns no more
SEALED_READ = 2 * BULK_READ  # more than BULK_READ of plaintext makes, sealed


def pump(flow: http.HTTPFlow) -> None:
    """From `responseheaders`: nothing of this response's body is inspected or
    held, so the pump may move it (if it is of known length)."""
    flow.metadata[PUMP] = True


def _pumpable(flow: http.HTTPFlow) -> bool:
    response = flow.response
    return bool(flow.metadata.get(PUMP) and response and response.stream is True
                and "content-length" in response.headers and "transfer-encoding" not in response.headers)


class Pump:
    """One response body, moved between the two sockets."""

    def __init__(self, flow: http.HTTPFlow, moved: Callable[[int], None]):
        self.flow, self.moved = flow, moved
        self.body: ContentLengthReader | None = None  # mitmproxy's count of the body left to read

    async def run(self, handler, server_io, client_io) -> bool:
        """Moves all but PUMP_TAIL of the body; False if it failed and aborted both connections."""
        assert self.body is not None
        left = self.body._remaining - PUMP_TAIL
        if left <= 0 or not server_io or not client_io or not isinstance(client_io.writer, asyncio.StreamWriter):
            return True
        server, client = server_io.writer.transport, client_io.writer.transport
        upstream_tls = _tls_of(handler, self.flow.server_conn) if self.flow.server_conn.tls else None
        client_tls = _tls_of(handler, self.flow.client_conn) if self.flow.client_conn.tls else None
        if (server.is_closing() or client.is_closing() or (self.flow.server_conn.tls and not upstream_tls)
                or (self.flow.client_conn.tls and not client_tls)):
            return True
        moved, ok, src, dst = 0, True, None, None
        try:
            await _flushed(client_io.writer)  # mitmproxy's head, and any body it sent, go first
            # Own descriptors: asyncio refuses socket calls on one a transport uses.
            src, dst = _dup(server), _dup(client)
            server.pause_reading()
            if client_tls:
                client.pause_reading()  # mitmproxy's layer uses the session only once the pump is done
            legs = _Legs(src, dst, upstream_tls, client_tls)
            while moved < left and not (server.is_closing() or client.is_closing()):
                n = await legs.move(left - moved)
                if n is None:
                    break  # Glance closed early: mitmproxy reads the EOF, the body is short
                if n:
                    moved += n
                    handler.timeout_watchdog.register_activity()
        except (OSError, SSL.Error):
            ok = False
        finally:
            self.body._remaining -= moved
            self.moved(moved)
            for sock in (src, dst):
                if sock:
                    sock.close()
            if not ok:
                server.abort()
                client.abort()
            else:
                for transport in (server, client):
                    if not transport.is_closing():
                        transport.resume_reading()
        if ok and upstream_tls and not server.is_closing():
            # What the session decrypted past the pump's share: mitmproxy's TLS layer takes it.
            await handler.server_event(events.DataReceived(self.flow.server_conn, b""))
        return ok


class _Legs:
    """Reads the body's plaintext from Glance's socket (decrypted by the
    upstream session when that leg is TLS) and writes it to the client's
    (sealed by the client's session when that leg is TLS)."""

    def __init__(self, src: socket.socket, dst: socket.socket,
                 upstream_tls: SSL.Connection | None, client_tls: SSL.Connection | None):
        self.src, self.dst, self.upstream_tls, self.client_tls = src, dst, upstream_tls, client_tls
        self.loop = asyncio.get_running_loop()
        self.plain = memoryview(bytearray(BULK_READ))
        self.wire = memoryview(bytearray(BULK_READ)) if upstream_tls else self.plain
        src.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, PUMP_LOWAT)

    async def move(self, most: int) -> int | None:
        """Moves at most `most` bytes of plaintext: how many, 0 when Glance sent
        nothing for a while, None at its EOF."""
        if self.upstream_tls is None:
            if n := await self._recv(min(BULK_READ, most)):
                await self._send(self.plain[:n])
            return n
        n, most = 0, min(BULK_READ, most)
        while n < most:  # first what the session holds already, then more from the socket
            try:
                n += self.upstream_tls.recv_into(self.plain[n:], min(TLS_RECORD, most - n))
            except SSL.WantReadError:
                if n:
                    break
                if not (read := await self._recv(BULK_READ)):
                    return read
                self.upstream_tls.bio_write(self.wire[:read])
            except SSL.ZeroReturnError:  # close_notify mid-body
                raise OSError("Glance closed its TLS session mid-body") from None
        # A reply the session may owe Glance (a key update) waits in its BIO for
        # mitmproxy's layer, which sends it when it next reads.
        await self._send(self.plain[:n])
        return n

    async def _recv(self, size: int) -> int | None:
        """Bytes read into `wire`: 0 when none came for PUMP_SLOW_SECONDS (then the
        low-water mark drops for good), None at EOF."""
        try:
            return await asyncio.wait_for(self.loop.sock_recv_into(self.src, self.wire[:size]),
                                          PUMP_SLOW_SECONDS) or None
        except TimeoutError:
            self.src.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            return 0

    async def _send(self, data: memoryview) -> None:
        if self.client_tls is None:
            await self.loop.sock_sendall(self.dst, data)
            return
        self.client_tls.sendall(data)
        while True:  # the records it sealed, from its memory BIO: less than asked for is all
            records = self.client_tls.bio_read(SEALED_READ)
            await self.loop.sock_sendall(self.dst, records)
            if len(records) < SEALED_READ:
                return


_pumps: weakref.WeakKeyDictionary[Server, Pump] = weakref.WeakKeyDictionary()


async def _flushed(writer: asyncio.StreamWriter) -> None:
    """Waits until the transport has written everything it holds."""
    transport = writer.transport
    high, low = transport.get_write_buffer_limits()[::-1]
    transport.set_write_buffer_limits(0)
    try:
        await writer.drain()
    finally:
        transport.set_write_buffer_limits(high, low)


def _dup(transport: asyncio.Transport) -> socket.socket:
    sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
    sock.setblocking(False)
    return sock


def install_pump(moved: Callable[[int], None]) -> None:
    """A streamed response the addon handed to the pump gets one once
    mitmproxy has sent its head; it runs once mitmproxy's HTTP/1 client reads
    the body with a Content-Length reader. `moved(bytes)` after each."""
    stream = http_layer.HttpStream
    if getattr(stream.start_response_stream, "pumps", False):
        return
    start_response_stream = stream.start_response_stream

    def start_response_stream_pumped(self):
        yield from start_response_stream(self)
        if _pumpable(self.flow):
            _pumps[self.flow.server_conn] = Pump(self.flow, moved)

    client = _http1.Http1Client
    read_body = client.read_body

    def read_body_counted(self, event):
        yield from read_body(self, event)
        if (pumped := _pumps.get(self.conn)) and pumped.body is None:
            if pumped.flow.response is self.response and isinstance(self.body_reader, ContentLengthReader):
                pumped.body = self.body_reader
            else:
                del _pumps[self.conn]

    start_response_stream_pumped.pumps = True
    stream.start_response_stream = start_response_stream_pumped
    client.read_body = read_body_counted


def skip_message_typechecks() -> None:
    """mitmproxy type-checks every field of every request and response it
    builds (`MessageData.__post_init__`, present unless Python runs with -O,
    which would also drop our own asserts): 13-18 % of a worker's CPU on small
    requests (py-spy, README "Benchmarks"). Its HTTP/1 parser and
    `Response.make` build them with the right types."""
    http.MessageData.__post_init__ = lambda self: None
