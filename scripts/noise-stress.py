"""Noise stress test (ANSI/AAMI EC57 style): beat detection and S, V classification end to end through
the strip path on the MIT-BIH Noise Stress Test records 118e24..118e_6 and 119e24..119e_6, per SNR,
with and without the signal-quality gate.

The records are MIT-BIH records 118 and 119 with electrode-motion noise added at the named SNR during
2-minute segments that alternate with clean ones after the first 5 minutes ([5, 7), [9, 11), ... min);
their .atr files are the original reference annotations. Two scopes are scored: the noisy segments
only, and the whole record. With the gate, a beat inside an unreadable span is a missed beat (it gets
no label), and a detection inside one is not a false beat. Scoring is scripts/evaluate-strips.py's
(a detection matches a reference beat within 150 ms; a missed reference beat counts against its
class's sensitivity, an unmatched detection against its label's positive predictivity).

Records 118 and 119 are DS1 records, and the models scored here were trained on them (context-odenet
on all 44 records, context-odenet-ds1 on DS1): these are robustness figures on training patients,
never evidence about new patients.
Usage: python scripts/noise-stress.py [--nstdb ../shared/data/nstdb] [--models-dir models]
                                      [--model context-odenet context-odenet-ds1]
"""

import argparse
import importlib.util
from pathlib import Path

import numpy as np

from service.models.registry import ModelRegistry
from service.signal.strips import strip_beats

ROOT = Path(__file__).resolve().parents[1]
SNRS = ("24", "18", "12", "06", "00", "_6")
PATIENTS = ("118", "119")
CLEAN_START_S, NOISY_S, PERIOD_S = 300.0, 120.0, 240.0  # noise in [300 + 240 k, 420 + 240 k) s


def scoring():
    """scripts/evaluate-strips.py, whose matching and scoring this test reuses."""
    spec = importlib.util.spec_from_file_location("evaluate_strips", ROOT / "scripts" / "evaluate-strips.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def noisy(samples: np.ndarray, fs: float) -> np.ndarray:
    """True for samples inside a noisy segment."""
    seconds = np.asarray(samples) / fs - CLEAN_START_S
    return (seconds >= 0) & (np.mod(seconds, PERIOD_S) < NOISY_S)


def snr_label(snr: str) -> str:
    return f"{'-' if snr.startswith('_') else ''}{int(snr.strip('_'))} dB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nstdb", type=Path, default=ROOT.parent / "shared" / "data" / "nstdb")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--model", nargs="+", default=["context-odenet", "context-odenet-ds1"])
    args = parser.parse_args()
    if not (args.nstdb / "118e24.dat").is_file():
        parser.error(f"noise stress test records not found in {args.nstdb}")
    score = scoring()
    registry = ModelRegistry.load(args.models_dir)
    loaded = {name: registry.models[name] for name in args.model}
    kinds = {m.input_kind for m in loaded.values()}
    # confusion[(model, gate, scope, snr)], summed over the two patients
    confusion, unreadable_share = {}, {}
    review = {}  # (model, gate, snr) -> beats flagged in noisy segments, beats there, flagged elsewhere, beats there
    for snr in SNRS:
        for patient in PATIENTS:
            record = f"{patient}e{snr}"
            signal, fs, reference, labels, flutter = score.read(args.nstdb, record)
            in_noise = lambda samples: noisy(samples, fs)  # noqa: E731
            for gate in (False, True):
                for kind in kinds:
                    found = strip_beats(signal, fs, kind, gate=gate)
                    if gate and kind == min(kinds):  # the spans do not depend on the input kind
                        unread = np.zeros(signal.size, dtype=bool)
                        for span in found.unreadable:
                            unread[int(span.start_s * fs):int(span.end_s * fs)] = True
                        in_segments = noisy(np.arange(signal.size), fs)
                        share = unreadable_share.setdefault(snr, np.zeros(4))
                        share += [np.sum(unread & in_segments), in_segments.sum(),
                                  np.sum(unread & ~in_segments), np.sum(~in_segments)]
                    for name, model in loaded.items():
                        if model.input_kind != kind:
                            continue
                        decided = score.decide(model, found)
                        predicted = decided.labels
                        if decided.review is not None:
                            in_segment = noisy(found.peaks, fs)
                            review.setdefault((name, gate, snr), np.zeros(4))[:] += [
                                np.sum(decided.review & in_segment), in_segment.sum(),
                                np.sum(decided.review & ~in_segment), np.sum(~in_segment)]
                        for scope, region in (("noisy segments", in_noise), ("whole record", None)):
                            c = score.strip_confusion(found, predicted, reference, labels, flutter, fs, region)
                            key = (name, gate, scope, snr)
                            confusion[key] = confusion.get(key, 0) + c
            print(f"scored {record}", flush=True)
    print("\nShare of time the gate judged unreadable (both patients): noisy segments / clean segments")
    for snr, (noisy_s, noisy_total, clean_s, clean_total) in unreadable_share.items():
        print(f"  {snr_label(snr):>6}: {100 * noisy_s / noisy_total:5.1f} % / {100 * clean_s / clean_total:5.1f} %")
    for name in loaded:
        for scope in ("noisy segments", "whole record"):
            print(f"\n{name}, {scope} of 118eNN + 119eNN (training patients), Se / +P %")
            print("| SNR | gate | beats | detection Se / +P | S Se / +P | V Se / +P |")
            print("|---:|---|---:|---:|---:|---:|")
            for snr in SNRS:
                for gate in (False, True):
                    c = confusion[(name, gate, scope, snr)]
                    cells = [score.detection_se_ppv(c), score.class_se_ppv(c, "S"), score.class_se_ppv(c, "V")]
                    print(f"| {snr_label(snr)} | {'on' if gate else 'off'} | {int(c[:-1].sum())} | "
                          + " | ".join(f"{100 * se:.1f} / {100 * ppv:.1f}" for se, ppv in cells) + " |")
        if any(key[0] == name for key in review):
            print(f"\n{name}, beats flagged for review (of the beats labelled), noisy segments / clean segments")
            print("| SNR | gate | noisy segments | clean segments |")
            print("|---:|---|---:|---:|")
            for snr in SNRS:
                for gate in (False, True):
                    flagged, total, clean_flagged, clean_total = review[(name, gate, snr)]
                    print(f"| {snr_label(snr)} | {'on' if gate else 'off'} | {100 * flagged / max(total, 1):.1f} % "
                          f"({int(flagged)} of {int(total)}) | {100 * clean_flagged / max(clean_total, 1):.1f} % |")


if __name__ == "__main__":
    main()
