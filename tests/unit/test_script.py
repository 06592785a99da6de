"""addons/script.py, the addon mitmdump loads (`-s`): it needs its config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.stack import REPO


def test_mitmdump_refuses_to_start_without_a_config(tmp_path):
    out = subprocess.run([str(Path(sys.executable).parent / "mitmdump"), "--mode", "reverse:http://127.0.0.1:1",
                          "--set", f"confdir={tmp_path}", "--listen-port", "0",
                          "-s", str(REPO / "addons" / "script.py")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "glance_gate_config" in out.stdout + out.stderr
