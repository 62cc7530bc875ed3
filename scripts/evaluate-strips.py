"""R-peak detection and end-to-end strip classification against the MIT-BIH reference annotations.

1. Detection: wfdb's XQRS and GQRS as they come, and the service's detector (GQRS, Pan-Tompkins
   T-wave rejection, peaks moved onto the QRS extremum), on the MLII lead of the 44 non-paced
   records at 360 Hz. A detection matches a reference beat within 150 ms; as ANSI/AAMI EC57 says,
   ventricular flutter episodes (between '[' and ']' annotations, record 207) are not scored.
   Sensitivity and positive predictivity are summed over all beats of all records.
2. End to end: the service's strip path (detection, beats cut in each model's own format,
   classification) on the 22 DS2 records with the models trained on DS1; per-class sensitivity and
   positive predictivity, with and without record 232, where a missed reference beat counts
   against its class and an unmatched detection against its label (a beat the signal-quality gate
   left out is a missed beat), and normal beats called S, V, F, Q per 100 detected normal beats.
Usage: python scripts/evaluate-strips.py [--data ../shared/data/mitdb] [--skip-detectors]
                                         [--models-dir models] [--model NAME ...] [--gate on|off|both]
"""

import argparse
from pathlib import Path

import numpy as np
import wfdb
from wfdb import processing

from service.signal.beats import AAMI_GROUPS, CLASSES
from service.models.registry import ModelRegistry
from service.runtime.inference import Result
from service.signal.strips import detect_r_peaks, strip_beats
from training.data import DS1, DS2, LEAD
from training.evaluate import ectopic_calls_per_100_normal

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


def decide(loaded, found):
    """The model's answer for each beat of a strip-path answer (`found`) through its card's
    decision, as the service gives it (service.runtime.inference.Result: labels, confidence,
    review flags)."""
    beats = found.beats
    probabilities = (np.concatenate([loaded.predictor.predict(beats[i:i + 1024]).probabilities
                                     for i in range(0, len(beats), 1024)])
                     if len(beats) else np.zeros((0, len(CLASSES))))
    return Result.decided(loaded, beats, probabilities, None, 0.0, found.af_criteria)


def predict_labels(loaded, found) -> np.ndarray:
    """The model's label index for each beat of `found` (none for none), as the service labels them."""
    return decide(loaded, found).labels


def strip_confusion(found, predicted: np.ndarray, reference: np.ndarray, labels: np.ndarray, flutter, fs: float,
                    scored_region=None) -> np.ndarray:
    """Reference beat x predicted label of one strip-path answer (`found`, a StripBeats, and its
    labels); the last row and column stand for "no beat" (a missed reference beat, a detection
    without one). A beat the quality gate left out is a missed beat. `scored_region`, if given,
    maps sample indices to True where they are scored (reference beats and unmatched detections)."""
    confusion = np.zeros((len(CLASSES) + 1, len(CLASSES) + 1), dtype=np.int64)
    def inside(samples: np.ndarray) -> np.ndarray:
        return scored_region(samples) if scored_region else np.ones(samples.size, dtype=bool)

    matched = match(reference, found.peaks, int(WINDOW_SECONDS * fs)) if found.peaks.size else \
        np.full(reference.size, -1)
    for label, m in zip(labels[inside(reference)], matched[inside(reference)]):
        confusion[label, predicted[m] if m >= 0 else -1] += 1
    unmatched = np.setdiff1d(np.arange(found.peaks.size), matched[matched >= 0])
    unmatched = unmatched[np.isin(found.peaks[unmatched], scored(found.peaks[unmatched], flutter))]
    unmatched = unmatched[inside(found.peaks[unmatched])]
    for p in predicted[unmatched]:
        confusion[-1, p] += 1
    return confusion


def record_confusion(folder: Path, record: str, loaded, gate: bool = True) -> np.ndarray:
    """strip_confusion of one whole record through the strip path."""
    signal, fs, reference, labels, flutter = read(folder, record)
    found = strip_beats(signal, fs, loaded.input_kind, gate=gate)
    return strip_confusion(found, predict_labels(loaded, found), reference, labels, flutter, fs)


def detection_se_ppv(confusion: np.ndarray) -> tuple[float, float]:
    """Beat detection sensitivity and positive predictivity from a strip_confusion matrix."""
    tp = confusion[:-1, :-1].sum()
    return tp / max(confusion[:-1].sum(), 1), tp / max(confusion[:, :-1].sum(), 1)


def class_se_ppv(confusion: np.ndarray, name: str) -> tuple[float, float]:
    """A class's sensitivity and positive predictivity (missed beats count against its sensitivity)."""
    i = CLASSES.index(name)
    return confusion[i, i] / max(confusion[i].sum(), 1), confusion[i, i] / max(confusion[:, i].sum(), 1)


def print_confusion(title: str, confusion: np.ndarray) -> None:
    print(f"\n{title} (rows: reference, columns: predicted; '-' = no beat)")
    print("      " + " ".join(f"{c:>7}" for c in (*CLASSES, "-")))
    for i, row in enumerate(confusion):
        print(f"{(*CLASSES, '-')[i]:>5} " + " ".join(f"{v:7d}" for v in row))
    print("class   Se %    +P %")
    for c in CLASSES[:4]:
        se, ppv = class_se_ppv(confusion, c)
        print(f"{c:>5} {100 * se:6.2f} {100 * ppv:7.2f}")
    se, ppv = detection_se_ppv(confusion)
    print(f"detection Se {100 * se:.2f} %  +P {100 * ppv:.2f} %")
    calls = ectopic_calls_per_100_normal(confusion)
    print("ectopic calls per 100 detected normal beats: "
          + "  ".join(f"{c} {calls[c]:.2f}" for c in ("S", "V", "F", "Q", "all")))


def end_to_end(folder: Path, models: Path, names: list[str], gates=(True,)) -> None:
    registry = ModelRegistry.load(models)
    loaded = [registry.models[name] for name in names]
    per_record = {}  # (model, gate) -> record -> confusion; each record's strip path runs once per input kind
    for record in DS2:
        signal, fs, reference, labels, flutter = read(folder, record)
        for gate in gates:
            for kind in sorted({m.input_kind for m in loaded}):
                found = strip_beats(signal, fs, kind, gate=gate)
                for model in (m for m in loaded if m.input_kind == kind):
                    per_record.setdefault((model.name, gate), {})[record] = strip_confusion(
                        found, predict_labels(model, found), reference, labels, flutter, fs)
    for (name, gate), confusions in per_record.items():
        title = f"{name} on DS2 through the strip path, quality gate {'on' if gate else 'off'}"
        print_confusion(title, sum(confusions.values()))
        print_confusion(title.replace("DS2", "DS2 without 232"), sum(c for r, c in confusions.items() if r != "232"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mitdb")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--model", nargs="+", default=["context-odenet-ds1", "context-resnet-ds1"],
                        help="DS1-trained models to run end to end")
    parser.add_argument("--skip-detectors", action="store_true")
    parser.add_argument("--gate", choices=("on", "off", "both"), default="on",
                        help="the signal-quality gate in the end-to-end strip path (default on, as served)")
    args = parser.parse_args()
    if not args.skip_detectors:
        detection(args.data, tuple(sorted(DS1 + DS2)))
    gates = {"on": (True,), "off": (False,), "both": (False, True)}[args.gate]
    end_to_end(args.data, args.models_dir, args.model, gates)


if __name__ == "__main__":
    main()
