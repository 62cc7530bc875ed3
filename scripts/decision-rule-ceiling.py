"""How far a decision rule alone could move a DS1-trained model's S figures on DS2.

A diagnostic, never a way to choose: it sweeps the S, V and F logit shifts on the test patients
themselves (the shipped rules are chosen by `ecg-crossval --choose-bias` inside DS1) and prints the
best S F1 any shift reaches with N sensitivity >= 95 %, and the best S +P at S sensitivity >= 75 %.
If even these fall short of a target, no threshold reaches it: the model's scores do not separate
the classes, and the work is in the input or the training data.

Usage: python scripts/decision-rule-ceiling.py [--data DIR] models/context-odenet-ds1 ...
"""

import argparse
import itertools
from pathlib import Path

import numpy as np

from service.models.artefacts import load_network
from service.models.networks import SolverConfig
from training.data import load_split
from training.evaluate import DEFAULT_DATA, predict_probabilities

SHIFTS = np.arange(-8.0, 6.01, 0.5)  # wider than ecg-crossval's grid: a ceiling, not a choice
N, S = 0, 1


def s_figures(labels: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float]:
    """S sensitivity, S positive predictivity, N sensitivity: counted here, not by
    training.evaluate.classification_metrics, whose full report for each of the 24,389 shifts
    would take minutes."""
    true_s = np.count_nonzero((predicted == S) & (labels == S))
    return (true_s / np.count_nonzero(labels == S), true_s / max(np.count_nonzero(predicted == S), 1),
            np.count_nonzero((predicted == N) & (labels == N)) / np.count_nonzero(labels == N))


def f1(se: float, ppv: float) -> float:
    return 2 * se * ppv / (se + ppv) if se + ppv else 0.0


def ceiling(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    log_p = np.log(np.clip(probabilities, 1e-12, 1.0))
    best_f1, best_ppv = None, None
    for s, v, f in itertools.product(SHIFTS, SHIFTS, SHIFTS):
        se, ppv, n_se = s_figures(labels, (log_p + np.array([0.0, s, v, f, 0.0])).argmax(axis=1))
        if n_se >= 0.95 and (best_f1 is None or f1(se, ppv) > f1(*best_f1[:2])):
            best_f1 = (se, ppv, n_se, (s, v, f))
        if se >= 0.75 and (best_ppv is None or ppv > best_ppv[1]):
            best_ppv = (se, ppv, n_se, (s, v, f))
    return {"shipped": s_figures(labels, log_p.argmax(axis=1)), "best_f1": best_f1, "best_ppv": best_ppv}


def line(label: str, figures) -> str:
    if figures is None:
        return f"  {label}: no shift reaches it"
    se, ppv, n_se, *shift = figures
    where = f" at shift S {shift[0][0]:+.1f} V {shift[0][1]:+.1f} F {shift[0][2]:+.1f}" if shift else ""
    return f"  {label}: S Se {100 * se:.1f} +P {100 * ppv:.1f} (F1 {f1(se, ppv):.3f}), N Se {100 * n_se:.1f}{where}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artefacts", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of MIT-BIH WFDB records")
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f"data folder {args.data} not found; pass --data DIR with the MIT-BIH records")
    for folder in args.artefacts:
        model, card = load_network(folder)
        if card["training"]["split"] != "inter":
            parser.error(f"{folder} was not trained on DS1 alone; its DS2 figures are not inter-patient")
        _, test = load_split(args.data, "inter", card["training"]["seed"], input=model.arch.input_kind)
        solver = SolverConfig(**card.get("default_solver", {})) if model.is_ode else None
        probabilities, _ = predict_probabilities(model, test.beats, solver)
        result = ceiling(test.labels, probabilities)
        print(f"{card['name']} on DS2 ({len(test)} beats)")
        print(line("as shipped", result["shipped"]))
        print(line("best S F1 with N Se >= 95", result["best_f1"]))
        print(line("best S +P with S Se >= 75", result["best_ppv"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
