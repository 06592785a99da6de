"""ClientBounds (addons/client_bounds.py): a cap of open connections per client
address, the X-Forwarded-For client's behind a trusted proxy, and a deadline
for a whole request head."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy.test import tflow

from addons import wire
from addons.client_bounds import ClientBounds
from addons.ending import Ending
from tests.support.fakes import config
from tests.support.addon_flows import Answers, run, sample, settings, upload

PROXY = "192.0.2.1"


def bounds(**gateway) -> tuple[ClientBounds, Ending]:
    conf = settings(config(-1), max_connections_per_client=2, **gateway)
    ending = Ending(lambda: conf)
    return ClientBounds(ending, lambda: conf), ending


def client(peer: str):
    conn = tflow.tclient_conn()
    conn.peername = (peer, 40000)
    return conn


def refused(reason: str) -> float:
    return sample("glance_gate_connections_refused_total", reason=reason)


def test_connections_past_the_cap_are_closed_as_they_connect_and_counted():
    cb, _ = bounds()
    before = refused("per_client_cap")

    async def connect():
        conns = [client("10.0.0.1") for _ in range(3)]
        for conn in conns:
            cb.client_connected(conn)
        other = client("10.0.0.2")
        cb.client_connected(other)
        cb.client_disconnected(conns[2])  # mitmproxy closes the refused one
        cb.client_disconnected(conns[0])
        again = client("10.0.0.1")
        cb.client_connected(again)
        for conn in [conns[1], other, again]:
            cb.client_disconnected(conn)
        return conns, other, again
    conns, other, again = run(connect)

    assert [bool(conn.error) for conn in conns] == [False, False, True]
    assert "more than 2 connections from 10.0.0.1" in conns[2].error
    assert not other.error, "another address has its own count"
    assert not again.error, "a closed connection frees its place"
    assert refused("per_client_cap") == before + 1


def test_behind_a_trusted_proxy_the_forwarded_client_is_capped_with_429(monkeypatch):
    answers = Answers(monkeypatch)
    cb, ending = bounds(trusted_proxies=frozenset({PROXY}))

    async def requests():
        flows = []
        for _ in range(3):
            conn = client(PROXY)
            cb.client_connected(conn)  # not counted yet: its first request names the client
            flow = upload({"x-forwarded-for": "203.0.113.9"})
            flow.client_conn = conn
            cb.requestheaders(flow)
            flows.append(flow)
        return flows
    flows = run(requests)

    assert [flow.error is not None for flow in flows] == [False, False, True]
    [(status, _, body)] = answers.sent
    assert status == 429 and "203.0.113.9" in body["message"]
    assert flows[2].metadata["glance_gate"].reason == "too_many_connections"
    assert ending.in_flight == 0


def test_a_request_head_not_whole_by_its_deadline_closes_the_connection(monkeypatch):
    closed = []
    monkeypatch.setattr(wire, "close_client", closed.append)
    cb, _ = bounds(request_head_seconds=0.01)
    before = refused("head_deadline")

    async def trickle():
        slow, quick = client("10.0.0.3"), client("10.0.0.4")
        cb.client_connected(slow)
        cb.client_connected(quick)
        flow = upload({})
        flow.client_conn = quick
        cb.requestheaders(flow)  # its head is whole: no deadline until its answer
        await asyncio.sleep(0.2)
        return slow
    slow = run(trickle)
    assert closed == [slow]
    assert refused("head_deadline") == before + 1


@pytest.mark.parametrize("hook", ["response", "error"])
def test_the_next_heads_deadline_starts_when_the_answer_ends(monkeypatch, hook):
    closed = []
    monkeypatch.setattr(wire, "close_client", closed.append)
    cb, _ = bounds(request_head_seconds=0.01)

    async def keepalive():
        conn = client("10.0.0.5")
        cb.client_connected(conn)
        flow = upload({})
        flow.client_conn = conn
        cb.requestheaders(flow)
        getattr(cb, hook)(flow)
        await asyncio.sleep(0.2)
        return conn
    assert run(keepalive) and len(closed) == 1
