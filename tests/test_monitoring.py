"""deploy/monitoring: alert rules promtool accepts and unit-tests, a dashboard, every metric documented.

promtool comes with Debian's `prometheus` package (.ci/run installs it when missing).
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

METRICS_MODULES = (
    "services.gateway.metrics",
    "services.okta_worker.metrics",
    "services.slack_responder.metrics",
    "services.telephony_hook.metrics",
    "shared.observability",  # helpdesk_build_info
)
ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
METRIC = re.compile(r"\bhelpdesk_[a-z_]+\b")
# Collected at scrape time from the live NATS connections (shared/observability.py): not in REGISTRY.
NATS_METRICS = {"helpdesk_nats_connected", "helpdesk_nats_reconnects_total"}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: apt-get install prometheus"
)


def load_metrics() -> None:
    """Import every module that registers metrics in prometheus_client's default registry."""
    for module in METRICS_MODULES:
        importlib.import_module(module)


def registered() -> set[str]:
    """Every exposed helpdesk_* series name (counters with _total, histograms with _bucket …)."""
    load_metrics()
    names: set[str] = set(NATS_METRICS)
    for family in REGISTRY.collect():
        if family.name.startswith("helpdesk_"):
            suffixes = {
                "counter": ("_total",),
                "histogram": ("", "_bucket", "_count", "_sum"),
                "info": ("_info",),
            }.get(family.type, ("",))
            names.update(family.name + suffix for suffix in suffixes)
    return names


def exposed_families() -> set[str]:
    """The names an operator queries: counters with _total, histograms and gauges as they are."""
    load_metrics()
    names = set(NATS_METRICS)
    for family in REGISTRY.collect():
        if family.name.startswith("helpdesk_"):
            suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
            names.add(family.name + suffix)
    return names


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` finds every rule well formed."""
    result = subprocess.run(
        ["promtool", "check", "rules", str(MONITORING / "alerts.yaml")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    """The rules fire on the series in alerts.test.yaml as expected (and not before their `for`)."""
    result = subprocess.run(
        ["promtool", "test", "rules", "alerts.test.yaml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=MONITORING,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_and_dashboard_query_only_metrics_we_expose() -> None:
    """Every helpdesk_* name in an alert or a dashboard query is a metric a service exposes."""
    known = registered()
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    expressions += [t["expr"] for p in panels for t in p["targets"]]
    used = {name for expr in expressions for name in METRIC.findall(expr)}
    assert used and used <= known, sorted(used - known)
    assert len(panels) >= 10


def test_every_alert_has_a_runbook_in_the_operations_guide() -> None:
    """Each alert links to a section of docs/operations.md that exists (its name as a heading)."""
    operations = (ROOT / "docs" / "operations.md").read_text()
    headings = {line.lstrip("#").strip().lower() for line in operations.splitlines() if line.startswith("#")}
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"
            assert rule["alert"].lower() in headings, rule["alert"]
            assert rule["labels"]["severity"] in ("critical", "warning")


def test_every_metric_is_documented() -> None:
    """docs/metrics.md names every metric the services expose."""
    documented = set(METRIC.findall((ROOT / "docs" / "metrics.md").read_text()))
    assert sorted(exposed_families() - documented) == []
    assert sorted(documented - exposed_families()) == []  # nothing documented that no longer exists
