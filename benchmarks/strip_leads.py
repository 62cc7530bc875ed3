"""What a second lead costs /predict/strip: one 30-minute record, one lead or two, over HTTP.

A whole MIT-BIH record is posted to /predict/strip of a real server (uvicorn, started here by
`python -m service`, its own process) three ways: (a) MLII as `signal`, (b) both leads as
`leads` (MLII analysed, the other validated and dropped) and (c) both leads as `leads` with
`lead` choosing the second.

The shipped models read one lead, so the second lead of (b) costs only its parsing and validation;
the claim checked is that a two-lead record stays within 2x of the one-lead time. The three ways
take turns, the order rotated each round, so the machine's other load falls on each alike; each
request is timed on its own (wall time, the client in this process, bodies formatted before the
run). Prints the median and spread of each way, the ratios of the medians against (a), the strip
worker's peak memory growth per request (VmHWM of the worker from /proc, reset before each
request, less its RSS before it), and whether (a) and (b) answer the same beats and labels.

Usage: python benchmarks/strip_leads.py [--record 208] [--rounds 5] [--data ../shared/data/mitdb]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import httpx
import numpy as np
import wfdb

from processes import ROOT, start_service, stop

CLAIM = 2.0  # (b) / (a) at most this


def strip_worker(server: int) -> int | None:
    """The pid of the server's strip worker (`python -m service.runtime.strip_worker`), if one runs."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                command = open(f"/proc/{entry}/cmdline", "rb").read()
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == server and b"service.runtime.strip_worker" in command:
                found.append(int(entry))
    return min(found) if found else None


def memory_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def bodies(record: Path) -> tuple[dict[str, bytes], list[str]]:
    """The three request bodies of the record, in mV rounded to 3 decimals as a device would send."""
    data = wfdb.rdrecord(str(record), physical=True)
    names = [str(n) for n in data.sig_name]
    signals = [data.p_signal[:, i].round(3).tolist() for i in range(len(names))]
    first = names.index("MLII") if "MLII" in names else 0
    second = next(i for i in range(len(names)) if i != first)
    leads = [{"name": names[i], "signal": signals[i]} for i in (first, second)]
    fs = float(data.fs)
    return {
        f"(a) {names[first]} as `signal`": json.dumps({"sampling_rate": fs, "signal": signals[first]}).encode(),
        f"(b) {names[first]} + {names[second]} as `leads`": json.dumps({"sampling_rate": fs, "leads": leads}).encode(),
        f"(c) `leads`, `lead` = {names[second]}": json.dumps({"sampling_rate": fs, "leads": leads,
                                                              "lead": names[second]}).encode(),
    }, [names[first], names[second]]


def post(client: httpx.Client, body: bytes, server: int, workers: set) -> tuple[float, float | None, dict]:
    """Seconds of one /predict/strip request, the strip worker's peak growth (MiB) and the answer;
    adds the worker's pid to `workers`."""
    worker = strip_worker(server)
    before = None
    if worker:
        workers.add(worker)
        try:
            before = memory_mib(worker, "VmRSS")
            with open(f"/proc/{worker}/clear_refs", "w") as refs:
                refs.write("5")  # VmHWM from now on: this request's peak
        except (OSError, StopIteration):  # gone, or going (a zombie has no VmRSS)
            worker = None
    started = time.perf_counter()
    response = client.post("/predict/strip", content=body, headers={"content-type": "application/json"})
    seconds = time.perf_counter() - started
    response.raise_for_status()
    growth = None
    if worker:
        try:
            growth = memory_mib(worker, "VmHWM") - before
        except (OSError, StopIteration):  # replaced after the strip (above ECG_STRIP_WORKER_RSS_MIB)
            pass
    return seconds, growth, response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", default="208", help="MIT-BIH record (two leads, 30 min)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/mitdb",
                        help="folder of the MIT-BIH records")
    parser.add_argument("--rounds", type=int, default=5, help="requests of each way, after one warm-up each")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    args = parser.parse_args()
    record = args.data / args.record
    if not record.with_suffix(".dat").exists():
        raise SystemExit(f"{record}.dat not found: --data names the folder of the MIT-BIH records")
    ways, names = bodies(record)
    labels = list(ways)
    load = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load[0]:.2f} at the start; MIT-BIH {args.record}, leads "
          f"{' and '.join(names)}; {args.rounds} rounds, the order rotated each round, after one warm-up each")
    for label in labels:
        print(f"  {label:36} body {len(ways[label]) / 2 ** 20:6.1f} MiB")

    process, url = start_service({"models_dir": args.models, "request_timeout_s": 300})
    times = {label: [] for label in labels}
    growth = {label: [] for label in labels}
    answers, workers = {}, set()
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            for label in labels:
                answers[label] = post(client, ways[label], process.pid, workers)[2]
            for round_ in range(args.rounds):
                shift = round_ % len(labels)
                for label in labels[shift:] + labels[:shift]:
                    seconds, grown, answers[label] = post(client, ways[label], process.pid, workers)
                    times[label].append(seconds)
                    if grown is not None:
                        growth[label].append(grown)
    finally:
        stop(process)
    load = os.getloadavg()

    first = np.median(times[labels[0]])
    print(f"\n/predict/strip, a whole record, wall time per request (s); load average {load[0]:.2f} at the end")
    print(f"{'way':36} {'median':>7} {'min':>7} {'max':>7} {'vs (a)':>7} {'worker peak +MiB':>17} {'beats':>6}")
    for label in labels:
        t = np.array(times[label])
        peak = f"{np.median(growth[label]):7.0f} (max {max(growth[label]):.0f})" if growth[label] else "-"
        print(f"{label:36} {np.median(t):7.2f} {t.min():7.2f} {t.max():7.2f} {np.median(t) / first:6.2f}x "
              f"{peak:>17} {answers[label]['summary']['n_beats']:6d}")

    def beats(answer: dict) -> list[tuple[int, str]]:
        return [(b["sample"], b["label"]) for b in answer["beats"]]

    a, b, c = (answers[label] for label in labels)
    same = beats(a) == beats(b)
    ratio = np.median(times[labels[1]]) / first
    print(f"\n(a) and (b) answer identical beats and labels: {'yes' if same else 'NO'} ({len(a['beats'])} and "
          f"{len(b['beats'])} beats; counts {a['summary']['counts']}); lead analysed (b) "
          f"{b['summary']['lead']}, (c) {c['summary']['lead']}; leads received {b['summary']['leads_received']}")
    print(f"strip worker processes seen: {len(workers)} (one more each time a worker still above "
          f"ECG_STRIP_WORKER_RSS_MIB after a strip was replaced; a request sent while its replacement was "
          f"starting has no memory figure)")
    print(f"(b) / (a) = {ratio:.2f}x: {'within' if ratio <= CLAIM else 'NOT within'} {CLAIM:g}x of the one-lead time")


if __name__ == "__main__":
    main()
