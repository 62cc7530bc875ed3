"""Fit and measure the signal-quality gate (service.signal.quality).

fit:     the noise score's coefficients, from 5-s windows of the MIT-BIH DS1 records (MLII, ECG; cut
         into 60 s strips) and of the NSTDB noise recordings bw, em, ma (both channels, 200 adu/mV, no
         ECG in them) and 30 min of white noise (sigma 0.3 mV), cut into 10 s and 60 s strips. The
         threshold is the highest that costs DS1 at most --target of its reference beats. DS2 is
         never read. Prints the constants for service/signal/quality.py (NEXT_TO_NOISE_THRESHOLD,
         the hysteresis, is set by hand below the scores of the em windows the threshold misses).
measure: what the gate in service/signal/quality.py costs and catches through the strip path:
         the share of reference beats inside unreadable spans on all 48 MIT-BIH records (DS1, DS2 and
         the paced records apart), and on the noise recordings cut into 10 s and 60 s strips, the share
         of strips that yield an N, S, V or F beat, and of windows left readable.
Usage: python scripts/quality-gate.py fit|measure [--mitdb DIR] [--nstdb DIR] [--target 0.002]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import wfdb

from service.signal.beats import AAMI_GROUPS
from service.signal import quality
from service.signal.strips import detect_r_peaks, strip_beats
from training.data import DS1, DS2, LEAD, PACED

ROOT = Path(__file__).resolve().parents[1]
NOISES = ("bw", "em", "ma")
NOISE_GAIN = 200.0  # adu/mV: the noise headers leave the gain at the WFDB default
WHITE_SIGMA_MV = 0.3


def clean_record(folder: Path, record: str) -> tuple[np.ndarray, float, np.ndarray]:
    """MLII in mV, its rate, and the reference beats' samples."""
    signal = wfdb.rdrecord(str(folder / record))
    annotation = wfdb.rdann(str(folder / record), "atr")
    lead = signal.sig_name.index(LEAD) if LEAD in signal.sig_name else 0
    beats = np.array([t for t, s in zip(annotation.sample, annotation.symbol) if s in AAMI_GROUPS])
    return signal.p_signal[:, lead], float(signal.fs), beats


def noise_leads(folder: Path):
    """(name, lead in mV, rate) for each channel of each noise recording, and white noise."""
    for name in NOISES:
        record = wfdb.rdrecord(str(folder / name), physical=False)
        for channel in range(record.n_sig):
            yield f"{name}{channel}", record.d_signal[:, channel] / NOISE_GAIN, float(record.fs)
    yield "white", np.random.default_rng(0).normal(0.0, WHITE_SIGMA_MV, 360 * 1800), 360.0


def strips_of(signal: np.ndarray, fs: float, seconds: float):
    """Consecutive non-overlapping strips of `seconds` (the last, shorter one dropped): (start, strip)."""
    n = int(seconds * fs)
    return [(i, signal[i:i + n]) for i in range(0, signal.size - n + 1, n)]


