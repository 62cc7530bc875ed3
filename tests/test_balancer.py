"""Replicas behind a real load balancer: three single-process `ecg-serve` replicas behind HAProxy
with the shipped config (deploy/haproxy/haproxy.cfg: least connections, readiness checks on
/readyz) and a real Prometheus scraping each replica. Requests spread evenly over the replicas,
the dashboard's queries aggregate across them, and a replica stopped under load (SIGTERM) loses
no request: HAProxy takes it out when its readiness fails, before it stops listening."""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import MODELS, ROOT, free_port, wait_ready

HAPROXY, PROMETHEUS = shutil.which("haproxy"), shutil.which("prometheus")
CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "ecg-service.json"
REPLICAS = 3
SHUTDOWN_DELAY_S = 3  # readiness 503 while serving: several of HAProxy's 500 ms checks
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="HAProxy not installed (Debian: haproxy)")


def beats(count: int, seed: int = 0) -> list[list[float]]:
    """Beat-shaped inputs in [0, 1] (a QRS-like spike on a slow wave, with noise)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 187)
    shape = np.exp(-((t - 0.3) / 0.02) ** 2) + 0.2 * np.exp(-((t - 0.6) / 0.08) ** 2)
    return np.clip(shape + 0.02 * rng.standard_normal((count, 187)), 0, 1).round(4).tolist()


class Replica:
    """One `ecg-serve` process (ECG_WORKERS=1) on a port of its own, its output read as it comes."""

    def __init__(self, models: Path):
        self.port = free_port()
        env = {**os.environ, "ECG_PORT": str(self.port), "ECG_MODELS_DIR": str(models), "ECG_WORKERS": "1",
               "ECG_LOG_LEVEL": "debug", "ECG_SHUTDOWN_DELAY_S": str(SHUTDOWN_DELAY_S)}
        self.process = subprocess.Popen([shutil.which("ecg-serve", path=os.path.dirname(sys.executable))], cwd=ROOT,
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def predictions_served(self) -> int:
        """/predict requests this replica answered with 200, from its own /metrics."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return int(sum(sample.value for family in text_string_to_metric_families(text)
                       for sample in family.samples
                       if sample.name == "ecg_http_request_duration_seconds_count"
                       and sample.labels.get("route") == "/predict" and sample.labels.get("status") == "200"))

    def events(self, kind: str) -> set[str]:
        """Request ids of the /predict requests it logged as accepted, or answered ("request")."""
        self.reader.join(timeout=10)
        logged = [json.loads(line) for line in self.lines if line.startswith("{")]
        return {e["request_id"] for e in logged if e["event"] == kind and "/predict" in (e.get("path"), e.get("route"))}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=60)


