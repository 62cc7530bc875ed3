"""Choose a model's decision (service.models.decision) from cross-validated held-out probabilities.

Everything here reads the pooled held-out predictions of `ecg-crossval` inside the training
records, never a test split:

1. the temperature T minimising the held-out negative log-likelihood (Guo et al. 2017);
2. the ectopic thresholds: S, V and F are each called only at or above a calibrated probability
   (and, where asked, S only where the rhythm's irregularity is at most a threshold: the rhythm
   gate of service.models.decision, measured and not shipped; and, with each beat's flag from
   service.signal.rhythm, whether S goes to N where the RR intervals meet the criteria of atrial
   fibrillation), searched together on a grid. A
   setting is admissible when the held-out normal beats called ectopic stay within ECTOPIC_BUDGET
   per 100 (pooled over the patients the networks never saw; `in_every_fold` asks it of every
   fold instead, which inside DS1 is dominated by the atrial fibrillation of records 201 and 203
   and leaves S nearly uncalled); among those the one with the best selection score (mean F1 of
   S and V) wins, then the best F1 of F, then the lower thresholds. Where no setting keeps the
   budget, the one with the fewest calls is taken, and the result says so;
3. the review threshold: the calibrated confidence below which 5 % of the held-out beats fall, so
   about 95 % are labelled automatically.

`held_out_figures` says what the decision does on those same beats (calibration error, the share
sent to review by class, and S / V sensitivity and positive predictivity among the beats not sent).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import precision_recall_fscore_support

from service.models.decision import Decision
from service.signal.beats import CLASSES

COVERAGE = 0.95  # share of beats labelled without review
THRESHOLDS = (None, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # minimum calibrated probability of S, V, F
IRREGULARITY_THRESHOLDS = (None, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1)  # S held back above
ECTOPIC_BUDGET = 3.0  # normal beats called ectopic allowed per 100 held-out normal beats
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


def ectopic_calls_per_fold(labels: np.ndarray, predicted: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Normal beats called S, V, F or Q per 100 normal beats, in each group that has normal beats."""
    normal = labels == CLASSES.index("N")
    _, group = np.unique(groups[normal], return_inverse=True)
    calls = np.bincount(group, weights=predicted[normal] != CLASSES.index("N"))
    return 100 * calls / np.bincount(group)


def choose_thresholds(calibrated: np.ndarray, labels: np.ndarray, groups: np.ndarray, temperature: float,
                      budget: float = ECTOPIC_BUDGET, in_every_fold: bool = False,
                      irregularity: np.ndarray | None = None,
                      af_criteria: np.ndarray | None = None) -> tuple[dict, dict]:
    """The S, V and F minimum probabilities and the S rhythm gates (THRESHOLDS and, with each beat's
    irregularity, IRREGULARITY_THRESHOLDS, and with each beat's AF criteria flag, S as N there or
    not, searched together) by the rule in the module docstring,
    and what the search found: how many settings kept the budget, and the pooled figures and
    worst-fold calls of the chosen setting and of the best one regardless of the budget (what the
    budget costs)."""
    calls = "worst_fold_ectopic_calls" if in_every_fold else "ectopic_calls_per_100_normal"
    gates = IRREGULARITY_THRESHOLDS if irregularity is not None else (None,)
    af_gates = (False, True) if af_criteria is not None else (False,)
    merged = {af: Decision(temperature, s_as_n_in_af=af).in_af(calibrated, af_criteria) for af in af_gates}
    rows = []
    for s, v, f, gate, af in itertools.product(THRESHOLDS, THRESHOLDS, THRESHOLDS, gates, af_gates):
        decision = Decision(temperature, {"S": s, "V": v, "F": f}, s_max_irregularity=gate, s_as_n_in_af=af)
        predicted = decision.labels(merged[af], irregularity)
        figures = class_figures(labels, predicted)
        worst = float(ectopic_calls_per_fold(labels, predicted, groups).max())
        rows.append({"min_probability": {"S": s, "V": v, "F": f}, "s_max_irregularity": gate, "s_as_n_in_af": af,
                     "worst_fold_ectopic_calls": round(worst, 3),
                     "score": round((figures["S"]["f1"] + figures["V"]["f1"]) / 2, 4), **figures})

    def lower(row: dict) -> float:  # ties: the setting that holds back fewer beats
        return (-sum(t or 0.0 for t in row["min_probability"].values()) - row["s_as_n_in_af"]
                - (1 / row["s_max_irregularity"] if row["s_max_irregularity"] else 0.0))

    def ranked(row: dict) -> tuple:
        return row["score"], row["F"]["f1"], lower(row)

    admissible = [r for r in rows if r[calls] <= budget]
    if admissible:
        best = max(admissible, key=ranked)
    else:
        best = min(rows, key=lambda r: (r[calls], -r["score"]))
    search = {"settings_tried": len(rows), "settings_within_budget": len(admissible), "chosen": best,
              "best_regardless_of_budget": max(rows, key=ranked)}
    return {"min_probability": {c: t for c, t in best["min_probability"].items() if t is not None},
            "s_max_irregularity": best["s_max_irregularity"], "s_as_n_in_af": best["s_as_n_in_af"],
            "budget_kept": bool(admissible)}, search


