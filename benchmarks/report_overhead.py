"""What the rhythm report adds to the strip path, for a 30-minute record.

The strip path: POST /predict/strip of a whole MIT-BIH record (30 min 6 s at 360 Hz, MLII) through
the real app in this process (strip worker, R-peaks, context beats, the model, the answer). The
report: service.report.rhythm_report on that answer's beats, validated as the RhythmReport the
answer carries and serialised as FastAPI does it, i.e. everything strip_response does for it.
Both are timed over several rounds; the medians and their ratio are printed.

Usage: python benchmarks/report_overhead.py [--record 200] [--rounds 5] [--model context-odenet]
The record comes from MITDB_DIR (default ../shared/data/mitdb); without it the bundled 2-minute
fixtures are tiled to 30 minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))  # the checkout this is run from

import numpy as np  # noqa: E402
import wfdb  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from service.app import create_app  # noqa: E402
from service.report import rhythm_report  # noqa: E402
from service.schemas import RhythmReport  # noqa: E402
from service.settings import Settings  # noqa: E402


def thirty_minutes(record: str) -> tuple[np.ndarray, float, str]:
    folder = Path(os.environ.get("MITDB_DIR", ROOT.parent / "shared" / "data" / "mitdb"))
    if (folder / f"{record}.hea").is_file():
        data = wfdb.rdrecord(str(folder / record), physical=True, channel_names=["MLII"])
        return data.p_signal[:, 0], float(data.fs), f"MIT-BIH {record}"
    parts = [wfdb.rdrecord(str(ROOT / "tests/fixtures/mitdb" / r), physical=True).p_signal[:, 0]
             for r in ("100", "208", "232")]
    signal = np.tile(np.concatenate(parts), 5)  # 3 x 2 min x 5 = 30 min
    return signal, 360.0, "fixtures 100, 208, 232 tiled"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", default="200")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default="context-odenet")
    args = parser.parse_args()
    signal, fs, source = thirty_minutes(args.record)
    body = {"model": args.model, "sampling_rate": fs, "signal": signal.tolist()}
    strip_s, report_s = [], []
    with TestClient(create_app(Settings(models_dir=ROOT / "models"))) as client:
        for _ in range(args.rounds + 1):  # the first round warms up
            started = time.perf_counter()
            answer = client.post("/predict/strip", json=body, headers={"X-Request-Timeout": "300"})
            strip_s.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
            beats = answer.json()["beats"]
            times, labels = [b["time_s"] for b in beats], [b["label"] for b in beats]
            started = time.perf_counter()
            RhythmReport.model_validate(rhythm_report(np.asarray(times), labels, signal.size / fs)).model_dump_json()
            report_s.append(time.perf_counter() - started)
    strip, report = statistics.median(strip_s[1:]), statistics.median(report_s[1:])
    print(f"{source}: {signal.size / fs / 60:.1f} min, {len(beats)} beats, model {args.model}, "
          f"median of {args.rounds} rounds")
    print(f"strip path (POST /predict/strip, report included): {1000 * strip:8.1f} ms")
    print(f"rhythm report (compute, validate, serialise):     {1000 * report:8.2f} ms")
    print(f"report share of the strip path: {100 * report / strip:.2f} % "
          f"(of the path without it: {100 * report / (strip - report):.2f} %)")


if __name__ == "__main__":
    main()
