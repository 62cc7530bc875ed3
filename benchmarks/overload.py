"""Drive the service past its capacity (or hold it at about 80 % of it for a soak) and report what
every request got: served (200), shed (503), timed out (504) or failed (anything else, or a
socket error), the latency of each kind against the deadline, and the server's memory.

Load comes from wrk (Debian package wrk; a C load generator that does not compete with the server
for the GIL), closed loop, single-beat /predict requests of real MIT-BIH beats, each carrying
X-Request-Timeout. The server is started here, in its own process, unless --url is given.

Two more modes: `slow` (an asyncio client here, each request timed on its own, so "late", an
answer after the deadline + 100 ms, is exact) holds --connections connections trickling /predict
bodies at 1 byte/s while one well-behaved client sends /predict with its deadline; `mixed` runs
--connections connections at once (one wrk per kind), half sending single beats, a quarter
256-beat batches at a tight tolerance (rtol = atol = 1e-6) and a quarter 2-minute strips, all with
the --deadline, and says per kind whether 99 % of the answers came within the deadline + 100 ms.
Both report served (200) / shed (503) / timed out (504) / failed (anything else, or a socket
error), and the server's memory at start and end.

  python benchmarks/overload.py                     # 30 s past capacity, 512 connections
  python benchmarks/overload.py --mode soak         # 10 min at ~80 % of the measured capacity
  python benchmarks/overload.py --mode slow --connections 300 --seconds 45
  python benchmarks/overload.py --mode mixed --connections 64 --deadline 0.001 --seconds 30
Usage: python benchmarks/overload.py [--mode overload|soak|slow|mixed] [--seconds S] [--connections C]
                                     [--deadline 2] [--model odenet] [--url URL --pid PID]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from collections import Counter

import httpx
import numpy as np

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


class Outcomes:
    """What each request of one kind got, and how many came later than the deadline + 100 ms."""

    def __init__(self, deadline: float):
        self.deadline, self.statuses, self.late, self.latencies = deadline, Counter(), 0, []

    def add(self, status: int, seconds: float) -> None:
        self.statuses[status] += 1
        self.latencies.append(seconds)
        self.late += seconds > self.deadline + 0.1

    def line(self, label: str) -> str:
        statuses = Counter(self.statuses)
        served, shed, timed_out = statuses.pop(200, 0), statuses.pop(503, 0), statuses.pop(504, 0)
        total = sum(self.statuses.values())
        late = f"late {self.late} ({100 * self.late / max(total, 1):.2f} %)"
        worst = f"max {1000 * max(self.latencies):.0f} ms" if self.latencies else ""
        return (f"  {label}: {total} answers: served {served}, shed {shed}, timed out {timed_out}, failed "
                f"{sum(statuses.values())} {dict(statuses) or ''}; {late}; p99 "
                f"{1000 * np.percentile(self.latencies, 99) if self.latencies else 0:.0f} ms, {worst}")


async def closed_loop(client: httpx.AsyncClient, path: str, bodies: list[bytes], deadline: float, until: float,
                      outcomes: Outcomes) -> None:
    """One client: a request, its answer, the next request, until `until`."""
    headers = {"content-type": "application/json", "x-request-timeout": f"{deadline:g}"}
    i = 0
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            response = await client.post(path, content=bodies[i % len(bodies)], headers=headers)
            status = response.status_code
        except httpx.HTTPError:
            status = 0  # a socket error: counted as failed
        outcomes.add(status, time.monotonic() - started)
        i += 1


def mixed_bodies(model: str) -> dict[str, tuple[str, list[bytes], float]]:
    """Per kind: route, bodies and share of the clients."""
    from service.models.registry import ModelRegistry
    from training.data import load_records

    context = ModelRegistry.load(ROOT / "models").models[model].input_kind == "context"
    beats = load_records(ROOT / "tests/fixtures/mitdb", ("100", "208", "232"), input="beat").beats
    single = [json.dumps({"model": "odenet", "beats": [b.round(5).tolist()]}).encode() for b in beats[:200]]
    batch = [json.dumps({"model": "odenet", "beats": beats[i:i + 256].round(5).tolist(),
                         "solver": {"rtol": 1e-6, "atol": 1e-6}}).encode() for i in (0, 100, 200)]
    import wfdb

    strips = []
    for name in ("100", "208", "232"):
        record = wfdb.rdrecord(str(ROOT / "tests/fixtures/mitdb" / name), physical=True)
        strips.append(json.dumps({"sampling_rate": record.fs, "signal": record.p_signal[:, 0].round(3).tolist(),
                                  **({} if context else {"model": model})}).encode())
    return {"single beats": ("/predict", single, 0.5), "256-beat tight batches": ("/predict", batch, 0.25),
            "strips": ("/predict/strip", strips, 0.25)}


def mixed(base: str, model: str, connections: int, seconds: float, deadline: float) -> None:
    """One wrk per kind of request, all at once (wrk's client costs the two cores little; the
    asyncio client of the slow mode cannot keep 64 connections busy here)."""
    kinds = mixed_bodies(model)
    results, threads, files = {}, [], []
    for kind, (path, bodies, share) in kinds.items():
        load = loadgen.Bodies(bodies)
        files.append(load)
        count = max(1, round(share * connections))
        threads.append(threading.Thread(target=lambda k=kind, p=path, b=load, c=count: results.update(
            {k: (c, loadgen.run(base, p, b, c, seconds, deadline, count_statuses=True))})))
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for load in files:
            load.remove()
    print(f"mixed load, {sum(c for c, _ in results.values())} connections for {seconds:g} s, "
          f"X-Request-Timeout {deadline:g} s (wrk, closed loop):")
    other = 0
    for kind, (count, result) in results.items():
        statuses = dict(result.statuses)
        served, shed, timed_out = statuses.pop(200, 0), statuses.pop(503, 0), statuses.pop(504, 0)
        other += sum(n for status, n in statuses.items() if status >= 500) + result.socket_errors
        within = result.p99_ms <= 1000 * deadline + 100
        print(f"  {kind} ({count} connections): {result.requests} answers: served {served}, shed {shed}, timed out "
              f"{timed_out}, failed {sum(statuses.values()) + result.socket_errors} {statuses or ''}; p50 "
              f"{result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, max {result.max_ms:.1f} ms; 99 % within the "
              f"deadline + 100 ms: {'yes' if within else 'NO'}")
    print(f"  5xx other than 503/504 (or socket errors): {other}")


async def trickler(host: str, port: int, until: float, closed_after: list) -> None:
    """A /predict whose 1,000-byte body comes at 1 byte per second; notes when the server closed it."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        closed_after.append(("refused", 0.0))
        return
    writer.write(b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n")
    answer = b""
    try:
        while time.monotonic() < until:
            writer.write(b" ")
            await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(4096), 1.0)
            except TimeoutError:
                continue
            if not chunk:
                break
            answer += chunk
        else:
            closed_after.append(("open", time.monotonic() - started))
            return
    except OSError:
        pass
    finally:
        writer.close()
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"
    closed_after.append((status, time.monotonic() - started))


