"""Drive the service past its capacity (or hold it at about 80 % of it for a soak) and report what
every request got: served (200), shed (503), timed out (504) or failed (anything else, or a
socket error), the latency of each kind against the deadline, and the server's memory.

Load comes from wrk (Debian package wrk; a C load generator that does not compete with the server
for the GIL), closed loop, single-beat /predict requests of real MIT-BIH beats, each carrying
X-Request-Timeout. The server is started here, in its own process, unless --url is given.

  python benchmarks/overload.py                     # 30 s past capacity, 512 connections
  python benchmarks/overload.py --mode soak         # 10 min at ~80 % of the measured capacity
Usage: python benchmarks/overload.py [--mode overload|soak] [--seconds S] [--connections C]
                                     [--deadline 2] [--model odenet] [--url URL --pid PID]
"""

from __future__ import annotations

import argparse
import json
import os
import threading

import loadgen
from processes import ROOT, start_service, stop


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def request_bodies(model: str) -> tuple[str, loadgen.Bodies]:
    """The route and one JSON body per real beat of the bundled excerpts, in the model's format
    (context beats go to /v2, the route that takes the network input as it is)."""
    from service.models.registry import ModelRegistry
    from training.data import load_records

    kind = ModelRegistry.load(ROOT / "models").models[model].input_kind
    beats = load_records(ROOT / "tests/fixtures/mitdb", ("100", "208", "232"), input=kind).beats[:500]
    if kind == "beat":
        bodies = [json.dumps({"model": model, "beats": [b.round(5).tolist()]}).encode() for b in beats]
        return "/predict", loadgen.Bodies(bodies)
    bodies = [json.dumps({"inputs": [{"name": "beats", "shape": [1, b.size], "datatype": "FP32",
                                      "data": b.round(5).tolist()}]}).encode() for b in beats]
    return f"/v2/models/{model}/infer", loadgen.Bodies(bodies)


def report(label: str, result: loadgen.Load, deadline: float) -> None:
    statuses = dict(result.statuses)
    served, shed, timed_out = statuses.pop(200, 0), statuses.pop(503, 0), statuses.pop(504, 0)
    failed = sum(statuses.values()) + result.socket_errors
    within = result.max_ms <= 1000 * deadline + 100
    print(f"{label}: {result.requests} requests in {result.seconds:.1f} s ({result.requests / result.seconds:.0f}/s): "
          f"served {served} ({served / result.seconds:.0f}/s), shed (503) {shed}, timed out (504) {timed_out}, "
          f"failed {failed} {statuses or ''}")
    print(f"  latency p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, max {result.max_ms:.1f} ms; "
          f"every answer within the {deadline:g} s deadline + 100 ms: {'yes' if within else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("overload", "soak"), default="overload")
    parser.add_argument("--seconds", type=float, default=None, help="default: 30 (overload), 600 (soak)")
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--deadline", type=float, default=2.0, help="X-Request-Timeout of every request")
    parser.add_argument("--model", default="odenet")
    parser.add_argument("--url", default=None, help="an already running server (then --pid for its memory)")
    parser.add_argument("--pid", type=int, default=None)
    args = parser.parse_args()
    if not loadgen.available():
        raise SystemExit("wrk not found: apt-get install wrk")
    process = None
    if args.url:
        base, pid = args.url.rstrip("/"), args.pid
    else:
        process, base = start_service({"max_requests_in_flight": 128, "max_queued_beats": 1024})
        pid = process.pid
    path, bodies = request_bodies(args.model)
    try:
        print(f"{os.cpu_count()} cores; server pid {pid}; {path} ({args.model}), one beat per request")
        memory = [rss_mib(pid)] if pid else []
        sampling = threading.Event()

        def sample():
            while not sampling.wait(5):
                memory.append(rss_mib(pid))

        if pid:
            threading.Thread(target=sample, daemon=True).start()
        if args.mode == "overload":
            result = loadgen.run(base, path, bodies, args.connections, args.seconds or 30, args.deadline,
                                     count_statuses=True)
            report(f"past capacity, {args.connections} connections", result, args.deadline)
        else:
            probe = loadgen.run(base, path, bodies, 64, 15, args.deadline, count_statuses=True)
            capacity = probe.rate(200)
            connections, target = 32, 0.8 * capacity
            # wrk waits pace_ms after each answer: a connection's cycle is pace + latency, so the
            # pace is calibrated by a short run at the target rate.
            cycle_ms = 1000 * connections / target
            calibration = loadgen.run(base, path, bodies, connections, 10, args.deadline, cycle_ms, True)
            pace_ms = max(cycle_ms - calibration.p50_ms, 0.0)
            print(f"capacity {capacity:.0f} served/s (15 s, 64 connections); soak at ~{target:.0f}/s: "
                  f"{connections} connections, each waiting {pace_ms:.1f} ms after an answer "
                  f"(p50 latency {calibration.p50_ms:.1f} ms at that rate)")
            memory[:] = [rss_mib(pid)] if pid else []
            result = loadgen.run(base, path, bodies, connections, args.seconds or 600, args.deadline, pace_ms, True)
            report(f"soak, {(args.seconds or 600) / 60:.0f} min", result, args.deadline)
        sampling.set()
        if pid:
            memory.append(rss_mib(pid))
            print(f"  server memory (RSS): start {memory[0]:.1f} MiB, end {memory[-1]:.1f} MiB, "
                  f"max {max(memory):.1f} MiB ({100 * (memory[-1] / memory[0] - 1):+.1f} %)")
    finally:
        bodies.remove()
        if process:
            stop(process)


if __name__ == "__main__":
    main()
