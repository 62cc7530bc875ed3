"""The compose stack's files: compose validates (v1, and v2 where installed), images build without a
registry except Grafana's, the dashboard is provisioned and is a dashboard by Grafana's own schema
(grafana-foundation-sdk's types for Grafana 11.1). Grafana itself does not run here; the dashboard's
queries run against a real Prometheus in test_prometheus.py."""

import json
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "ecg-service.json"


def compose_v2() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (v1) not installed")
def test_compose_file_validates_with_compose_v1():
    result = subprocess.run(["docker-compose", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not compose_v2(), reason="docker compose (v2 plugin) not installed; Debian's docker.io lacks it")
def test_compose_file_validates_with_compose_v2():
    result = subprocess.run(["docker", "compose", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_only_grafana_needs_a_registry():
    """Every image but Grafana's is built here (the API from a wheelhouse, Prometheus from Debian's
    package), on a base image the air-gapped route makes itself; no obsolete `version:` key."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "version" not in compose
    pulled = {name for name, service in compose["services"].items() if "build" not in service}
    assert pulled == {"grafana"}
    prometheus = compose["services"]["prometheus"]["build"]
    dockerfile = (ROOT / prometheus["context"] / prometheus["dockerfile"]).read_text()
    assert "install -y --no-install-recommends prometheus" in dockerfile
    for service in ("api", "prometheus"):
        assert "BASE_IMAGE" in compose["services"][service]["build"]["args"]


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


def unknown_fields(ours, theirs, path="") -> list[str]:
    """Paths of `ours` (the dashboard's JSON) that `theirs` (the same after Grafana's types read and
    wrote it) lost or changed: fields the schema does not know, or at the wrong place."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return [path or "/"]
        return [p for key, value in ours.items()
                for p in ([f"{path}/{key}"] if key not in theirs else unknown_fields(value, theirs[key], f"{path}/{key}"))]
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(ours) != len(theirs):
            return [path]
        return [p for i, (a, b) in enumerate(zip(ours, theirs)) for p in unknown_fields(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [path]


def grafana_dashboard(dashboard: dict):
    """The dashboard read by Grafana's types, its panels' options and queries by their plugins' types."""
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    return Dashboard.from_json(dashboard)


def through_grafanas_schema(dashboard: dict) -> dict:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    return json.loads(JSONEncoder().encode(grafana_dashboard(dashboard)))


def test_the_dashboard_is_a_grafana_dashboard_by_grafanas_schema():
    pytest.importorskip("grafana_foundation_sdk")
    from grafana_foundation_sdk.cog import runtime
    from grafana_foundation_sdk.models import prometheus

    dashboard = json.loads(DASHBOARD.read_text())
    assert unknown_fields(dashboard, through_grafanas_schema(dashboard)) == []
    for panel in grafana_dashboard(dashboard).panels:
        config = runtime.panelcfg_config(panel.type_val)
        assert config is not None, f"{panel.title}: {panel.type_val!r} is not a Grafana panel type"
        assert isinstance(panel.options, config.options_from_json_hook.__self__), panel.title
        assert panel.targets and all(isinstance(t, prometheus.Dataquery) for t in panel.targets), panel.title


def test_the_schema_check_finds_a_misnamed_or_misplaced_field():
    pytest.importorskip("grafana_foundation_sdk")
    dashboard = json.loads(DASHBOARD.read_text())
    dashboard["panels"][0]["gridPosition"] = dashboard["panels"][0].pop("gridPos")
    dashboard["panels"][1]["fieldConfig"]["default"] = dashboard["panels"][1]["fieldConfig"].pop("defaults")
    dashboard["panels"][2]["targets"][0]["query"] = dashboard["panels"][2]["targets"][0].pop("expr")
    dashboard["refreshInterval"] = dashboard.pop("refresh")
    assert unknown_fields(dashboard, through_grafanas_schema(dashboard)) == [
        "/panels[0]/gridPosition", "/panels[1]/fieldConfig/default", "/panels[2]/targets[0]/query",
        "/refreshInterval"]
