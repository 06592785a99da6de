"""deploy/glance-gate.service passes `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import subprocess

from tests.support.stack import REPO

UNIT = REPO / "deploy" / "glance-gate.service"


def test_the_unit_verifies(tmp_path):
    """As installed (/opt/glance-gate is this checkout, so ExecStart exists)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (scripts/deps installs it)"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/glance-gate", str(REPO)))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values too: only its silence is a pass
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    text = UNIT.read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "LimitNOFILE=65536", "ProtectSystem=strict"):
        assert f"\n{line}\n" in text