def choose_decision(probabilities: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None,
                    coverage: float = COVERAGE, budget: float = ECTOPIC_BUDGET, in_every_fold: bool = False,
                    irregularity: np.ndarray | None = None, af_criteria: np.ndarray | None = None) -> dict:
    """The decision (temperature, ectopic thresholds, rhythm gates, review threshold), the budget it
    was chosen under and what the threshold search found. `groups` gives each beat's held-out fold
    (None: all beats one group), for the worst-fold figures and the `in_every_fold` rule;
    `irregularity` each beat's RR irregularity (None: no rhythm gate is tried), `af_criteria` each
    beat's AF criteria flag (None: S is never given to N)."""
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    groups = np.zeros(labels.size, dtype=np.int64) if groups is None else np.asarray(groups)
    temperature = fit_temperature(probabilities, labels)
    calibrated = Decision(temperature).calibrated(probabilities)
    chosen, search = choose_thresholds(calibrated, labels, groups, temperature, budget, in_every_fold, irregularity,
                                       af_criteria)
    rule = Decision(temperature, chosen["min_probability"], s_max_irregularity=chosen["s_max_irregularity"],
                    s_as_n_in_af=chosen["s_as_n_in_af"])
    confidence = rule(probabilities, irregularity=irregularity, af_criteria=af_criteria).confidence
    review_below = float(np.quantile(confidence, 1.0 - coverage))
    decision = Decision(round(temperature, 4), chosen["min_probability"], round(review_below, 4),
                        chosen["s_max_irregularity"], chosen["s_as_n_in_af"])
    return {"decision": decision.as_dict(),
            "ectopic_budget": {"calls_per_100_normal": budget, "in_every_fold": in_every_fold,
                               "kept": chosen["budget_kept"], "folds": int(np.unique(groups).size)},
            "threshold_search": search}


def held_out_figures(probabilities: np.ndarray, labels: np.ndarray, decision: Decision,
                     irregularity: np.ndarray | None = None, af_criteria: np.ndarray | None = None) -> dict:
    """What `decision` does to beats with known labels (and, for its rhythm gates, each beat's
    irregularity and AF criteria flag): calibration error before and after, labels as decided, the share sent to review
    (all and by true class), and the figures among the rest."""
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    raw_label = probabilities.argmax(axis=1)
    decided = decision(probabilities, irregularity=irregularity, af_criteria=af_criteria)
    review = decided.review if decided.review is not None else np.zeros(labels.size, dtype=bool)
    kept = ~review
    return {
        "beats": int(labels.size),
        "ece_raw": round(expected_calibration_error(probabilities.max(axis=1), raw_label == labels), 4),
        "ece_calibrated": round(expected_calibration_error(decided.confidence, decided.labels == labels), 4),
        "as_trained": class_figures(labels, raw_label),
        "decided": class_figures(labels, decided.labels),
        "af_criteria_beats": None if af_criteria is None else int(np.count_nonzero(af_criteria)),
        "review_share": round(float(review.mean()), 4),
        "review_share_by_class": {c: round(float(review[labels == k].mean()), 4) if np.any(labels == k) else None
                                  for k, c in enumerate(CLASSES)},
        "not_reviewed": class_figures(labels[kept], decided.labels[kept]),
    }
