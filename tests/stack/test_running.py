"""The two ways to run the same addon, and what a bad config says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.stack import REPO, start_gateway, stop

OCTET = {"Content-Type": "application/octet-stream"}


def test_mitmdump_runs_the_same_addon(stack, tmp_path):
    gw = start_gateway(tmp_path, stack, mitmdump=True)
    try:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            image_id = stack.create_image()
            r = client.put(f"/v2/images/{image_id}/file", content=b"x",
                           headers={**OCTET, "X-Auth-Token": "forged"})
            assert r.status_code == 401
            stack.assert_untouched(image_id)
            r = client.put(f"/v2/images/{image_id}/file", content=b"via mitmdump",
                           headers={**OCTET, "X-Auth-Token": stack.token("userA")})
            assert r.status_code == 204, r.text
            assert stack.image(image_id)["size"] == len(b"via mitmdump")
    finally:
        stop(gw.proc)


def run_gateway(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "glance-gate"), "--config", str(config)],
                          capture_output=True, text=True, timeout=30, cwd=REPO)


def test_bad_config_is_a_clear_error_naming_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    text = (REPO / "config.toml").read_text()
    config.write_text(text.replace('cache_seconds = 300', 'cache_seconds = "soon"'))
    out = run_gateway(config)
    assert out.returncode == 2
    assert out.stderr.strip() == "glance-gate: keystone.cache_seconds: input should be a valid integer, got 'soon'"
    config.write_text(text.replace('ledger_down = ', 'ledger_dwn = '))
    out = run_gateway(config)
    assert out.returncode == 2
    assert out.stderr.strip() == "glance-gate: quota.ledger_dwn: unknown key"
    out = run_gateway(tmp_path / "missing.toml")
    assert out.returncode == 2
    assert "cannot read config" in out.stderr


def test_mitmdump_refuses_to_start_without_a_config(tmp_path):
    out = subprocess.run([str(Path(sys.executable).parent / "mitmdump"), "--mode", "reverse:http://127.0.0.1:1",
                          "--set", f"confdir={tmp_path}", "--listen-port", "0",
                          "-s", str(REPO / "addons" / "glance_gate.py")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "glance_gate_config" in out.stdout + out.stderr
