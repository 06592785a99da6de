"""deploy/: the gateway speaks systemd's readiness protocol (the unit itself
is verified in tests/unit/test_deploy.py), and deploy/logrotate rotates the audit
trail while the gateway keeps writing it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess

import httpx
import pytest

from tests.support.stack import REPO, start_gateway, stop

@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        s.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield s


def test_readiness_reload_and_stop_are_notified(stack, tmp_path, notify_socket):
    with start_gateway(tmp_path, stack) as gw:
        assert notify_socket.recv(4096) == b"READY=1\nSTATUS=serving"
        assert httpx.get(f"{gw.url}/versions", timeout=10).status_code == 200
        gw.proc.send_signal(signal.SIGHUP)
        assert notify_socket.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
        assert notify_socket.recv(4096) == b"READY=1"
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_logrotate_rotates_the_audit_trail(stack, tmp_path):
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    assert os.access(logrotate, os.X_OK), "logrotate is needed (scripts/deps installs it)"
    gw = start_gateway(tmp_path, stack)
    audit = gw.config.with_suffix(".audit.jsonl")
    conf = tmp_path / "logrotate.conf"
    user = "root" if os.geteuid() == 0 else os.environ["USER"]  # no glance-gate user here
    conf.write_text((REPO / "deploy" / "logrotate").read_text()
                    .replace("/var/log/glance-gate/audit.jsonl", str(audit)).replace("glance-gate", user))

    def upload() -> str:
        image_id = stack.create_image()
        r = httpx.put(f"{gw.url}/v2/images/{image_id}/file", content=b"x" * 1024, timeout=30,
                      headers={"X-Auth-Token": stack.token("userA"), "Content-Type": "application/octet-stream"})
        assert r.status_code == 204
        return image_id

    try:
        first = upload()
        out = subprocess.run([logrotate, "--force", "--state", str(tmp_path / "state"), str(conf)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        second = upload()
    finally:
        stop(gw.proc)
    rotated = audit.with_name(audit.name + ".1")  # delaycompress: the newest rotation stays plain
    assert first in rotated.read_text() and second not in rotated.read_text()
    assert second in audit.read_text() and first not in audit.read_text()