def features_of(signal: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    edges = quality.window_edges(signal.size, fs)
    return quality.window_features(signal, fs, detect_r_peaks(signal, fs), edges), edges


def fit(args) -> None:
    from sklearn.linear_model import LogisticRegression

    clean, beats_per_window = [], []
    for record in DS1:
        signal, fs, beats = clean_record(args.mitdb, record)
        for start, strip in strips_of(signal, fs, 60):
            features, edges = features_of(strip, fs)
            clean.append(features)
            beats_per_window.append(np.histogram(beats - start, bins=edges)[0])
        print(f"DS1 {record}", file=sys.stderr)
    noise = []
    for name, signal, fs in noise_leads(args.nstdb):
        for seconds in (10, 60):
            noise.extend(features_of(strip, fs)[0] for _, strip in strips_of(signal, fs, seconds))
        print(f"noise {name}", file=sys.stderr)
    x = np.concatenate(clean + noise)
    y = np.r_[np.zeros(sum(map(len, clean))), np.ones(sum(map(len, noise)))]
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    model = LogisticRegression(C=10.0, max_iter=5000, class_weight="balanced").fit((x - mean) / scale, y)
    quality.FEATURE_MEAN, quality.FEATURE_SCALE = mean, scale
    quality.COEFFICIENTS, quality.INTERCEPT = model.coef_[0], float(model.intercept_[0])
    scores = np.concatenate([quality.noise_scores(f) for f in clean])
    weights = np.concatenate(beats_per_window)
    order = np.argsort(-scores)
    lost = np.cumsum(weights[order]) / weights.sum()
    threshold = float(scores[order][np.searchsorted(lost, args.target, side="right")])
    caught = np.mean(np.concatenate([quality.noise_scores(f) for f in noise]) > threshold)
    print(f"DS1 beats lost to noise {100 * weights[scores > threshold].sum() / weights.sum():.3f} %, "
          f"noise windows caught {100 * caught:.2f} %", file=sys.stderr)
    fmt = lambda a: "np.array([" + ", ".join(f"{v:.6g}" for v in a) + "])"  # noqa: E731
    print(f"FEATURE_MEAN = {fmt(mean)}\nFEATURE_SCALE = {fmt(scale)}\nCOEFFICIENTS = {fmt(model.coef_[0])}\n"
          f"INTERCEPT = {model.intercept_[0]:.6g}\nNOISE_THRESHOLD = {threshold:.6g}")


def measure(args) -> None:
    groups = {"DS1": DS1, "DS2": DS2, "paced": PACED}
    totals = {}
    print("record  group  beats  lost  lost %  unreadable s  reasons")
    for group, records in groups.items():
        for record in records:
            signal, fs, beats = clean_record(args.mitdb, record)
            spans = strip_beats(signal, fs).unreadable
            lost = int(np.sum(~quality.readable(beats, fs, list(spans))))
            seconds = sum(s.end_s - s.start_s for s in spans)
            reasons = ",".join(sorted({s.reason for s in spans}))
            print(f"{record:>6}  {group:5} {beats.size:6d} {lost:5d} {100 * lost / beats.size:6.2f}  "
                  f"{seconds:12.1f}  {reasons}", flush=True)
            t = totals.setdefault(group, [0, 0])
            t[0] += beats.size
            t[1] += lost
    print("\ngroup        beats   lost  lost %")
    for group, (n, lost) in totals.items():
        print(f"{group:10} {n:7d} {lost:6d} {100 * lost / n:6.3f}")
    n, lost = (sum(t[i] for t in totals.values()) for i in (0, 1))
    print(f"{'all 48':10} {n:7d} {lost:6d} {100 * lost / n:6.3f}")
    n, lost = (sum(totals[g][i] for g in ("DS1", "DS2")) for i in (0, 1))
    print(f"{'44 unpaced':10} {n:7d} {lost:6d} {100 * lost / n:6.3f}")
    print("\nnoise strips (consecutive, non-overlapping): strips with a detected beat left unflagged")
    print("lead      10 s strips  with a beat   60 s strips  with a beat   beats left (10 s / 60 s)")
    for name, signal, fs in noise_leads(args.nstdb):
        cells = []
        for seconds in (10, 60):
            n = int(fs * seconds)
            left = [strip_beats(signal[i:i + n], fs).peaks.size for i in range(0, signal.size - n + 1, n)]
            cells.append((len(left), int(np.sum(np.array(left) > 0)), int(np.sum(left))))
        print(f"{name:8} {cells[0][0]:12d} {cells[0][1]:12d} {cells[1][0]:13d} {cells[1][1]:12d}   "
              f"{cells[0][2]} / {cells[1][2]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("fit", "measure"))
    parser.add_argument("--mitdb", type=Path, default=ROOT.parent / "shared" / "data" / "mitdb")
    parser.add_argument("--nstdb", type=Path, default=ROOT.parent / "shared" / "data" / "nstdb")
    parser.add_argument("--target", type=float, default=0.002,
                        help="share of DS1's reference beats the noise threshold may cost (fit)")
    args = parser.parse_args()
    for folder in (args.mitdb, args.nstdb):
        if not folder.is_dir():
            parser.error(f"data folder {folder} not found")
    fit(args) if args.command == "fit" else measure(args)


if __name__ == "__main__":
    main()
