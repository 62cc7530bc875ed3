"""The floor each deep context model must beat, in its card: a gradient-boosted tree on the very
inputs the networks read (training.crossval.tree_floor), scored in cross-validation inside DS1 and,
trained on all of DS1, on DS2 at the reference R-peaks; beside it the card's own figures and by how
much the network beats (or misses) the tree.

A card trained on all 44 records (no held-out patients) gets the cross-validation comparison of its
recipe only.

The tree's cross-validation run is an `ecg-crossval --model tree --out RUN.json` result (same folds,
same score); the network's score there is the mean over its recipe's runs listed in the card's
`selection.decision_rule` (the runs the shipped recipe was chosen on), with the logit bias chosen on
them. `--rule` gives the tree the same treatment: its own `ecg-crossval --choose-bias RUN.json`
result, applied to its CV score (the score with the bias) and to its DS2 labels. DS2 is only reported
here: nothing is chosen on it.
Usage: python scripts/tree-floor.py RUN.json models/context-odenet-ds1 [...] [--rule RULE.json]
       [--write-card] [--data DIR]
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

from training.crossval import TREE_ITERATIONS, shifted_predictions, tree_floor, tree_probabilities  # noqa: E402
from training.data import DS1, DS2, load_records  # noqa: E402
from training.evaluate import DEFAULT_DATA, classification_metrics  # noqa: E402
from training.export import CARD, rewrite_card  # noqa: E402

CLASSES = ("N", "S", "V", "F")


def figures(metrics: dict) -> dict:
    """Se, +P and F1 of N, S, V, F, and normal beats called ectopic per 100, from classification_metrics."""
    out = {c: {k: round(metrics["per_class"][c][m], 4) for k, m in (("se", "recall"), ("ppv", "precision"),
                                                                     ("f1", "f1"))} for c in CLASSES}
    out["ectopic_calls_per_100_normal"] = round(metrics["ectopic_calls_per_100_normal"]["all"], 2)
    return out


def card_figures(card: dict) -> dict:
    """The same figures from the card's DS2 confusion matrix (its labels as the service gives them)."""
    matrix = np.asarray(card["metrics"]["inter_DS2"]["confusion_matrix"])
    labels = np.repeat(np.arange(matrix.shape[0]), matrix.sum(axis=1))
    predicted = np.concatenate([np.repeat(np.arange(matrix.shape[1]), row) for row in matrix])
    return figures(classification_metrics(labels, predicted))


def network_cv_score(card: dict) -> tuple[float, list[str]]:
    """Mean CV score of the runs the card's recipe was chosen on, with its decision rule."""
    rule = card["selection"]["decision_rule"]
    return float(rule["score_with_bias"]), list(rule["runs"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="ecg-crossval --model tree --out result")
    parser.add_argument("cards", type=Path, nargs="+", help="context artefacts, e.g. models/context-odenet-ds1")
    parser.add_argument("--rule", type=Path, default=None, metavar="RULE.json",
                        help="the tree's logit bias: ecg-crossval --choose-bias RUN.json --out RULE.json")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--write-card", action="store_true", help="record the floor in each card")
    args = parser.parse_args()
    run = json.loads(args.run.read_text())
    if run.get("model") != "tree" or run["recipe"]["leads"] != 1:
        parser.error(f"{args.run} is not a one-lead ecg-crossval --model tree result")
    rule = json.loads(args.rule.read_text())["decision_rule"] if args.rule else None
    if rule and rule["runs"] != [args.run.stem]:
        parser.error(f"{args.rule} was chosen on {rule['runs']}, not on {args.run.stem}")
    train = load_records(args.data, DS1, input="context")
    test = load_records(args.data, DS2, input="context")
    waves = run["recipe"]["waves"]
    tree = tree_floor(train, run["seed"], waves=waves)
    bias = rule["logit_bias"] if rule else ""
    on_ds2 = figures(classification_metrics(test.labels, shifted_predictions(tree_probabilities(tree, test.beats),
                                                                             bias)))
    floor = {"model": f"scikit-learn HistGradientBoostingClassifier, {TREE_ITERATIONS} iterations, untuned, "
                      f"sqrt class weights, on the same one-lead context inputs read as {waves} "
                      "(training.crossval.tree_floor)" + (f", logit bias {bias} chosen in CV" if bias else ""),
             "cv_score": rule["score_with_bias"] if rule else run["clean"]["score"], "cv_run": args.run.stem,
             **({"logit_bias": bias, "cv_score_as_trained": run["clean"]["score"]} if rule else {}),
             "inter_DS2": on_ds2}
    print(f"tree: CV score {floor['cv_score']:.4f}; DS2 " + "  ".join(
        f"{c} {100 * on_ds2[c]['se']:.1f}/{100 * on_ds2[c]['ppv']:.1f} (F1 {on_ds2[c]['f1']:.2f})" for c in "NSV")
          + f"; ectopic calls per 100 N {on_ds2['ectopic_calls_per_100_normal']:.2f}")
    for folder in args.cards:
        card = json.loads((folder / CARD).read_text())
        score, runs = network_cv_score(card)
        margin = {"cv_score": round(score - floor["cv_score"], 4)}
        line = f"{folder.name}: CV score {score:.4f} (runs {', '.join(runs)}), {margin['cv_score']:+.4f} over the tree"
        if "inter_DS2" in card["metrics"]:
            mine = card_figures(card)
            margin.update({f"inter_DS2_{c}_f1": round(mine[c]["f1"] - on_ds2[c]["f1"], 4) for c in "SV"})
            margin["inter_DS2_N_se"] = round(mine["N"]["se"] - on_ds2["N"]["se"], 4)
            line += (f"; DS2 S F1 {mine['S']['f1']:.2f} ({margin['inter_DS2_S_f1']:+.2f}), V F1 {mine['V']['f1']:.2f} "
                     f"({margin['inter_DS2_V_f1']:+.2f}), N Se {100 * mine['N']['se']:.1f} "
                     f"({100 * margin['inter_DS2_N_se']:+.1f})")
        print(line)
        if args.write_card:
            card["floor"] = {**floor, "network_cv_score": score, "network_cv_runs": runs,
                             "network_minus_floor": margin}
            if "inter_DS2" not in card["metrics"]:  # trained on every record: no unseen patients of its own
                card["floor"]["inter_DS2_note"] = "the tree trained on DS1; this card's recipe on DS2 is its -ds1 twin's"
            rewrite_card(folder, card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
