"""The compose stack's files: compose validates, the dashboard is well formed and provisioned."""

import json
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "ecg-service.json"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_validates():
    result = subprocess.run(["docker-compose", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_compose_services_are_wired():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"api", "prometheus", "grafana"}
    assert services["prometheus"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert all("healthcheck" in s for s in services.values())
    assert {"prometheus-data", "grafana-data"} <= set(compose["volumes"])
    grafana_env = services["grafana"]["environment"]
    assert "GRAFANA_ADMIN_PASSWORD" in grafana_env["GF_SECURITY_ADMIN_PASSWORD"]
    assert grafana_env["GF_AUTH_ANONYMOUS_ENABLED"].endswith(":-false}")


def test_dashboard_is_provisioned_against_the_provisioned_datasource():
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(titles) == len(set(titles)) >= 9
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/ecg.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts
