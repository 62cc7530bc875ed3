"""Metrics that do not hide behind class N: macro-F1, per-class precision/recall, confusion,
and for ODE-Nets accuracy and NFE across solver tolerances. Also the `ecg-evaluate` CLI."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from service.artefacts import load_model
from service.beats import CLASSES
from service.networks import BeatClassifier, SolverConfig
from training.data import BeatSet, load_split

TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
# The raw database beside a checkout; override with --data or MITDB_DIR.
DEFAULT_DATA = Path(os.environ.get("MITDB_DIR", "../shared/data/mitdb"))


@torch.inference_mode()
def predict(model: BeatClassifier, beats: np.ndarray, solver: SolverConfig | None = None,
            batch_size: int = 1024) -> tuple[np.ndarray, list[int]]:
    """Class indices of `beats`, and the NFE of each batch (empty for a ResNet)."""
    model.eval()
    predictions, nfes = [], []
    for start in range(0, len(beats), batch_size):
        logits = model(torch.from_numpy(beats[start:start + batch_size]), solver)
        predictions.append(logits.argmax(dim=1).numpy())
        if model.is_ode:
            nfes.append(model.body.nfe)
    return np.concatenate(predictions), nfes


def classification_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracy, macro-F1 over the five classes, and per class precision (positive predictivity),
    recall (sensitivity), F1 and support, plus the confusion matrix (rows: true, columns: predicted)."""
    classes = list(range(len(CLASSES)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0)
    return {
        "n_beats": int(labels.size),
        "accuracy": float(np.mean(labels == predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(CLASSES)
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),
    }


def evaluate(model: BeatClassifier, data: BeatSet, solver: SolverConfig | None = None) -> dict:
    predicted, nfes = predict(model, data.beats, solver)
    metrics = classification_metrics(data.labels, predicted)
    if nfes:
        metrics["solver"] = (solver or SolverConfig()).as_dict()
        metrics["nfe_per_batch_of_1024_mean"] = float(np.mean(nfes))
    return metrics


def tolerance_sweep(model: BeatClassifier, data: BeatSet, tolerances=TOLERANCES,
                    single_beats: int = 200, method: str = "dopri5") -> list[dict]:
    """Accuracy on all of `data` and NFE per solve at each rtol = atol.

    NFE is reported for one beat per solve (the first `single_beats` beats, as a client sending
    single beats sees it) and per batch of 1024 (the per-beat norm lets the hardest beat set the pace).
    """
    rows = []
    for tol in tolerances:
        solver = SolverConfig(method=method, rtol=tol, atol=tol, max_num_steps=100_000)
        predicted, batch_nfe = predict(model, data.beats, solver)
        _, single_nfe = predict(model, data.beats[:single_beats], solver, batch_size=1)
        rows.append({
            "rtol": tol, "atol": tol, "method": method,
            "accuracy": float(np.mean(predicted == data.labels)),
            "macro_f1": float(f1_score(data.labels, predicted, labels=list(range(len(CLASSES))),
                                       average="macro", zero_division=0)),
            "nfe_single_beat_mean": float(np.mean(single_nfe)),
            "nfe_single_beat_max": int(np.max(single_nfe)),
            "nfe_batch_1024_mean": float(np.mean(batch_nfe)),
        })
    return rows


def format_metrics(metrics: dict) -> str:
    lines = [f"beats {metrics['n_beats']}  accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}",
             "class  precision  recall    f1  support"]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:>5}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:.4f}  {m['support']:7d}")
    return "\n".join(lines)


def metrics_key(split: str) -> str:
    return {"intra": "intra_test", "inter": "inter_DS2"}[split]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a trained artefact on a split of MIT-BIH.")
    parser.add_argument("artefact", type=Path, help="artefact folder, e.g. models/odenet")
    parser.add_argument("--split", choices=("intra", "inter"), default=None,
                        help="test split (default: the split the artefact was trained on)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of MIT-BIH WFDB records")
    parser.add_argument("--seed", type=int, default=None, help="intra-patient split seed (default: the card's)")
    parser.add_argument("--rtol", type=float, default=None)
    parser.add_argument("--atol", type=float, default=None)
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    args = parser.parse_args(argv)

    model, card = load_model(args.artefact)
    split = args.split or card["training"]["split"]
    seed = card["training"]["seed"] if args.seed is None else args.seed
    if not args.data.is_dir():
        parser.error(f"data folder {args.data} not found; pass --data DIR with the MIT-BIH records")
    if split == "inter" and card["training"]["split"] == "intra":
        print("warning: this model was trained on 80 % of all beats, DS2 records included; "
              "its DS2 figures are not inter-patient", file=sys.stderr)
    _, test = load_split(args.data, split, seed)
    solver = None
    if model.is_ode:
        default = card.get("default_solver", {})
        solver = SolverConfig(method=default.get("method", "dopri5"),
                              rtol=args.rtol or default.get("rtol", 1e-3),
                              atol=args.atol or default.get("atol", 1e-3))
    metrics = evaluate(model, test, solver)
    if args.json:
        json.dump(metrics, sys.stdout, indent=2)
        print()
    else:
        print(f"{card['name']} on {metrics_key(split)}")
        print(format_metrics(metrics))
    recorded = card.get("metrics", {}).get(metrics_key(split))
    if recorded is None or args.rtol or args.atol or seed != card["training"]["seed"]:
        return 0
    same = recorded["confusion_matrix"] == metrics["confusion_matrix"]
    print(f"card {'reproduced' if same else 'NOT reproduced'}: the {metrics_key(split)} confusion matrix "
          f"{'equals' if same else 'differs from'} the one in {args.artefact / 'card.json'}",
          file=sys.stderr)
    return 0 if same else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
