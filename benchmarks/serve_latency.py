"""Serving latency and throughput: in-process predictors, over HTTP, and a plain torchdiffeq baseline.

For each case prints p50/p99 latency (ms) and throughput (beats/s) of sequential calls, at batch 1
and 256, for the ResNet (onnxruntime) and the ODE-Net (torchdiffeq, dopri5) at rtol = atol in
{1e-1, 1e-3, 1e-6}. The baseline is `odeint` called directly on the same trained network, with
torchdiffeq's default (batch-wide) error norm. Real MIT-BIH beats from the bundled excerpts.
Usage: python benchmarks/serve_latency.py [--models models] [--reps 100]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from torchdiffeq import odeint

from service.networks import SolverConfig
from service.registry import ModelRegistry
from training.data import load_records

ROOT = Path(__file__).resolve().parents[1]
TOLERANCES = (1e-1, 1e-3, 1e-6)


def timed(call, reps: int) -> np.ndarray:
    call()  # warm-up
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return np.array(times)


def row(case: str, batch: int, times: np.ndarray) -> None:
    p50, p99 = np.percentile(times, [50, 99]) * 1000
    print(f"{case:44} {batch:5d} {p50:9.2f} {p99:9.2f} {batch / times.mean():11.0f}")


def start_server(models: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ECG_PORT": str(port), "ECG_MODELS_DIR": str(models), "ECG_LOG_LEVEL": "warning",
           "ECG_MAX_BEATS_PER_REQUEST": "1024"}
    process = subprocess.Popen([sys.executable, "-m", "service"], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--reps", type=int, default=100, help="calls per case at batch 1 (batch 256: a fifth)")
    args = parser.parse_args()

    beats = load_records(ROOT / "tests/fixtures/mitdb", ("100", "208", "232")).beats
    batches = {1: beats[:1], 256: beats[:256]}
    registry = ModelRegistry.load(args.models)
    odenet, resnet = registry.models["odenet"], registry.models["resnet"]
    network = odenet.predictor.model

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'case':44} {'batch':>5} {'p50 ms':>9} {'p99 ms':>9} {'beats/s':>11}")
    for batch, x in batches.items():
        reps = args.reps if batch == 1 else max(args.reps // 5, 5)
        row("in-process resnet (onnxruntime)", batch, timed(lambda: resnet.predictor.predict(x), reps))
        for tol in TOLERANCES:
            solver = SolverConfig(rtol=tol, atol=tol)
            row(f"in-process odenet dopri5 {tol:g}", batch, timed(lambda: odenet.predictor.predict(x, solver), reps))

            @torch.inference_mode()
            def baseline():
                h = network.encoder(torch.from_numpy(x))
                h = odeint(network.body.dynamics, h, torch.tensor([0.0, 1.0]), rtol=tol, atol=tol)[-1]
                return torch.softmax(network.head(h), dim=1)

            row(f"baseline plain odeint {tol:g}", batch, timed(baseline, reps))

    process, base = start_server(args.models)
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            for batch, x in batches.items():
                reps = args.reps if batch == 1 else max(args.reps // 5, 5)
                payload = x.tolist()
                call = lambda body: (lambda: client.post("/predict", json=body).raise_for_status())  # noqa: E731
                row("HTTP resnet", batch, timed(call({"model": "resnet", "beats": payload}), reps))
                for tol in TOLERANCES:
                    body = {"model": "odenet", "beats": payload, "solver": {"rtol": tol, "atol": tol}}
                    row(f"HTTP odenet dopri5 {tol:g}", batch, timed(call(body), reps))
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
