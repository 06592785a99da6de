"""dashboards/: the committed dashboard is what its source builds, and the
alert rules are valid and fire (promtool). Their queries are run against a
real Prometheus in tests/stack/test_observability.py."""

from __future__ import annotations

import subprocess

from tests.support.stack import REPO


def test_dashboard_json_is_generated_from_its_source():
    """The committed dashboard is what grafana-foundation-sdk builds from dashboards/generate.py."""
    out = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c",
                          "import sys, dashboards.generate as g; sys.stdout.write(g.render())"],
                         capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout == (REPO / "dashboards" / "glance-gate.json").read_text()


def test_alert_rules_are_valid_and_fire():
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts-test.yml"]):
        out = subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=REPO / "dashboards")
        assert out.returncode == 0, out.stdout + out.stderr
