"""Serving speed in one run, on the same real beats (the bundled MIT-BIH excerpts):

1. In-process, one thread: the ODE-Net as the service runs it (onnxruntime encoder, compiled
   per-beat dopri5, numpy head) against a plain `torchdiffeq.odeint` call on the same network,
   and the ResNet in onnxruntime; batch 1 and 256, rtol = atol = 1e-3.
2. Over HTTP, single-beat requests from 1, 8 and 64 concurrent clients (wrk): this service's
   /predict (JSON), Open Inference Protocol JSON and binary, for the ResNet and the ODE-Net; the
   same ONNX ResNet in the peers a user would pick instead (benchmarks/peers: MLServer, KServe,
   LitServe, BentoML), each in its own virtual environment; optionally the service as it was at
   an earlier git revision (--baseline REF), for "today's" throughput.
3. Over HTTP, 256-beat binary OIP requests.
4. The ODE-Net's single-beat rows and the 256-beat rows again with one server process per core
   (ECG_WORKERS).

Prints throughput (beats/s), p50 and p99, and our ratios against each peer. Every peer's answer
is checked against ours before it is timed. Speed claims are ratios within one run: this
machine is shared and noisy.
Usage: python benchmarks/serving.py [--resnet NAME] [--odenet NAME] [--seconds 8] [--no-peers]
                                    [--workers N] [--baseline REF]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from torchdiffeq import odeint

import loadgen
from processes import ROOT, free_port, start, start_service, stop, timed
from service.models.networks import SolverConfig
from service.models.registry import ModelRegistry
from training.data import load_records

PEERS_DIR = ROOT / "build" / "peers"
CONCURRENCY = (1, 8, 64)
TOLERANCE = 1e-3


def in_process(odenet, resnet, beats: np.ndarray, reps: int) -> None:
    torch.set_num_threads(1)
    network = odenet.network
    solver = SolverConfig(rtol=TOLERANCE, atol=TOLERANCE)
    span = torch.tensor([0.0, 1.0])

    @torch.inference_mode()
    def baseline(x):
        h = odeint(network.body.dynamics, network.encoder(torch.from_numpy(x)), span, rtol=TOLERANCE, atol=TOLERANCE)
        return torch.softmax(network.head(h[-1]), dim=1)

    print(f"\nIn-process, one thread, dopri5 rtol = atol = {TOLERANCE:g}")
    print(f"{'case':48} {'batch':>5} {'p50 ms':>8} {'p99 ms':>8} {'beats/s':>10} {'vs odeint':>9}")
    for batch in (1, 256):
        x = beats[:batch]
        reps_here = reps if batch == 1 else max(reps // 10, 20)
        base = timed(lambda: baseline(x), reps_here)
        rows = [(f"torchdiffeq.odeint ({odenet.name}, torch encoder)", base),
                (f"service: {odenet.name} (onnxruntime + fastode)", timed(lambda: odenet.predictor.predict(x, solver), reps_here)),
                (f"service: {resnet.name} (onnxruntime)", timed(lambda: resnet.predictor.predict(x), reps_here))]
        for name, times in rows:
            p50, p99 = np.percentile(times, [50, 99]) * 1000
            ratio = np.median(base) / np.median(times)
            print(f"{name:48} {batch:5d} {p50:8.3f} {p99:8.3f} {batch / np.median(times):10.0f} {ratio:8.1f}x")


def oip_body(beats: np.ndarray, binary: bool, parameters: dict | None = None) -> bytes | tuple[bytes, bytes]:
    tensor = {"name": "beats", "shape": list(beats.shape), "datatype": "FP32"}
    request = {"inputs": [tensor]}
    if parameters:
        request["parameters"] = parameters
    if not binary:
        tensor["data"] = beats.round(6).reshape(-1).tolist()
        return json.dumps(request).encode()
    raw = beats.astype("<f4").tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    request["outputs"] = [{"name": "probabilities", "parameters": {"binary_data": True}}]
    return json.dumps(request).encode(), raw


def predict_body(model: str, beats: np.ndarray) -> bytes:
    """/predict for 187-sample beats (context beats go over /v2 here: the network input as is)."""
    return json.dumps({"model": model, "beats": beats.round(6).tolist()}).encode()


class Target:
    """One server endpoint under load: how to reach it and the bodies to send."""

    def __init__(self, label: str, url: str, path: str, bodies: loadgen.Bodies, beats_per_request: int = 1):
        self.label, self.url, self.path, self.bodies, self.beats = label, url, path, bodies, beats_per_request


def load_table(targets: list[Target], seconds: float, title: str, concurrency=CONCURRENCY) -> dict:
    print(f"\n{title}")
    print(f"{'server, endpoint':52} {'clients':>7} {'beats/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    results = {}
    for target in targets:
        for clients in concurrency:
            load = loadgen.run(target.url, target.path, target.bodies, clients, seconds)
            errors = load.error_statuses + load.socket_errors
            results[target.label, clients] = load
            print(f"{target.label:52} {clients:7d} {load.rate() * target.beats:10.0f} {load.p50_ms:8.2f} "
                  f"{load.p99_ms:8.2f} {errors:6d}")
    return results


def peer_servers(model_path: Path, input_size: int) -> dict:
    """Start each installed peer; (process, url, path, body maker, answer parser) per peer."""
    peers = {}
    if (PEERS_DIR / "mlserver/bin/mlserver").exists():
        port = free_port()
        folder = Path(tempfile.mkdtemp(prefix="mlserver-"))
        shutil.copy(ROOT / "benchmarks/peers/mlserver/runtime.py", folder / "runtime.py")
        (folder / "settings.json").write_text(json.dumps({"http_port": port, "grpc_port": free_port(),
                                                          "metrics_port": free_port()}))
        (folder / "model-settings.json").write_text(json.dumps({
            "name": "resnet", "implementation": "runtime.OnnxClassifier", "parameters": {"uri": str(model_path)},
            "max_batch_size": 64, "max_batch_time": 0.001}))
        process = start([str(PEERS_DIR / "mlserver/bin/mlserver"), "start", str(folder)],
                        f"http://127.0.0.1:{port}/v2/models/resnet/ready", cwd=folder)
        peers["MLServer 1.7, OIP JSON"] = (process, f"http://127.0.0.1:{port}", "/v2/models/resnet/infer", "oip")
    if (PEERS_DIR / "kserve/bin/python").exists():
        port = free_port()
        process = start([str(PEERS_DIR / "kserve/bin/python"), "benchmarks/peers/kserve_server.py", str(model_path),
                         str(port)], f"http://127.0.0.1:{port}/v2/models/resnet/ready")
        peers["KServe 0.21, OIP JSON"] = (process, f"http://127.0.0.1:{port}", "/v2/models/resnet/infer", "oip")
    if (PEERS_DIR / "litserve/bin/python").exists():
        port = free_port()
        process = start([str(PEERS_DIR / "litserve/bin/python"), "benchmarks/peers/litserve_server.py",
                         str(model_path), str(port)], f"http://127.0.0.1:{port}/health")
        peers["LitServe 0.2, JSON"] = (process, f"http://127.0.0.1:{port}", "/predict", "beats")
    if (PEERS_DIR / "bentoml/bin/bentoml").exists():
        port = free_port()
        process = start([str(PEERS_DIR / "bentoml/bin/bentoml"), "serve", "bentoml_service:OnnxClassifier",
                         "--port", str(port)], f"http://127.0.0.1:{port}/readyz", env={"ONNX_MODEL": str(model_path)},
                        cwd=ROOT / "benchmarks/peers")
        peers["BentoML 1.4, JSON"] = (process, f"http://127.0.0.1:{port}", "/predict", "beats")
    return peers


def peer_probabilities(url: str, path: str, style: str, beats: np.ndarray) -> np.ndarray:
    """A peer's probabilities for `beats`, one request per beat as under load."""
    rows = []
    for beat in beats[:, None]:
        if style == "oip":
            answer = httpx.post(url + path, content=oip_body(beat, False), timeout=30,
                                headers={"content-type": "application/json"}).raise_for_status().json()
            output = answer["outputs"][0]
            rows.append(np.asarray(output["data"], dtype=np.float32).reshape(output["shape"]))
        else:
            answer = httpx.post(url + path, json={"beats": beat.tolist()}, timeout=30).raise_for_status().json()
            rows.append(np.asarray(answer["probabilities"] if isinstance(answer, dict) else answer,
                                   dtype=np.float32).reshape(1, -1))
    return np.concatenate(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--resnet", default="context-resnet")
    parser.add_argument("--odenet", default="context-odenet")
    parser.add_argument("--seconds", type=float, default=8, help="per load level")
    parser.add_argument("--reps", type=int, default=300, help="in-process calls per case at batch 1")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="server processes of the last table")
    parser.add_argument("--baseline", default=None, help="git revision of an earlier release to load the same way")
    args = parser.parse_args()
    if not loadgen.available():
        raise SystemExit("wrk not found: apt-get install wrk")

    registry = ModelRegistry.load(args.models, threads=1)
    resnet, odenet = registry.models[args.resnet], registry.models[args.odenet]
    from service.models.artefacts import load_network

    odenet.network, _ = load_network(args.models / args.odenet)
    kind = resnet.input_kind
    beats = load_records(ROOT / "tests/fixtures/mitdb", ("100", "208", "232"), input=kind).beats
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"{len(beats)} real beats ({kind} input, {beats.shape[1]} numbers each)")
    in_process(odenet, resnet, beats, args.reps)

    singles = beats[:400]
    process, ours = start_service({"models_dir": args.models, "max_requests_in_flight": 1024})
    peers = {} if args.no_peers else peer_servers(args.models / args.resnet / "model.onnx", beats.shape[1])
    bodies = []
    try:
        expected = resnet.predictor.predict(singles[:8]).probabilities
        for label, (_, url, path, style) in peers.items():
            got = peer_probabilities(url, path, style, singles[:8])
            assert np.abs(got - expected).max() < 1e-5, f"{label} answers differently"

        def target(label, url, path, make, per_request=1, content_type="application/json"):
            b = loadgen.Bodies([make(singles[i:i + per_request]) for i in range(0, 400 if per_request == 1 else 256,
                                                                                  per_request)], content_type)
            bodies.append(b)
            return Target(label, url, path, b, per_request)

        solver = {"rtol": TOLERANCE, "atol": TOLERANCE}
        ours_resnet = [
            target(f"ours {args.resnet}, OIP JSON", ours, f"/v2/models/{args.resnet}/infer", lambda b: oip_body(b, False)),
            target(f"ours {args.resnet}, OIP binary", ours, f"/v2/models/{args.resnet}/infer",
                   lambda b: oip_body(b, True), content_type="application/octet-stream")]
        ours_odenet = [
            target(f"ours {args.odenet}, OIP JSON", ours, f"/v2/models/{args.odenet}/infer",
                   lambda b: oip_body(b, False, solver)),
            target(f"ours {args.odenet}, OIP binary", ours, f"/v2/models/{args.odenet}/infer",
                   lambda b: oip_body(b, True, solver), content_type="application/octet-stream")]
        if kind == "beat":
            ours_resnet.insert(0, target(f"ours {args.resnet}, /predict JSON", ours, "/predict",
                                         lambda b: predict_body(args.resnet, b)))
        peer_targets = [target(label, url, path, (lambda b: oip_body(b, False)) if style == "oip"
                               else (lambda b: json.dumps({"beats": b.round(6).tolist()}).encode()))
                        for label, (_, url, path, style) in peers.items()]
        table = load_table(ours_resnet + peer_targets, args.seconds,
                           f"Over HTTP: the same ONNX ResNet ({args.resnet}), one beat per request (wrk, one thread)")
        if peers:
            print("\nRatios: ours (best endpoint) / peer, beats/s, at 1 / 8 / 64 clients")
            for label in peers:
                cells = []
                for clients in CONCURRENCY:
                    best = max(table[t.label, clients].rate() for t in ours_resnet)
                    cells.append(f"{best / max(table[label, clients].rate(), 1e-9):6.1f}x")
                print(f"  vs {label:36} " + " ".join(cells))
        load_table(ours_odenet, args.seconds, f"Over HTTP: the ODE-Net ({args.odenet}, dopri5 {TOLERANCE:g}), "
                                              "one beat per request")
        batches = [target(f"ours {args.resnet}, OIP binary, 256 beats", ours, f"/v2/models/{args.resnet}/infer",
                          lambda b: oip_body(b, True), 256, "application/octet-stream"),
                   target(f"ours {args.odenet}, OIP binary, 256 beats", ours, f"/v2/models/{args.odenet}/infer",
                          lambda b: oip_body(b, True, solver), 256, "application/octet-stream")]
        load_table(batches, args.seconds, "Over HTTP: 256 beats per request", concurrency=(1, 4))
        stop(process)
        process, ours = start_service({"models_dir": args.models, "max_requests_in_flight": 1024,
                                       "workers": args.workers})
        for target in ours_odenet + batches:
            target.url = ours
        load_table(ours_odenet, args.seconds, f"Over HTTP: the ODE-Net, one beat per request, {args.workers} server "
                                              "processes (ECG_WORKERS)")
        load_table(batches, args.seconds, f"Over HTTP: 256 beats per request, {args.workers} server processes",
                   concurrency=(1, 4))
    finally:
        for b in bodies:
            b.remove()
        stop(process)
        for peer in peers.values():
            stop(peer[0])
    if args.baseline:
        baseline_release(args, beats)


