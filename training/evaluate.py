"""Metrics that do not hide behind class N: macro-F1, per-class precision/recall, confusion,
and for ODE-Nets accuracy and NFE across solver tolerances. Also the `ecg-evaluate` CLI.

ODE-Nets are scored through the path the service runs (service.models.predictors.ODEPredictor: the
compiled per-beat solve of service.models.fastode), with the torch encoder, so a card's figures are the
served model's."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from service.models.artefacts import load_network
from service.signal.beats import CLASSES
from service.models.networks import BeatClassifier, SolverConfig
from service.models.decision import Decision
from service.signal.context import irregularity_of
from service.models.predictors import ODEPredictor
from training.calibration import held_out_figures
from training.data import BeatSet, af_criteria_of, load_split

TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
# The raw database beside a checkout; override with --data or MITDB_DIR.
DEFAULT_DATA = Path(os.environ.get("MITDB_DIR", "../shared/data/mitdb"))


def served_predictor(model: BeatClassifier) -> ODEPredictor:
    """The service's ODE-Net predictor around a torch network (torch encoder instead of ONNX)."""
    model.eval()

    @torch.inference_mode()
    def encode(beats: np.ndarray) -> np.ndarray:
        return model.encoder(torch.from_numpy(beats)).numpy()

    return ODEPredictor(model, encode)


@torch.inference_mode()
def predict_probabilities(model: BeatClassifier, beats: np.ndarray, solver: SolverConfig | None = None,
                          batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities of `beats` (n, classes), and each beat's NFE (None for a ResNet)."""
    model.eval()
    if not model.is_ode:
        return np.concatenate([torch.softmax(model(torch.from_numpy(beats[i:i + batch_size])), dim=1).numpy()
                               for i in range(0, len(beats), batch_size)]), None
    predictor = served_predictor(model)
    solver = solver or SolverConfig()
    probabilities, nfe = [], []
    for start in range(0, len(beats), batch_size):
        result = predictor.predict(beats[start:start + batch_size], solver)
        if np.any(result.status):
            raise RuntimeError(f"{solver.method} failed on some beats at rtol={solver.rtol:g}")
        probabilities.append(result.probabilities)
        nfe.append(result.nfe)
    return np.concatenate(probabilities), np.concatenate(nfe)


def predict(model: BeatClassifier, beats: np.ndarray, solver: SolverConfig | None = None,
            batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray | None]:
    """Class indices of `beats`, and each beat's NFE (None for a ResNet)."""
    probabilities, nfe = predict_probabilities(model, beats, solver, batch_size)
    return probabilities.argmax(axis=1), nfe


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
        "ectopic_calls_per_100_normal": ectopic_calls_per_100_normal(
            confusion_matrix(labels, predicted, labels=classes)),
    }


ECTOPIC = ("S", "V", "F", "Q")


def ectopic_calls_per_100_normal(confusion) -> dict:
    """How many normal beats are called S, V, F or Q, per 100 normal beats, read from a confusion
    matrix (rows: true, columns: predicted, N first; an extra "no beat" row and column, as the strip
    path's matrices have, are left out): what a healthy subject's report would list falsely."""
    matrix = np.asarray(confusion)[:len(CLASSES), :len(CLASSES)]
    normal = matrix[CLASSES.index("N")]
    total = max(int(normal.sum()), 1)
    calls = {c: float(100 * normal[CLASSES.index(c)] / total) for c in ECTOPIC}
    return {**calls, "all": float(sum(calls.values()))}


def evaluate(model: BeatClassifier, data: BeatSet, solver: SolverConfig | None = None,
             decision: Decision | None = None, af: np.ndarray | None = None) -> dict:
    """The card's metrics of `data`, labelled as the service labels its strips: through the card's
    `decision` (service.models.decision) where it has one, with what its review flag does; `af`,
    each beat's AF criteria flag, for a decision that reads them."""
    if decision is not None and decision.s_as_n_in_af and af is None:
        raise ValueError("this decision reads the AF criteria of the records' beat times: pass them")
    probabilities, nfe = predict_probabilities(model, data.beats, solver)
    metrics = classification_metrics(data.labels, (decision or Decision())(probabilities, data.beats,
                                                                           af_criteria=af).labels)
    if decision is not None:
        metrics["decision"] = held_out_figures(probabilities, data.labels, decision, irregularity_of(data.beats), af)
    if nfe is not None:
        metrics["solver"] = (solver or SolverConfig()).as_dict()
        metrics["nfe_per_beat_mean"] = float(np.mean(nfe))
    return metrics


