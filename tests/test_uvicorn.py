"""The console command serves the shipped models over real HTTP (uvicorn in its own process)."""

import os
import shutil
import socket
import subprocess
import sys

import httpx

from conftest import MODELS, ROOT, free_port, served, wait_ready


def test_ecg_serve_answers_over_http_and_logs_each_request_once(fixture_beats):
    port = free_port()
    command = shutil.which("ecg-serve", path=os.path.dirname(sys.executable))
    assert command, "the ecg-serve console script is installed"
    env = {**os.environ, "ECG_PORT": str(port), "ECG_MODELS_DIR": str(MODELS), "ECG_LOG_LEVEL": "info"}
    process = subprocess.Popen([command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    beat = fixture_beats.beats[0].tolist()
    try:
        wait_ready(f"{base}/readyz", process)
        response = httpx.post(f"{base}/predict", json={"beats": fixture_beats.beats[:8].tolist()}, timeout=30)
        assert response.status_code == 200
        assert len(response.json()["predictions"]) == 8
        assert httpx.post(f"{base}/predict", json={"model": "resnet", "beats": [beat]}, timeout=30).status_code == 200
        assert httpx.post(f"{base}/predict", json={"beats": [[0.5] * 10]}, timeout=30).status_code == 422
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert 'ecg_http_request_duration_seconds_count{method="POST",route="/predict",status="200"} 2.0' in metrics
        assert 'ecg_http_request_duration_seconds_count{method="POST",route="/predict",status="422"} 1.0' in metrics
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    lines = [line for line in output.splitlines() if '"event": "request"' in line and '"/predict"' in line]
    assert len(lines) == 3
    assert '"model": "resnet"' in lines[1] and '"beats": 1' in lines[1]
    assert f"{beat[1]:.6f}"[:6] not in output  # no beat data in the logs


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def test_worker_processes_share_the_port_and_report_metrics_for_the_whole_service(fixture_beats, monkeypatch):
    """ECG_WORKERS=2: two server processes answer on one port; /metrics, whichever worker answers
    it, counts every request of both; SIGTERM stops the workers and the parent, and the shared
    metrics folder goes with them."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # the service makes its own
    body = {"model": "resnet", "beats": fixture_beats.beats[:2].tolist()}
    with served(workers=2) as (base, process):
        servers = [p for p in children_of(process.pid) if b"spawn_main" in open(f"/proc/{p}/cmdline", "rb").read()]
        environ = dict(item.split(b"=", 1) for item in open(f"/proc/{servers[0]}/environ", "rb").read().split(b"\0")
                       if b"=" in item)
        folder = environ[b"PROMETHEUS_MULTIPROC_DIR"].decode()
        for _ in range(40):  # fresh connections: the kernel spreads them over both workers
            assert httpx.post(f"{base}/predict", json=body, timeout=30).status_code == 200
        for _ in range(6):
            metrics = httpx.get(f"{base}/metrics", timeout=10).text
            assert 'ecg_http_request_duration_seconds_count{method="POST",route="/predict",status="200"} 40.0' \
                in metrics
            assert 'ecg_beats_classified_total{label="N",model="resnet"}' in metrics
            assert "ecg_http_requests_in_flight" in metrics
        counting = {f for f in os.listdir(folder) if f.startswith("counter_")}
        assert len(counting) == 2, f"both workers answered: {counting}"  # one file per process
    assert process.returncode == 0
    assert len(servers) == 2, f"worker processes: {servers}"
    assert not any(os.path.exists(f"/proc/{p}") for p in servers)
    assert not os.path.exists(folder)


def test_worker_processes_refuse_a_port_in_use_at_once():
    port = free_port()
    taken = socket.socket()
    taken.bind(("127.0.0.1", port))
    taken.listen()
    command = shutil.which("ecg-serve", path=os.path.dirname(sys.executable))
    env = {**os.environ, "ECG_PORT": str(port), "ECG_MODELS_DIR": str(MODELS), "ECG_WORKERS": "2"}
    try:
        finished = subprocess.run([command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert finished.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in finished.stdout + finished.stderr
