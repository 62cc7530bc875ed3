"""The shipped scrape config and every Grafana panel query, against a real Prometheus server."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import httpx
import pytest
import wfdb
import yaml

from conftest import FIXTURES, MODELS, ROOT, free_port, wait_ready

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ecg-service.json"
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="Prometheus server not installed (Debian: prometheus)")


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_shipped_config_passes_promtool():
    result = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def stack(tmp_path_factory, fixture_beats):
    """ecg-serve and Prometheus scraping it with the shipped config, retargeted to this host."""
    tmp = tmp_path_factory.mktemp("prometheus")
    api_port, prom_port = free_port(), free_port()
    api = subprocess.Popen(
        [shutil.which("ecg-serve", path=os.path.dirname(sys.executable))], cwd=ROOT,
        env={**os.environ, "ECG_PORT": str(api_port), "ECG_MODELS_DIR": str(MODELS), "ECG_LOG_LEVEL": "warning"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{api_port}"]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        api_url, prom_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prom_port}"
        wait_ready(f"{api_url}/readyz", api)
        wait_ready(f"{prom_url}/-/ready", prometheus)
        beats = fixture_beats.beats.tolist()
        record = wfdb.rdrecord(str(FIXTURES / "208"), channel_names=["MLII"])  # many V beats, some unsure
        strip = {"sampling_rate": record.fs, "signal": record.p_signal[:, 0].round(4).tolist()}
        for second in range(6):
            httpx.post(f"{api_url}/predict/strip", json=strip, timeout=60).raise_for_status()  # context-odenet  # traffic spread over several scrapes, so rate() has two points
            for model in ("odenet", "resnet"):
                httpx.post(f"{api_url}/predict", json={"model": model, "beats": beats[second * 50:second * 50 + 40]},
                           timeout=30).raise_for_status()
            httpx.post(f"{api_url}/predict", json={"beats": [[0.5] * 10]}, timeout=30)  # a 422
            httpx.post(f"{api_url}/predict", json={"beats": beats[:512], "solver": {"rtol": 1e-6, "atol": 1e-6}},
                       headers={"X-Request-Timeout": "0.001"}, timeout=30)  # a 504
            time.sleep(1.2)
        time.sleep(2)
        yield api_url, prom_url
    finally:
        for process in (api, prometheus):
            process.terminate()
            process.wait(timeout=30)


def query(prom_url: str, expr: str) -> list:
    response = httpx.get(f"{prom_url}/api/v1/query", params={"query": expr}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]["result"]


def test_prometheus_scrapes_the_service(stack):
    _, prom_url = stack
    targets = httpx.get(f"{prom_url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]
    assert query(prom_url, 'up{job="ecg-api"} == 1')


@pytest.mark.parametrize("title,expr", panel_queries())
def test_every_dashboard_query_returns_data(stack, title, expr):
    _, prom_url = stack
    concrete = expr.replace("$__rate_interval", "30s")
    assert query(prom_url, concrete), f"panel {title!r}: no data for {concrete}"


def test_dashboard_uses_only_exported_metrics(stack):
    api_url, _ = stack
    exported = set(re.findall(r"^# TYPE (\w+) ", httpx.get(f"{api_url}/metrics", timeout=10).text, re.M))
    series = set()
    for name in exported:
        series |= {name, f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_total"}
    for title, expr in panel_queries():
        for metric in re.findall(r"\b(ecg_\w+)", expr):
            assert metric in series, f"panel {title!r} queries {metric}, which the service does not export"
