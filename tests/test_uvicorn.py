"""The console command serves the shipped models over real HTTP (uvicorn in its own process)."""

import os
import shutil
import subprocess
import sys

import httpx

from conftest import MODELS, ROOT, free_port, wait_ready


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
