"""Writes dashboards/glance-gate.json, the Grafana dashboard, from the panel
list below, with Grafana's own builders (grafana-foundation-sdk, pinned in
pyproject.toml). tests/stack/test_observability.py runs every query of it against a
real Prometheus, and checks the committed file is this script's output.
Run: .venv/bin/python dashboards/generate.py"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.builders.common import VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, QueryVariable
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableOption, VariableRefresh

RATE = "$__rate_interval"
SEL = 'job=~"$job"'
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


def q(expr: str, legend: str = "") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def quantiles(metric: str, by: str = "") -> list[prometheus.Dataquery]:
    group = f"le{', ' + by if by else ''}"
    return [q(f"histogram_quantile({p}, sum by ({group}) (rate({metric}_bucket{{{SEL}}}[{RATE}])))",
              f"p{int(p * 100)}") for p in (0.5, 0.9, 0.99)]


def requests(matcher: str = "") -> str:
    return f"sum(rate(glance_gate_requests_total{{{SEL}{', ' + matcher if matcher else ''}}}[{RATE}]))"


OK = 'code=~"2..|3.."'
NOT_4XX = 'code!~"4.."'

# (title, unit, targets)
PANELS: list[tuple[str, str, list[prometheus.Dataquery]]] = [
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
    # Only projects over quota.warn_ratio of a limit have a series; replicas report the same ledger.
    ("Projects near their quota (usage / limit)", "percentunit",
     [q(f"max by (project, resource) (glance_gate_quota_near_limit{{{SEL}}})", "{{project}} {{resource}}")]),
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


def panel(i: int, title: str, unit: str, targets: list[prometheus.Dataquery]) -> timeseries.Panel:
    built = (timeseries.Panel().id(i + 1).title(title).unit(unit).datasource(DATASOURCE).height(8).span(12)
             .legend(VizLegendOptions().display_mode(LegendDisplayMode.LIST)
                     .placement(LegendPlacement.BOTTOM).show_legend(True)))
    for n, target in enumerate(targets):
        built.with_target(target.ref_id(chr(ord("A") + n)))
    return built


def dashboard() -> Dashboard:
    built = (Dashboard("glance-gate").uid("glance-gate")
             .description("Upload health of glance-gate, the policy gateway in front of Glance.")
             .tags(["glance", "openstack", "glance-gate"])
             .timezone("browser").refresh("30s").time("now-6h", "now")
             .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
             .with_variable(QueryVariable("job").label("Job").datasource(DATASOURCE)
                            .query("label_values(glance_gate_build_info, job)")
                            .multi(True).include_all(True).all_value(".+")
                            .current(VariableOption(text="All", value="$__all"))
                            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)))
    for i, p in enumerate(PANELS):
        built.with_panel(panel(i, *p))
    return built


def render() -> str:
    return json.dumps(dashboard().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    out = Path(__file__).with_name("glance-gate.json")
    out.write_text(render())
    print(f"wrote {out}")
