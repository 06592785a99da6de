"""`glance-gate --config`: a config the gateway would misread is refused at
start, naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.stack import REPO


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


def test_workers_need_a_shared_ledger(tmp_path):
    config = tmp_path / "workers.toml"
    text = (REPO / "config.toml").read_text()
    assert "\nworkers = 1 " in text
    config.write_text(text.replace("\nworkers = 1 ", "\nworkers = 2 "))
    out = run_gateway(config)
    assert out.returncode == 2
    assert "gateway.workers" in out.stderr and 'quota.ledger = "redis"' in out.stderr
    assert 'quota.ledger = "memory"' in out.stderr