WITHOUT_232 = "232"  # 75 % of DS2's S beats are this one record's: DS2 figures are given without it too


def split_metrics(model: BeatClassifier, data: BeatSet, split: str, solver: SolverConfig | None = None,
                  decision: Decision | None = None, folder: Path | None = None) -> dict:
    """The metrics a card records for `split`: under metrics_key(split), and for DS2 also without 232;
    a decision that reads the AF criteria gets them from the records' beat times in `folder`."""
    af = af_criteria_of(data, folder) if decision is not None and decision.s_as_n_in_af else None
    metrics = {metrics_key(split): evaluate(model, data, solver, decision, af)}
    if split == "inter":
        keep = np.flatnonzero(data.records != WITHOUT_232)
        metrics["inter_DS2_without_232"] = evaluate(model, data.subset(keep), solver, decision,
                                                    None if af is None else af[keep])
    return metrics


def tolerance_sweep(model: BeatClassifier, data: BeatSet, tolerances=TOLERANCES, method: str = "dopri5") -> list[dict]:
    """Accuracy, macro-F1 and each beat's NFE on all of `data` at each rtol = atol (every beat is
    solved on its own, so its NFE is the same alone or in any batch)."""
    rows = []
    for tol in tolerances:
        solver = SolverConfig(method=method, rtol=tol, atol=tol, max_num_steps=100_000)
        predicted, nfe = predict(model, data.beats, solver)
        rows.append({
            "rtol": tol, "atol": tol, "method": method,
            "accuracy": float(np.mean(predicted == data.labels)),
            "macro_f1": float(f1_score(data.labels, predicted, labels=list(range(len(CLASSES))),
                                       average="macro", zero_division=0)),
            "nfe_per_beat_mean": float(np.mean(nfe)), "nfe_per_beat_max": int(np.max(nfe)),
        })
    return rows


def format_metrics(metrics: dict) -> str:
    lines = [f"beats {metrics['n_beats']}  accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}",
             "class  precision  recall    f1  support"]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:>5}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:.4f}  {m['support']:7d}")
    calls = ectopic_calls_per_100_normal(metrics["confusion_matrix"])
    lines.append("ectopic calls per 100 normal beats: " + "  ".join(f"{c} {calls[c]:.2f}" for c in (*ECTOPIC, "all")))
    return "\n".join(lines)


def metrics_key(split: str) -> str:
    """"all" holds nothing out: its figures are its fit to its own training records."""
    return {"intra": "intra_test", "inter": "inter_DS2", "all": "training_records_fit"}[split]


