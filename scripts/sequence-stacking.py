"""A sequence stage measured by stacking, inside DS1 only: does reading the beats around each beat
(their held-out class probabilities and RR features, `--before` beats back and `--after` beats
ahead: a bounded look-ahead) beat the per-beat context model?

The inputs are the pooled held-out probabilities of an `ecg-crossval` run (each beat scored by the
fold model that never saw its patient), so a second stage trained on some folds' beats and scored on
the remaining fold's is an honest patient-grouped estimate. Same folds, same score (mean F1 of S and
V) as ecg-crossval. Prints the base run's figures and the stage's.
Usage: python scripts/sequence-stacking.py RUN.json [--before 4] [--after 2] [--stage tree|logistic]
"""

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service.signal.context import WINDOW_LENGTH
from training.crossval import folds, selection_score
from training.data import load_split
from training.evaluate import DEFAULT_DATA, classification_metrics


def neighbours(features: np.ndarray, records: np.ndarray, before: int, after: int) -> np.ndarray:
    """Each beat's features beside those of the beats `before` back to `after` ahead in its own
    record (zeros and a 0 flag past a record's ends)."""
    columns = []
    index = np.arange(len(features))
    for offset in range(-before, after + 1):
        other = index + offset
        valid = (other >= 0) & (other < len(features))
        valid[valid] &= records[other[valid]] == records[valid]
        shifted = np.zeros_like(features)
        shifted[valid] = features[other[valid]]
        columns += [shifted, valid[:, None].astype(features.dtype)]
    return np.hstack(columns)


def line(name: str, metrics: dict) -> str:
    per = metrics["per_class"]
    cells = " ".join(f"{c} {100 * per[c]['recall']:5.1f}/{100 * per[c]['precision']:5.1f}" for c in "NSVF")
    return (f"{name:28} score {selection_score(metrics):.4f}  Se/+P {cells}  ectopic calls per 100 N "
            f"{metrics['ectopic_calls_per_100_normal']['all']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="an ecg-crossval --out result (held-out probabilities)")
    parser.add_argument("--before", type=int, default=4)
    parser.add_argument("--after", type=int, default=2, help="look-ahead in beats")
    parser.add_argument("--stage", choices=("tree", "logistic"), default="tree")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    run = json.loads(args.run.read_text())
    held_out = run["held_out"]
    labels, records = np.asarray(held_out["labels"]), np.asarray(held_out["records"])
    probabilities = np.asarray(held_out["probabilities"])
    data, _ = load_split(args.data, "inter", 0, input="context")
    if not np.array_equal(data.labels, labels):
        parser.error("the run's beats are not DS1's context beats in order")
    rr = data.beats[:, 2 * WINDOW_LENGTH:]
    inputs = neighbours(np.hstack([np.log(np.clip(probabilities, 1e-6, 1)), rr]), records, args.before, args.after)
    predicted = np.zeros(len(labels), dtype=np.int64)
    for train, test in folds(data, run["folds_k"]):
        counts = np.bincount(labels[train], minlength=5).astype(np.float64)
        weights = np.where(counts > 0, 1 / np.sqrt(np.maximum(counts, 1)), 0.0)
        weights /= weights[labels[train]].mean()
        if args.stage == "tree":
            stage = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0)
            weight_name = "sample_weight"
        else:
            stage = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
            weight_name = "logisticregression__sample_weight"
        stage.fit(inputs[train], labels[train], **{weight_name: weights[labels[train]]})
        predicted[test] = stage.predict(inputs[test])
    print(line(f"per beat ({args.run.stem})", classification_metrics(labels, probabilities.argmax(1))))
    print(line(f"{args.stage} over beats -{args.before}..+{args.after}", classification_metrics(labels, predicted)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
