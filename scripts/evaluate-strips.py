"""R-peak detection and end-to-end strip classification against the MIT-BIH reference annotations.

1. Detection: wfdb's XQRS and GQRS as they come, and the service's detector (GQRS, Pan-Tompkins
   T-wave rejection, peaks moved onto the QRS extremum), on the MLII lead of the 44 non-paced
   records at 360 Hz. A detection matches a reference beat within 150 ms; as ANSI/AAMI EC57 says,
   ventricular flutter episodes (between '[' and ']' annotations, record 207) are not scored.
   Sensitivity and positive predictivity are summed over all beats of all records.
2. End to end: the service's strip path (detection, beats cut in each model's own format,
   classification) on the 22 DS2 records with the models trained on DS1; per-class sensitivity and
   positive predictivity, with and without record 232, where a missed reference beat counts
   against its class and an unmatched detection against its label.
Usage: python scripts/evaluate-strips.py [--data ../shared/data/mitdb] [--skip-detectors]
                                         [--models-dir models] [--model NAME ...]
"""

import argparse
from pathlib import Path

import numpy as np
import wfdb
from wfdb import processing

from service.signal.beats import AAMI_GROUPS, CLASSES
from service.models.registry import ModelRegistry
from service.signal.strips import detect_r_peaks, strip_beats
from training.data import DS1, DS2, LEAD

WINDOW_SECONDS = 0.15
ROOT = Path(__file__).resolve().parents[1]


def read(folder: Path, record: str):
    signal = wfdb.rdrecord(str(folder / record))
    annotation = wfdb.rdann(str(folder / record), "atr")
    lead = signal.sig_name.index(LEAD) if LEAD in signal.sig_name else 0
    keep = [i for i, s in enumerate(annotation.symbol) if s in AAMI_GROUPS]
    labels = np.array([CLASSES.index(AAMI_GROUPS[annotation.symbol[i]]) for i in keep])
    onsets = [t for t, s in zip(annotation.sample, annotation.symbol) if s == "["]
    ends = [t for t, s in zip(annotation.sample, annotation.symbol) if s == "]"]
    flutter = list(zip(onsets, ends))
    return signal.p_signal[:, lead], signal.fs, annotation.sample[keep], labels, flutter


def scored(peaks: np.ndarray, flutter) -> np.ndarray:
    """Detections outside ventricular flutter episodes, which EC57 leaves unscored."""
    inside = np.zeros(peaks.size, dtype=bool)
    for start, end in flutter:
        inside |= (peaks >= start) & (peaks <= end)
    return peaks[~inside]


def detectors(signal, fs):
    return {"xqrs": np.asarray(processing.xqrs_detect(sig=signal, fs=fs, verbose=False)),
            "gqrs": np.asarray(processing.gqrs_detect(sig=signal, fs=fs)),
            "service": detect_r_peaks(signal, fs)}


def match(reference: np.ndarray, detected: np.ndarray, window: int) -> np.ndarray:
    """For each reference beat, the index of its matching detection or -1 (each detection used once)."""
    comparison = processing.compare_annotations(reference, detected, window)
    comparison.compare()
    return np.asarray(comparison.matching_sample_nums)


def detection(folder: Path, records) -> None:
    totals = {}
    print("Se % / +P % per record")
    print(f"{'record':>6} " + " ".join(f"{n:>15}" for n in ("xqrs", "gqrs", "service")))
    for record in records:
        signal, fs, reference, _, flutter = read(folder, record)
        cells = []
        for name, peaks in detectors(signal, fs).items():
            peaks = scored(peaks, flutter)
            matched = match(reference, peaks, int(WINDOW_SECONDS * fs))
            tp = int(np.sum(matched >= 0))
            t = totals.setdefault(name, [0, 0, 0])
            t[0] += tp
            t[1] += reference.size - tp
            t[2] += peaks.size - tp
            cells.append(f"{100 * tp / reference.size:6.2f} {100 * tp / max(peaks.size, 1):6.2f}")
        print(f"{record:>6} " + " ".join(f"{c:>15}" for c in cells))
    print("\ndetector        TP      FN      FP   Se %    +P %")
    for name, (tp, fn, fp) in totals.items():
        print(f"{name:13} {tp:6d} {fn:7d} {fp:7d} {100 * tp / (tp + fn):6.2f} {100 * tp / (tp + fp):7.2f}")


def record_confusion(folder: Path, record: str, loaded) -> np.ndarray:
    """Reference beat x predicted label for one record through the strip path; the last row and
    column stand for "no beat" (a missed reference beat, a detection without one)."""
    confusion = np.zeros((len(CLASSES) + 1, len(CLASSES) + 1), dtype=np.int64)
    signal, fs, reference, labels, flutter = read(folder, record)
    found = strip_beats(signal, fs, loaded.input_kind)
    predicted = np.concatenate([loaded.predictor.predict(found.beats[i:i + 1024]).probabilities.argmax(1)
                                for i in range(0, len(found.beats), 1024)])
    matched = match(reference, found.peaks, int(WINDOW_SECONDS * fs))
    for label, m in zip(labels, matched):
        confusion[label, predicted[m] if m >= 0 else -1] += 1
    unmatched = np.setdiff1d(np.arange(found.peaks.size), matched[matched >= 0])
    unmatched = unmatched[np.isin(found.peaks[unmatched], scored(found.peaks[unmatched], flutter))]
    for p in predicted[unmatched]:
        confusion[-1, p] += 1
    return confusion


def print_confusion(title: str, confusion: np.ndarray) -> None:
    print(f"\n{title} (rows: reference, columns: predicted; '-' = no beat)")
    print("      " + " ".join(f"{c:>7}" for c in (*CLASSES, "-")))
    for i, row in enumerate(confusion):
        print(f"{(*CLASSES, '-')[i]:>5} " + " ".join(f"{v:7d}" for v in row))
    print("class   Se %    +P %")
    for i, c in enumerate(CLASSES[:4]):
        se = confusion[i, i] / max(confusion[i].sum(), 1)
        ppv = confusion[i, i] / max(confusion[:, i].sum(), 1)
        print(f"{c:>5} {100 * se:6.2f} {100 * ppv:7.2f}")


def end_to_end(folder: Path, models: Path, names: list[str]) -> None:
    registry = ModelRegistry.load(models)
    for name in names:
        loaded = registry.models[name]
        per_record = {record: record_confusion(folder, record, loaded) for record in DS2}
        print_confusion(f"{name} on DS2 through the strip path", sum(per_record.values()))
        print_confusion(f"{name} on DS2 without 232 through the strip path",
                        sum(c for r, c in per_record.items() if r != "232"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mitdb")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--model", nargs="+", default=["context-odenet-ds1", "context-resnet-ds1"],
                        help="DS1-trained models to run end to end")
    parser.add_argument("--skip-detectors", action="store_true")
    args = parser.parse_args()
    if not args.skip_detectors:
        detection(args.data, tuple(sorted(DS1 + DS2)))
    end_to_end(args.data, args.models_dir, args.model)


if __name__ == "__main__":
    main()
