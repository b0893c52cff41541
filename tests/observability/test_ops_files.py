"""ops/: the alert rules, Prometheus configuration, Grafana dashboard and compose profile parse,
and every `stockline_*` name they use is one /metrics really exposes (a typo alerts on nothing)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

OPS = ROOT / "ops"
NAME = re.compile(r"\bstockline_[a-z_]+\b")


def _exposed_names(scrape) -> set[str]:
    scrape()  # a first request, so the HTTP families have samples
    families = scrape()
    return set(families) | {s.name for family in families.values() for s in family.samples}


def _alert_rules() -> list[dict]:
    document = yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alert_rules_cover_the_issue_and_use_exposed_metrics(db, scrape):
    # given: every family has samples (the drift gauges once verify_ledger has run)
    from inventory.tasks import verify_ledger_task

    verify_ledger_task.apply()
    exposed = _exposed_names(scrape)  # the task run counted too (task_prerun/postrun)

    rules = _alert_rules()

    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        unknown = set(NAME.findall(rule["expr"])) - exposed
        assert not unknown, (rule["alert"], unknown)
    used = " ".join(rule["expr"] for rule in rules)
    for metric in ("stockline_inbound_oldest_pending_age_seconds", "stockline_channel_oldest_dirty_age_seconds",
                   "stockline_dead_letters", "stockline_ledger_drift_positions", "stockline_channel_circuit_open"):
        assert metric in used, f"no alert on {metric}"


def test_dashboard_queries_use_exposed_metrics(db, scrape):
    from inventory.tasks import verify_ledger_task

    verify_ledger_task.apply()
    exposed = _exposed_names(scrape)
    dashboard = json.loads((OPS / "grafana" / "dashboards" / "stockline.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) > 10
    unknown = {name for expr in exprs for name in NAME.findall(expr)} - exposed
    assert not unknown
    datasource = yaml.safe_load((OPS / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in datasource["datasources"]}
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p} <= uids


def test_prometheus_config_and_compose_profile():
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["authorization"]["type"] == "Bearer"

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana", "flower"):
        assert services[name]["profiles"] == ["observability"], name
    assert all("profiles" not in services[name] for name in ("web", "worker", "beat", "postgres", "redis"))
    mounted = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    for path in ("ops/prometheus/prometheus.yml", "ops/prometheus/alerts.yml", "ops/grafana/provisioning",
                 "ops/grafana/dashboards"):
        assert f"./{path}:" in mounted
        assert (ROOT / path).exists()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) not installed")
def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(OPS / "prometheus" / "alerts.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