def derive_card_figures(artefact: Path) -> int:
    """Add each card metric's ectopic calls per 100 normal beats, read from its confusion matrix."""
    from training.export import CARD, rewrite_card

    card = json.loads((artefact / CARD).read_text())
    for metrics in card.get("metrics", {}).values():
        metrics["ectopic_calls_per_100_normal"] = ectopic_calls_per_100_normal(metrics["confusion_matrix"])
    rewrite_card(artefact, card)
    print(f"wrote ectopic calls per 100 normal beats into {artefact / CARD}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a trained artefact on a split of MIT-BIH.")
    parser.add_argument("artefact", type=Path, help="artefact folder, e.g. models/odenet")
    parser.add_argument("--split", choices=("intra", "inter", "all"), default=None,
                        help="test split (default: the split the artefact was trained on)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of MIT-BIH WFDB records")
    parser.add_argument("--seed", type=int, default=None, help="intra-patient split seed (default: the card's)")
    parser.add_argument("--rtol", type=float, default=None)
    parser.add_argument("--atol", type=float, default=None)
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--write-card", action="store_true",
                        help="record these metrics (and, for an ODE-Net, the tolerance sweep and figures) in the "
                             "card instead of checking them")
    parser.add_argument("--decision", type=Path, default=None, metavar="DECISION.json",
                        help="with --write-card: record this decision (ecg-crossval --calibrate) in the card and "
                             "score the split through it")
    parser.add_argument("--derive-card-figures", action="store_true",
                        help="write into the card the figures derived from the confusion matrices it already "
                             "holds (ectopic calls per 100 normal beats), without running the model; a plain "
                             "ecg-evaluate run then checks them with the matrices")
    args = parser.parse_args(argv)

    if args.derive_card_figures:
        return derive_card_figures(args.artefact)
    model, card = load_network(args.artefact)
    split = args.split or card["training"]["split"]
    seed = card["training"]["seed"] if args.seed is None else args.seed
    if not args.data.is_dir():
        parser.error(f"data folder {args.data} not found; pass --data DIR with the MIT-BIH records")
    if split == "inter" and card["training"]["split"] != "inter":
        print("warning: this model was trained on DS2 records too; its DS2 figures are not inter-patient",
              file=sys.stderr)
    train, test = load_split(args.data, split, seed, input=model.arch.input_kind)
    data = test if test is not None else train
    solver = None
    if model.is_ode:
        default = card.get("default_solver", {})
        solver = SolverConfig(method=default.get("method", "dopri5"),
                              rtol=args.rtol or default.get("rtol", 1e-3),
                              atol=args.atol or default.get("atol", 1e-3))
    if args.decision is not None:
        if not args.write_card:
            parser.error("--decision records a decision in the card: add --write-card")
        if not args.decision.is_file():
            parser.error(f"decision file {args.decision} not found (ecg-crossval --calibrate RUN.json --out FILE)")
        chosen = json.loads(args.decision.read_text())
        card["decision"] = {**chosen["decision"], "chosen_by": {
            k: chosen[k] for k in ("protocol", "run", "ectopic_budget", "threshold_search", "held_out") if k in chosen}}
    decision = Decision.of_card(card) if "decision" in card else None
    metrics = split_metrics(model, data, split, solver, decision, args.data)
    key = metrics_key(split)
    if args.json:
        json.dump(metrics, sys.stdout, indent=2)
        print()
    else:
        print(f"{card['name']} on {key}")
        print(format_metrics(metrics[key]))
    if args.write_card:
        from training.export import rewrite_card
        from training.report import confusion_png, tolerance_png

        card["metrics"] = metrics
        figures = {"confusion.png": lambda p: confusion_png(metrics[key]["confusion_matrix"], f"{card['name']} on {key}", p)}
        if model.is_ode and "nfe_vs_tolerance" in card and args.decision is None:  # a decision leaves it as it is
            sweep = card["nfe_vs_tolerance"] = tolerance_sweep(model, data)
            figures["tolerance.png"] = lambda p: tolerance_png(sweep, f"{card['name']} on {key}: dopri5", p)
        rewrite_card(args.artefact, card, figures)
        print(f"wrote the metrics into {args.artefact / 'card.json'}", file=sys.stderr)
        return 0
    if args.rtol or args.atol or seed != card["training"]["seed"]:
        return 0
    def reproduced(recorded: dict, measured: dict) -> bool:
        calls = "ectopic_calls_per_100_normal"
        return (recorded["confusion_matrix"] == measured["confusion_matrix"]
                and recorded.get(calls, measured[calls]) == measured[calls])

    differing = [k for k, m in metrics.items()
                 if k in card.get("metrics", {}) and not reproduced(card["metrics"][k], m)]
    compared = [k for k in metrics if k in card.get("metrics", {})]
    if not compared:
        return 0
    same = not differing
    print(f"card {'reproduced' if same else 'NOT reproduced'}: the confusion matrices and ectopic calls "
          f"({', '.join(compared)}) {'equal' if same else 'differ from'} those in {args.artefact / 'card.json'}"
          + ("" if same else f" ({', '.join(differing)})"), file=sys.stderr)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
