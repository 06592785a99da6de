"""Writes dashboards/glance-gate.json, the Grafana dashboard, from the panel
list below. tests/test_observability.py runs every query of it against a real
Prometheus. Run: .venv/bin/python dashboards/generate.py"""

from __future__ import annotations

import json
from pathlib import Path

RATE = "$__rate_interval"
SEL = 'job=~"$job"'


def q(expr: str, legend: str = "") -> dict:
    return {"expr": expr, "legendFormat": legend}


def quantiles(metric: str, by: str = "") -> list[dict]:
    group = f"le{', ' + by if by else ''}"
    return [q(f"histogram_quantile({p}, sum by ({group}) (rate({metric}_bucket{{{SEL}}}[{RATE}])))",
              f"p{int(p * 100)}") for p in (0.5, 0.9, 0.99)]


def requests(matcher: str = "") -> str:
    return f"sum(rate(glance_gate_requests_total{{{SEL}{', ' + matcher if matcher else ''}}}[{RATE}]))"


OK = 'code=~"2..|3.."'
NOT_4XX = 'code!~"4.."'

# (title, unit, targets)
PANELS: list[tuple[str, str, list[dict]]] = [
    ("Request rate by status code", "reqps",
     [q(f"sum by (code) (rate(glance_gate_requests_total{{{SEL}}}[{RATE}]))", "{{code}}")]),
    ("Success ratio", "percentunit",
     [q(requests(OK) + " / " + requests(), "all requests"),
      q(requests(OK) + " / " + requests(NOT_4XX), "without 4xx")]),
    ("Refusals by reason", "reqps",
     [q(f'sum by (reason, source) (rate(glance_gate_requests_total{{{SEL}, reason!="ok"}}[{RATE}]))',
        "{{reason}} ({{source}})")]),
    ("Request latency", "s", quantiles("glance_gate_request_duration_seconds")),
    ("Upstream (Glance) latency", "s", quantiles("glance_gate_upstream_duration_seconds")),
    ("Latency added by the gateway (upload decisions)", "s",
     quantiles("glance_gate_decision_duration_seconds")),
    ("Upload throughput", "Bps",
     [q(f"sum(rate(glance_gate_upload_bytes_total{{{SEL}}}[{RATE}]))", "bytes/s to Glance")]),
    ("Accepted upload sizes", "bytes", quantiles("glance_gate_upload_size_bytes")),
    ("Uploads in flight", "short", [q(f"sum(glance_gate_uploads_in_flight{{{SEL}}})", "uploads")]),
    ("Quota reservations by outcome", "ops",
     [q(f"sum by (outcome) (rate(glance_gate_quota_reservations_total{{{SEL}}}[{RATE}]))", "{{outcome}}")]),
    ("Quota reconciliation duration (one project)", "s",
     quantiles("glance_gate_quota_reconcile_duration_seconds")),
    ("Quota drift found by reconciliation (one project, either way)", "bytes",
     [*quantiles("glance_gate_quota_drift_bytes"),
      q(f"sum(rate(glance_gate_quota_drift_bytes_sum{{{SEL}}}[{RATE}])) / "
        f"sum(rate(glance_gate_quota_drift_bytes_count{{{SEL}}}[{RATE}]))", "mean")]),
    ("Imports by method", "reqps",
     [q(f"sum by (method, reason) (rate(glance_gate_imports_total{{{SEL}}}[{RATE}]))", "{{method}} ({{reason}})")]),
    ("Token cache hit ratio", "percentunit",
     [q(f'sum(rate(glance_gate_token_validations_total{{{SEL}, cache="hit"}}[{RATE}])) / '
        f'sum(rate(glance_gate_token_validations_total{{{SEL}, cache=~"hit|miss"}}[{RATE}]))', "hit ratio")]),
    ("Dependency health", "short",
     [q(f"min by (dependency) (glance_gate_dependency_up{{{SEL}}})", "{{dependency}}")]),
    ("Process CPU", "percentunit",
     [q(f"rate(process_cpu_seconds_total{{{SEL}}}[{RATE}])", "{{instance}}")]),
    ("Process RSS", "bytes", [q(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")]),
]


def panel(i: int, title: str, unit: str, targets: list[dict]) -> dict:
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{**t, "refId": chr(ord("A") + n),
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                    for n, t in enumerate(targets)],
    }


def dashboard() -> dict:
    return {
        "title": "glance-gate",
        "uid": "glance-gate",
        "description": "Upload health of glance-gate, the policy gateway in front of Glance.",
        "tags": ["glance", "openstack", "glance-gate"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"},
            {"name": "job", "label": "Job", "type": "query", "multi": True, "includeAll": True,
             "allValue": ".+", "current": {"text": "All", "value": "$__all"},
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": "label_values(glance_gate_build_info, job)", "refId": "job"},
             "definition": "label_values(glance_gate_build_info, job)", "refresh": 2},
        ]},
        "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("glance-gate.json")
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {out}")