async def slow(base: str, connections: int, seconds: float, deadline: float) -> None:
    from training.data import load_records

    beats = load_records(ROOT / "tests/fixtures/mitdb", ("100",), input="beat").beats[:100]
    bodies = [json.dumps({"beats": [b.round(5).tolist()]}).encode() for b in beats]
    host, port = base.removeprefix("http://").rsplit(":", 1)
    until = time.monotonic() + seconds
    closed_after: list = []
    tricklers = [asyncio.create_task(trickler(host, int(port), until, closed_after)) for _ in range(connections)]
    await asyncio.sleep(2.0)  # every trickler connected and sending
    outcomes = Outcomes(deadline)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await closed_loop(client, "/predict", bodies, deadline, until - 1.0, outcomes)
    await asyncio.gather(*tricklers)
    print(f"slow clients: {connections} connections trickling /predict bodies at 1 byte/s for {seconds:g} s, "
          f"and one client sending single beats with X-Request-Timeout {deadline:g} s:")
    print(outcomes.line("the well-behaved client"))
    ends = Counter(status for status, _ in closed_after)
    times = [t for status, t in closed_after if status != "open"]
    print(f"  trickling connections: {dict(ends)}; closed by the server after "
          f"{min(times, default=0):.1f} to {max(times, default=0):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("overload", "soak", "slow", "mixed"), default="overload")
    parser.add_argument("--seconds", type=float, default=None,
                        help="default: 30 (overload, mixed), 600 (soak), 45 (slow)")
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--deadline", type=float, default=2.0, help="X-Request-Timeout of every request")
    parser.add_argument("--model", default="odenet")
    parser.add_argument("--url", default=None, help="an already running server (then --pid for its memory)")
    parser.add_argument("--pid", type=int, default=None)
    args = parser.parse_args()
    if not loadgen.available() and args.mode in ("overload", "soak"):
        raise SystemExit("wrk not found: apt-get install wrk")
    process = None
    if args.url:
        base, pid = args.url.rstrip("/"), args.pid
    else:
        settings = {} if args.mode in ("slow", "mixed") else {"max_requests_in_flight": 128, "max_queued_beats": 1024}
        process, base = start_service(settings)
        pid = process.pid
    if args.mode in ("slow", "mixed"):
        try:
            start = rss_mib(pid) if pid else None
            if args.mode == "slow":
                asyncio.run(slow(base, args.connections, args.seconds or 45, args.deadline))
            else:
                mixed(base, args.model, args.connections, args.seconds or 30, args.deadline)
            if pid:
                print(f"  server memory (RSS): start {start:.1f} MiB, end {rss_mib(pid):.1f} MiB")
        finally:
            if process:
                stop(process)
        return
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