class Balancer:
    """HAProxy with deploy/haproxy/haproxy.cfg, its addresses set through the environment."""

    def __init__(self, replicas: list[Replica], tmp: Path):
        self.port, self.admin_port = free_port(), free_port()
        env = {**os.environ, "ECG_LB_BIND": f"127.0.0.1:{self.port}", "ECG_LB_ADMIN": f"127.0.0.1:{self.admin_port}",
               **{f"ECG_REPLICA_{i + 1}": f"127.0.0.1:{r.port}" for i, r in enumerate(replicas)}}
        self.process = subprocess.Popen([HAPROXY, "-db", "-f", str(CONFIG)], env=env, cwd=tmp,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.names = [f"replica{i + 1}" for i in range(len(replicas))]

    def servers(self) -> dict[str, dict]:
        """The backend's servers as HAProxy's stats report them (status, counters, ...)."""
        text = httpx.get(f"http://127.0.0.1:{self.admin_port}/stats;csv", timeout=5).text.lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(io.StringIO(text))
                if row["pxname"] == "ecg-replicas" and row["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_all_up(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"haproxy exited with {self.process.returncode}: {self.process.stdout.read()}")
            try:
                servers = self.servers()
                if sorted(servers) == sorted(self.names) and all(s["status"] == "UP" for s in servers.values()):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"not every replica came UP in HAProxy: {self.servers()}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three replicas (serving the default models), HAProxy in front, Prometheus scraping each
    replica with the shipped scrape config."""
    tmp = tmp_path_factory.mktemp("balancer")
    models = tmp / "models"  # the two default models: replicas start in seconds
    models.mkdir()
    for name in ("odenet", "context-odenet"):
        (models / name).symlink_to(MODELS / name, target_is_directory=True)
    replicas = [Replica(models) for _ in range(REPLICAS)]
    balancer = prometheus = None
    try:
        for replica in replicas:
            wait_ready(f"{replica.url}/readyz", replica.process, lambda r=replica: "".join(r.lines))
        balancer = Balancer(replicas, tmp)
        balancer.wait_all_up()
        if PROMETHEUS:
            config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
            config["global"]["scrape_interval"] = "1s"
            config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{r.port}" for r in replicas]}]
            (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
            prom_port = free_port()
            prometheus = subprocess.Popen(
                [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            prometheus.url = f"http://127.0.0.1:{prom_port}"
            wait_ready(f"{prometheus.url}/-/ready", prometheus)
        yield replicas, balancer, prometheus
    finally:
        others = ([balancer.process] if balancer else []) + ([prometheus] if prometheus else [])
        for process in [r.process for r in replicas] + others:
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=60)


def load(url: str, connections: int, requests_each: int, body: dict) -> list[int]:
    """`connections` clients, one keep-alive connection each, sending `requests_each` requests."""
    statuses: list[int] = []

    def client():
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(requests_each):
                statuses.append(http.post("/predict", json=body).status_code)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_requests_spread_evenly_over_the_replicas(cluster):
    replicas, balancer, _ = cluster
    before = [r.predictions_served() for r in replicas]
    statuses = load(balancer.url, connections=64, requests_each=30, body={"beats": beats(1)})
    assert len(statuses) == 64 * 30 and set(statuses) == {200}, Counter(statuses)
    counts = [r.predictions_served() - b for r, b in zip(replicas, before)]
    assert sum(counts) == len(statuses)  # every request reached one replica, once
    assert max(counts) <= 1.2 * min(counts), f"per-replica counts {counts}"


def query(prometheus, expr: str) -> list:
    response = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": expr}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]["result"]


@pytest.mark.skipif(PROMETHEUS is None, reason="Prometheus server not installed (Debian: prometheus)")
def test_prometheus_scrapes_every_replica_and_the_dashboard_aggregates_them(cluster):
    replicas, balancer, prometheus = cluster
    import wfdb

    from conftest import FIXTURES

    record = wfdb.rdrecord(str(FIXTURES / "208"), channel_names=["MLII"])  # context-odenet flags some beats
    strip = {"sampling_rate": record.fs, "signal": record.p_signal[:, 0].round(4).tolist()}
    with httpx.Client(base_url=balancer.url, timeout=30) as http:
        for second in range(4):  # traffic over several scrapes, so rate() has two points
            for replica in replicas:
                http.post("/predict", json={"beats": beats(8, seed=second)}).raise_for_status()
                httpx.post(f"{replica.url}/predict/strip", json=strip, timeout=60).raise_for_status()
                assert http.post("/predict", json={"beats": [[0.5] * 10]}).status_code == 422
                # A 504, sent to the replica itself: through HAProxy the body can take longer than the
                # deadline to arrive, and the answer is a 408.
                httpx.post(f"{replica.url}/predict", json={"beats": beats(512), "solver": {"rtol": 1e-6, "atol": 1e-6}},
                           headers={"X-Request-Timeout": "0.001"}, timeout=30)
            time.sleep(1.1)
    time.sleep(2.5)  # a scrape after the last request
    up = query(prometheus, 'up{job="ecg-api"} == 1')
    assert sorted(s["metric"]["instance"] for s in up) == sorted(f"127.0.0.1:{r.port}" for r in replicas)
    total = query(prometheus, 'sum(ecg_http_request_duration_seconds_count{route="/predict",status="200"})')
    assert float(total[0]["value"][1]) == sum(r.predictions_served() for r in replicas)
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "30s")
            result = query(prometheus, expr)
            assert result, f"panel {panel['title']!r}: no data for {expr}"
            if expr.startswith(("sum", "histogram_quantile")):  # aggregated: one series per group, not per replica
                assert not any("instance" in s["metric"] for s in result), (panel["title"], result[:2])
    by_route = query(prometheus, dashboard["panels"][0]["targets"][0]["expr"].replace("$__rate_interval", "30s"))
    assert len({(s["metric"]["route"], s["metric"]["status"]) for s in by_route}) == len(by_route)


def test_a_replica_stopped_under_load_loses_no_request(cluster):
    """Runs last: it stops a replica of the module's cluster."""
    replicas, balancer, _ = cluster
    stopped, name = replicas[0], balancer.names[0]
    body = {"beats": beats(16), "solver": {"rtol": 1e-5, "atol": 1e-5}}
    outcomes: dict[str, str] = {}  # request id -> "ok" | status | the client's error
    sent_at: dict[str, float] = {}
    states: list[tuple[float, str]] = []  # (time, HAProxy's status of the stopped replica)
    stop = threading.Event()

    def client():
        with httpx.Client(base_url=balancer.url, timeout=30) as http:
            while not stop.is_set():
                rid = uuid.uuid4().hex[:16]
                sent_at[rid] = time.monotonic()
                try:
                    response = http.post("/predict", json=body, headers={"X-Request-ID": rid})
                    complete = response.status_code == 200 and len(response.json()["predictions"]) == 16
                    outcomes[rid] = "ok" if complete else f"status {response.status_code}"
                except httpx.TransportError as err:
                    outcomes[rid] = type(err).__name__

    def watch():
        while not stop.is_set():
            status = balancer.servers()[name]["status"]
            states.append((time.monotonic(), status))  # the time after the answer: the status held by then
            time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(32)] + [threading.Thread(target=watch)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    signalled = time.monotonic()
    stopped.process.send_signal(signal.SIGTERM)
    stopped.process.wait(timeout=60)
    exited = time.monotonic()
    time.sleep(1)  # the other two carry on alone
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    failed = {rid: outcome for rid, outcome in outcomes.items() if outcome != "ok"}
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {list(failed.items())[:5]}"
    accepted, answered = stopped.events("accepted"), stopped.events("request")
    assert accepted == answered  # it finished every request it took
    accepted &= set(sent_at)  # this test's requests (the module's earlier tests sent some too)
    assert len(accepted) > 20  # the stopped replica had its share of the load
    down_at = next((t for t, status in states if t > signalled and status.startswith("DOWN")), None)
    assert down_at is not None and down_at < exited, "HAProxy did not take the replica out before it closed"
    late = [rid for rid in accepted if sent_at[rid] > down_at]
    assert not late, (f"{len(late)} requests sent after HAProxy marked the replica DOWN reached it, up to "
                      f"{max(sent_at[rid] for rid in late) - down_at:.3f} s after")
    assert all(status == "UP" for t, status in states if t < signalled)
    assert sum(1 for rid in outcomes if sent_at[rid] > exited) > 20  # served by the two left
