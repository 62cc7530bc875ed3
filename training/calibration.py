"""Choose a model's decision (service.models.decision) from cross-validated held-out probabilities.

Everything here reads the pooled held-out predictions of `ecg-crossval` inside the training
records, never a test split:

1. the temperature T minimising the held-out negative log-likelihood (Guo et al. 2017);
2. the fusion threshold: F is called only at or above the calibrated probability, on a grid, that
   maximises F's held-out F1 (a beat below it takes its next most probable class). F's F1 weighs
   the fusion beats found against the normal beats falsely called F, the trade the threshold sets;
3. the review threshold: the calibrated confidence below which 5 % of the held-out beats fall, so
   about 95 % are labelled automatically.

`held_out_figures` says what the decision does on those same beats (calibration error, the share
sent to review by class, and S / V sensitivity and positive predictivity among the beats not sent).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import precision_recall_fscore_support

from service.models.decision import Decision
from service.signal.beats import CLASSES

COVERAGE = 0.95  # share of beats labelled without review
F_THRESHOLDS = (None, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
ECE_BINS = 15


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the mean negative log-likelihood of softmax(log p / T)."""
    def nll(log_t: float) -> float:
        calibrated = Decision(temperature=float(np.exp(log_t))).calibrated(probabilities)
        return float(-np.mean(np.log(np.clip(calibrated[np.arange(labels.size), labels], 1e-30, 1))))

    found = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(found.x))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: the beat-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def class_figures(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Se, +P and F1 of each class, and normal beats called ectopic per 100 normal beats."""
    classes = list(range(len(CLASSES)))
    ppv, se, f1, support = precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    out = {name: {"se": round(float(se[k]), 4), "ppv": round(float(ppv[k]), 4), "f1": round(float(f1[k]), 4),
                  "support": int(support[k])} for k, name in enumerate(CLASSES)}
    normal = labels == CLASSES.index("N")
    out["ectopic_calls_per_100_normal"] = round(100 * float(np.mean(predicted[normal] != CLASSES.index("N"))), 3) \
        if normal.any() else 0.0
    return out


def choose_f_threshold(calibrated: np.ndarray, labels: np.ndarray, temperature: float) -> tuple[float | None, list]:
    """The fusion threshold of F_THRESHOLDS with the best held-out F1 of F (ties: the lower one)."""
    rows = []
    for threshold in F_THRESHOLDS:
        predicted = Decision(temperature, threshold).labels(calibrated)
        rows.append({"f_min_probability": threshold, **class_figures(labels, predicted)})
    best = max(rows, key=lambda r: r["F"]["f1"])
    return best["f_min_probability"], rows


def choose_decision(probabilities: np.ndarray, labels: np.ndarray, coverage: float = COVERAGE) -> dict:
    """The decision (temperature, F threshold, review threshold) and the grid that chose the F threshold."""
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    temperature = fit_temperature(probabilities, labels)
    calibrated = Decision(temperature).calibrated(probabilities)
    f_min, grid = choose_f_threshold(calibrated, labels, temperature)
    confidence = Decision(temperature, f_min)(probabilities).confidence
    review_below = float(np.quantile(confidence, 1.0 - coverage))
    decision = Decision(round(temperature, 4), f_min, round(review_below, 4))
    return {"decision": decision.as_dict(), "f_threshold_grid": grid}


def held_out_figures(probabilities: np.ndarray, labels: np.ndarray, decision: Decision) -> dict:
    """What `decision` does to beats with known labels: calibration error before and after, labels
    as decided, the share sent to review (all and by true class), and the figures among the rest."""
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    raw_label = probabilities.argmax(axis=1)
    decided = decision(probabilities)
    review = decided.review if decided.review is not None else np.zeros(labels.size, dtype=bool)
    kept = ~review
    return {
        "beats": int(labels.size),
        "ece_raw": round(expected_calibration_error(probabilities.max(axis=1), raw_label == labels), 4),
        "ece_calibrated": round(expected_calibration_error(decided.confidence, decided.labels == labels), 4),
        "as_trained": class_figures(labels, raw_label),
        "decided": class_figures(labels, decided.labels),
        "review_share": round(float(review.mean()), 4),
        "review_share_by_class": {c: round(float(review[labels == k].mean()), 4) if np.any(labels == k) else None
                                  for k, c in enumerate(CLASSES)},
        "not_reviewed": class_figures(labels[kept], decided.labels[kept]),
    }