def strip_seconds(url: str, record: Path, reps: int = 3) -> tuple[float, dict]:
    """Median seconds to classify a whole WFDB record uploaded to /predict/wfdb, and the answer."""
    files = {"header": record.with_suffix(".hea").read_bytes(), "signal": record.with_suffix(".dat").read_bytes()}
    times, answer = [], None
    for _ in range(reps):
        started = time.perf_counter()
        answer = httpx.post(f"{url}/predict/wfdb", files=files, timeout=300).raise_for_status().json()
        times.append(time.perf_counter() - started)
    return float(np.median(times)), answer


def baseline_release(args, beats: np.ndarray) -> None:
    """The service at an earlier revision, with its own models: single 187-sample beats to its
    ODE-Net over /predict (the throughput it had), and a 30-minute record through its strip path."""
    folder = ROOT / "build" / f"baseline-{args.baseline}"
    if not folder.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(folder), args.baseline], cwd=ROOT, check=True,
                       capture_output=True)
    old_beats = load_records(ROOT / "tests/fixtures/mitdb", ("100", "208", "232")).beats[:400]
    process, url = start_service({"models_dir": folder / "models", "max_requests_in_flight": 1024}, cwd=folder)
    bodies = [loadgen.Bodies([json.dumps({"model": "odenet", "beats": [b.round(6).tolist()]}).encode()
                              for b in old_beats])]
    new_process, new_url = start_service({"models_dir": args.models, "max_requests_in_flight": 1024})
    workers_process, workers_url = start_service({"models_dir": args.models, "max_requests_in_flight": 1024,
                                                  "workers": args.workers})
    try:
        load_table([Target(f"revision {args.baseline}: odenet, /predict JSON", url, "/predict", bodies[0]),
                    Target("this revision: odenet, /predict JSON", new_url, "/predict", bodies[0]),
                    Target(f"this revision, {args.workers} processes: odenet, /predict", workers_url, "/predict",
                           bodies[0])],
                   args.seconds, "Over HTTP: the 187-sample odenet, one beat per request, then and now")
        stop(workers_process)
        record = ROOT.parent / "shared/data/mitdb/208"
        if record.with_suffix(".dat").exists():
            print("\nA 30-minute record (MIT-BIH 208, 360 Hz) uploaded to /predict/wfdb, median of 3")
            then, old = strip_seconds(url, record)
            now, new = strip_seconds(new_url, record)
            print(f"  revision {args.baseline} ({old['model']}): {then:.2f} s, {old['summary']['n_beats']} beats")
            print(f"  this revision ({new['model']}): {now:.2f} s, {new['summary']['n_beats']} beats "
                  f"({now / then:.2f}x the time)")
    finally:
        bodies[0].remove()
        stop(process)
        stop(new_process)
        stop(workers_process)


if __name__ == "__main__":
    main()
