"""systemd's readiness protocol (process/systemd.py): what a Type=notify unit
hears on $NOTIFY_SOCKET, a real datagram socket here, and that nothing is sent
when the gateway does not run under systemd."""

from __future__ import annotations

import socket
import uuid

import pytest

from process import systemd


@pytest.fixture
def listening(tmp_path):
    """A datagram socket as systemd binds it for a unit; its messages, one per datagram."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp_path / "notify"))
        s.setblocking(False)
        yield s


def received(s: socket.socket) -> list[bytes]:
    messages = []
    while True:
        try:
            messages.append(s.recv(4096))
        except BlockingIOError:
            return messages


def test_each_notification_is_one_datagram_of_newline_separated_states(tmp_path, listening, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    systemd.notify("READY=1", "STATUS=serving")
    systemd.notify("STOPPING=1")
    assert received(listening) == [b"READY=1\nSTATUS=serving", b"STOPPING=1"]


def test_an_abstract_socket_named_with_an_at_sign_is_reached(monkeypatch):
    name = f"glance-gate-test-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(f"\0{name}")  # as systemd passes it: "@name"
        s.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        systemd.notify("RELOADING=1", "MONOTONIC_USEC=1")
        assert received(s) == [b"RELOADING=1\nMONOTONIC_USEC=1"]


@pytest.mark.parametrize("value", [None, ""])
def test_nothing_is_sent_and_nothing_fails_without_notify_socket(listening, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    systemd.notify("READY=1")
    assert received(listening) == []
