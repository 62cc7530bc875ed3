"""Replicas behind a load balancer against server processes sharing one port, on the same cores:

1. --replicas single-process `ecg-serve` replicas (ECG_WORKERS=1, a port each) behind HAProxy with
   the shipped config (deploy/haproxy/haproxy.cfg: least connections, readiness checks);
2. one `ecg-serve` with ECG_WORKERS=--workers, whose processes all listen on the port with
   SO_REUSEPORT, the kernel spreading connections over them by a hash of each.

Each under wrk: --connections connections sending single-beat /predict requests (real beats, the
bundled MIT-BIH excerpts) for --seconds; the two alternate --runs times, so both see the same
machine. Prints throughput, p50 and p99, and the split over server processes: established
connections per process (`ss`, sampled through the run) and, behind HAProxy, /predict requests per
replica (each replica's /metrics; the workers of one service report their sum, so for them only
the connections are split). Everything (servers, HAProxy, wrk) shares this machine's cores;
--cpus pins the servers to a set of them.
Usage: python benchmarks/replicas.py [--replicas 3] [--workers 2] [--connections 64] [--seconds 10]
                                     [--runs 2] [--cpus 0,1] [--load odenet context-odenet]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

import loadgen
from processes import ROOT, free_port, start, stop

HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"


def service(models: Path, workers: int, cpus: str | None):
    """`python -m service` with `workers` processes, optionally pinned; (process, port)."""
    port = free_port()
    env = {"ECG_PORT": str(port), "ECG_LOG_LEVEL": "warning", "ECG_MODELS_DIR": str(models),
           "ECG_WORKERS": str(workers), "ECG_MAX_REQUESTS_IN_FLIGHT": "1024"}
    command = (["taskset", "-c", cpus] if cpus else []) + [sys.executable, "-m", "service"]
    process = start(command, f"http://127.0.0.1:{port}/readyz", env=env)
    deadline = time.monotonic() + 180  # /readyz answers once one worker is up: wait for every one
    while len(listeners(port)) < workers:
        if time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"{workers} workers not listening on {port}: {listeners(port)}")
        time.sleep(0.3)
    return process, port


def listeners(port: int) -> set[int]:
    """Pids of the processes listening on `port`."""
    out = os.popen(f"ss -Htlnp '( sport = :{port} )'").read()
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


def haproxy(ports: list[int]):
    """HAProxy with the shipped config in front of `ports`, once every replica is UP; (process, port, admin URL)."""
    port, admin = free_port(), free_port()
    env = {"ECG_LB_BIND": f"127.0.0.1:{port}", "ECG_LB_ADMIN": f"127.0.0.1:{admin}",
           **{f"ECG_REPLICA_{i + 1}": f"127.0.0.1:{p}" for i, p in enumerate(ports)}}
    process = start([shutil.which("haproxy"), "-db", "-f", str(HAPROXY_CONFIG)], f"http://127.0.0.1:{admin}/stats",
                    env=env)
    admin_url = f"http://127.0.0.1:{admin}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = httpx.get(f"{admin_url}/stats;csv", timeout=5).text.lstrip("# ")
        states = [row["status"] for row in csv.DictReader(io.StringIO(text))
                  if row["pxname"] == "ecg-replicas" and row["svname"] not in ("FRONTEND", "BACKEND")]
        if len(states) == len(ports) and all(s == "UP" for s in states):
            return process, port, admin_url
        time.sleep(0.2)
    stop(process)
    raise RuntimeError(f"replicas not UP in HAProxy: {states}")


def connections_by_process(ports: list[int]) -> dict[int, int]:
    """Established TCP connections on `ports`, by the pid of the process that holds each."""
    filter_ = " or ".join(f"sport = :{p}" for p in ports)
    out = os.popen(f"ss -Htnp state established '( {filter_} )'").read()
    counts: dict[int, int] = {}
    for pid in re.findall(r"pid=(\d+)", out):
        counts[int(pid)] = counts.get(int(pid), 0) + 1
    return counts


def predictions(port: int) -> int:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return int(sum(float(v) for v in re.findall(
        r'^ecg_http_request_duration_seconds_count\{[^}]*route="/predict"[^}]*status="200"[^}]*\} (\S+)$', text, re.M)))


def under_load(url: str, bodies: loadgen.Bodies, connections: int, seconds: float, ports: list[int]):
    """wrk against url while `ss` samples the connection split every second, after the first."""
    samples: list[dict[int, int]] = []
    done = threading.Event()

    def sample():
        if not done.wait(1.0):
            while not done.wait(1.0):
                samples.append(connections_by_process(ports))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = loadgen.run(url, "/predict", bodies, connections, seconds)
    finally:
        done.set()
        sampler.join()
    pids = sorted({pid for s in samples for pid in s})
    split = [round(statistics.mean(s.get(pid, 0) for s in samples)) for pid in pids] if samples else []
    return result, split


def fmt(label: str, result: loadgen.Load, split: list[int], requests: list[int] | None = None) -> str:
    line = (f"{label:<34} {result.rate():8.0f} req/s  p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:6.1f} ms  "
            f"errors {result.error_statuses + result.socket_errors}  connections per process "
            f"{'/'.join(map(str, sorted(split)))}")
    if requests:
        spread = (max(requests) - min(requests)) / statistics.mean(requests)
        line += f"  requests per replica {'/'.join(map(str, requests))} (spread {spread:.0%})"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="folder of artefact folders")
    parser.add_argument("--model", default="odenet", help="model of the single-beat requests")
    parser.add_argument("--load", nargs="+", default=["odenet", "context-odenet"],
                        help="the models each server loads (the defaults: servers start in seconds)")
    parser.add_argument("--replicas", type=int, default=3, help="single-process replicas behind HAProxy")
    parser.add_argument("--workers", type=int, default=2, help="ECG_WORKERS of the one-port service")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10, help="per run and setup")
    parser.add_argument("--runs", type=int, default=2, help="runs of each setup, alternating")
    parser.add_argument("--cpus", default=None, help="pin the servers to these cores (taskset -c), e.g. 0,1")
    args = parser.parse_args()
    if not loadgen.available() or shutil.which("haproxy") is None:
        raise SystemExit("needs wrk and haproxy: apt-get install wrk haproxy")
    from training.data import load_records

    beats = load_records(ROOT / "tests" / "fixtures" / "mitdb", ("100", "208", "232")).beats[:400]
    bodies = loadgen.Bodies([json.dumps({"model": args.model, "beats": [b.round(6).tolist()]}).encode() for b in beats])
    models = Path(tempfile.mkdtemp(prefix="ecg-models-"))
    for name in args.load:
        (models / name).symlink_to((args.models / name).resolve(), target_is_directory=True)
    print(f"{os.cpu_count()} cores; {args.connections} connections, single-beat /predict ({args.model}), "
          f"{args.seconds:g} s per run; servers pinned to {args.cpus or 'all cores'}")
    results: dict[str, list] = {"haproxy": [], "reuseport": []}
    try:
        for run in range(args.runs):
            replicas = [service(models, 1, args.cpus) for _ in range(args.replicas)]
            ports = [port for _, port in replicas]
            balancer = None
            try:
                balancer, lb_port, _ = haproxy(ports)
                before = [predictions(p) for p in ports]
                result, split = under_load(f"http://127.0.0.1:{lb_port}", bodies, args.connections, args.seconds, ports)
                requests = [predictions(p) - b for p, b in zip(ports, before)]
                results["haproxy"].append(result)
                print(fmt(f"run {run + 1}: {args.replicas} replicas + HAProxy", result, split, requests), flush=True)
            finally:
                for process in [p for p, _ in replicas] + ([balancer] if balancer else []):
                    stop(process)
            process, port = service(models, args.workers, args.cpus)
            try:
                result, split = under_load(f"http://127.0.0.1:{port}", bodies, args.connections, args.seconds, [port])
                results["reuseport"].append(result)
                print(fmt(f"run {run + 1}: ECG_WORKERS={args.workers} (SO_REUSEPORT)", result, split), flush=True)
            finally:
                stop(process)
    finally:
        bodies.remove()
        shutil.rmtree(models)
    for name, label in (("haproxy", f"{args.replicas} replicas + HAProxy"),
                        ("reuseport", f"ECG_WORKERS={args.workers}")):
        runs = results[name]
        if runs:
            print(f"median {label:<27} {statistics.median(r.rate() for r in runs):8.0f} req/s  "
                  f"p99 {statistics.median(r.p99_ms for r in runs):6.1f} ms")


if __name__ == "__main__":
    main()
