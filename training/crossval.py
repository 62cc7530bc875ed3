"""`ecg-crossval`: patient-grouped cross-validation inside the training records of a split.

Every modelling choice of the context models (window, features, weighting, epochs, body) is made
with this, inside DS1, never by looking at DS2. Records are split into k folds (scikit-learn's
StratifiedGroupKFold: no patient on both sides, class mixes kept alike); each fold trains on the
others and predicts its own records. The held-out predictions of all folds are pooled and scored
with per-class sensitivity, positive predictivity and F1 on the clean records, and again on one
augmented recording of them (another device: rate, noise, gain, strips).

The score that ranks candidates is the mean F1 of S and V, the classes where inter-patient
classifiers fail; N sensitivity and F are reported beside it. `--model tree` scores the floor each
deep candidate must beat: a gradient-boosted tree on the same inputs, folds and scoring.

`--sequence gru|odernn` adds a sequence stage over each record's beats (training.sequence), trained
end to end with the network and scored on the same folds, each held-out record read as one strip.

A two-lead candidate (`--set leads=2`) is scored twice on the same held-out beats: with their
second lead ("clean", "augmented") and with it removed ("clean_one_lead", "augmented_one_lead"),
what it would answer on a strip of MLII alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

from service.signal.context import (CONTEXT_INPUT, RR_FEATURES, TWO_LEAD_INPUT, WINDOW_LENGTH, irregularity_of,
                                    without_second_lead)
from service.models.networks import BeatClassifier, SolverConfig
from service.models.decision import Decision
from training.calibration import ECTOPIC_BUDGET, choose_decision, held_out_figures
from training.data import BeatSet, load_split, record_af_criteria
from training.evaluate import DEFAULT_DATA, classification_metrics, predict, predict_probabilities
from training.sequence import LOOK_AHEAD, STAGES, cross_validate_sequence
from training.train import (DEFAULT_NOISE_DATA, PRESETS, Recipe, apply_logit_bias, architecture, augmentation_of, fit,
                            logit_shift, override)


def selection_score(metrics: dict) -> float:
    """Mean F1 of S and V (pooled held-out predictions)."""
    return float(np.mean([metrics["per_class"][c]["f1"] for c in ("S", "V")]))


def summary(metrics: dict) -> dict:
    """What a comparison table needs: score, N Se, and Se / +P / F1 of S, V and F."""
    out = {"score": round(selection_score(metrics), 4), "macro_f1": round(metrics["macro_f1"], 4)}
    for c in ("N", "S", "V", "F"):
        m = metrics["per_class"][c]
        out[c] = {"se": round(m["recall"], 4), "ppv": round(m["precision"], 4), "f1": round(m["f1"], 4)}
    return out


EXTENDED_RR = ("log_pre_prev", "irregularity")


def without_extended_rr(inputs: np.ndarray) -> np.ndarray:
    """The context inputs with the RR features beyond the basic eight set to 0 (an ablation)."""
    inputs = inputs.copy()
    for name in EXTENDED_RR:
        inputs[..., 2 * WINDOW_LENGTH + RR_FEATURES.index(name)] = 0.0
    return inputs


FOLD_SEED = 0  # one fixed assignment of records to folds, so candidates are compared on the same folds


def folds(data: BeatSet, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=FOLD_SEED)
    return list(splitter.split(data.beats, data.labels, groups=data.records))


def pooled_result(data: BeatSet, per_fold: list[dict], clean: np.ndarray, augmented: np.ndarray,
                  probabilities: np.ndarray, probed: bool) -> dict:
    """A run's result: per-fold and pooled held-out figures, and the held-out beats themselves
    (labels, predictions, probabilities and, for context beats, each beat's RR irregularity),
    which --choose-bias and --calibrate read."""
    result = {"folds": per_fold, "clean": summary(classification_metrics(data.labels, clean)),
              "clean_confusion": classification_metrics(data.labels, clean)["confusion_matrix"],
              "held_out": {"labels": data.labels.tolist(), "clean": clean.tolist(),
                           "augmented": augmented.tolist(), "records": data.records.tolist(),
                           "probabilities": probabilities.round(6).tolist()}}
    irregularity = irregularity_of(data.beats)
    if irregularity is not None:
        result["held_out"]["irregularity"] = irregularity.round(4).tolist()
    if probed:
        result["augmented"] = summary(classification_metrics(data.labels, augmented))
    return result


def cross_validate(data: BeatSet, probe: np.ndarray | None, body: str, recipe: Recipe, k: int = 5, seed: int = 0,
                   solver: SolverConfig | None = None, log=print) -> dict:
    """Pooled held-out predictions of k patient-grouped folds, on the clean inputs and on `probe`
    (the same beats from an augmented recording that no training run sees)."""
    two_leads = recipe.leads == 2
    clean = np.full(len(data), -1)
    augmented = np.full(len(data), -1)
    probabilities = np.zeros((len(data), 5), dtype=np.float32)
    one_lead = np.full(len(data), -1)  # two leads: the same beats with the second lead removed
    one_lead_augmented = np.full(len(data), -1)
    one_lead_probabilities = np.zeros((len(data), 5), dtype=np.float32)
    per_fold = []
    for i, (train_index, test_index) in enumerate(folds(data, k)):
        started = time.perf_counter()
        torch.manual_seed(seed)
        model = BeatClassifier(architecture(body, recipe))
        fit(model, data.subset(train_index), recipe, seed, progress=False)
        apply_logit_bias(model, recipe)
        ode_solver = solver or SolverConfig() if model.is_ode else None
        probabilities[test_index], _ = predict_probabilities(model, data.beats[test_index], ode_solver)
        clean[test_index] = probabilities[test_index].argmax(axis=1)
        if probe is not None:
            augmented[test_index], _ = predict(model, probe[test_index], ode_solver)
        fold = classification_metrics(data.labels[test_index], clean[test_index])
        records = sorted(set(data.records[test_index]))
        per_fold.append({"records": records, **summary(fold)})
        if two_leads:
            one_lead_probabilities[test_index], _ = predict_probabilities(
                model, without_second_lead(data.beats[test_index]), ode_solver)
            one_lead[test_index] = one_lead_probabilities[test_index].argmax(axis=1)
            if probe is not None:
                one_lead_augmented[test_index], _ = predict(model, without_second_lead(probe[test_index]), ode_solver)
            per_fold[-1]["one_lead"] = summary(classification_metrics(data.labels[test_index], one_lead[test_index]))
        log(f"fold {i + 1}/{k} ({', '.join(records)}): score {per_fold[-1]['score']:.3f}"
            + (f" (one lead {per_fold[-1]['one_lead']['score']:.3f})" if two_leads else "")
            + f" in {time.perf_counter() - started:.0f} s")
    result = pooled_result(data, per_fold, clean, augmented, probabilities, probe is not None)
    if two_leads:
        result["clean_one_lead"] = summary(classification_metrics(data.labels, one_lead))
        result["clean_one_lead_confusion"] = classification_metrics(data.labels, one_lead)["confusion_matrix"]
        result["held_out"].update({"clean_one_lead": one_lead.tolist(),
                                   "augmented_one_lead": one_lead_augmented.tolist(),
                                   "probabilities_one_lead": one_lead_probabilities.round(6).tolist()})
        if probe is not None:
            result["augmented_one_lead"] = summary(classification_metrics(data.labels, one_lead_augmented))
    return result


TREE_ITERATIONS = 300


def tree_waves(inputs: np.ndarray, waves: str = "window+difference") -> np.ndarray:
    """Context inputs with each lead's window and template replaced by the `waves` the recipe's
    networks read (service.models.networks: "window+difference" for the shipped recipes). A
    network subtracts the template itself; a tree cannot, so it is given what the networks compute."""
    inputs = np.asarray(inputs, dtype=np.float32)
    leads = [(0, 2 * WINDOW_LENGTH)] + ([(CONTEXT_INPUT, CONTEXT_INPUT + 2 * WINDOW_LENGTH)]
                                        if inputs.shape[1] == TWO_LEAD_INPUT else [])
    parts, taken = [], 0
    for start, end in leads:
        window, template = inputs[:, start:start + WINDOW_LENGTH], inputs[:, start + WINDOW_LENGTH:end]
        named = {"window": window, "template": template, "difference": window - template}
        parts += [inputs[:, taken:start]] + [named[w] for w in waves.split("+")]
        taken = end
    return np.concatenate(parts + [inputs[:, taken:]], axis=1)


def tree_floor(train: BeatSet, seed: int, lead_dropout: float = 0.0, waves: str = "window+difference"):
    """The floor every deep candidate must beat: scikit-learn's HistGradientBoostingClassifier
    (300 iterations, untuned) on the very inputs the networks read, each lead's waves as the
    recipe's networks read them (tree_waves), classes weighted by the inverse square root of their
    counts (the "sqrt" class weighting of the recipes). A pipeline: `predict` takes context inputs.
    Two-lead inputs with `lead_dropout`: that fraction of the training beats (drawn once) has its
    second lead removed."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    if lead_dropout > 0:
        dropped = np.random.default_rng(seed).random(len(train)) < lead_dropout
        beats = train.beats.copy()
        beats[dropped] = without_second_lead(beats[dropped])
        train = dataclasses.replace(train, beats=beats)
    counts = np.bincount(train.labels, minlength=5).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0)
    weights /= weights[train.labels].mean()
    model = make_pipeline(FunctionTransformer(tree_waves, kw_args={"waves": waves}),
                          HistGradientBoostingClassifier(max_iter=TREE_ITERATIONS, early_stopping=False,
                                                         random_state=seed))
    return model.fit(train.beats, train.labels, histgradientboostingclassifier__sample_weight=weights[train.labels])


def tree_probabilities(model, beats: np.ndarray) -> np.ndarray:
    """(n, 5) class probabilities of a tree_floor model; a class its training beats lacked (F, Q in
    some folds) gets probability 0."""
    probabilities = np.zeros((len(beats), 5), dtype=np.float32)
    probabilities[:, model.classes_] = model.predict_proba(beats)
    return probabilities


def shifted_predictions(probabilities: np.ndarray, logit_bias: str = "") -> np.ndarray:
    """Classes after adding a decision rule's logit_bias ("S:2,V:2,F:-4", --choose-bias) to the
    log-probabilities: the rule a network carries in its head's bias, applied to any model's output."""
    return (np.log(np.clip(probabilities, 1e-12, 1)) + logit_shift(logit_bias)).argmax(axis=1)


def cross_validate_tree(data: BeatSet, probe: np.ndarray | None, k: int = 5, seed: int = 0, log=print,
                        leads: int = 1, lead_dropout: float = 0.0, waves: str = "window+difference") -> dict:
    """cross_validate for the tree floor: the same folds, the same pooled held-out scoring and
    held-out probabilities (so --choose-bias and --calibrate treat the tree as they treat a network),
    and, with two leads, the same second scoring without the second lead)."""
    two_leads = leads == 2
    probabilities = np.zeros((len(data), 5), dtype=np.float32)
    clean = np.full(len(data), -1)
    augmented = np.full(len(data), -1)
    one_lead = np.full(len(data), -1)
    one_lead_augmented = np.full(len(data), -1)
    per_fold = []
    for i, (train_index, test_index) in enumerate(folds(data, k)):
        started = time.perf_counter()
        model = tree_floor(data.subset(train_index), seed, lead_dropout if two_leads else 0.0, waves)
        probabilities[test_index] = tree_probabilities(model, data.beats[test_index])
        clean[test_index] = probabilities[test_index].argmax(axis=1)
        if probe is not None:
            augmented[test_index] = model.predict(probe[test_index])
        records = sorted(set(data.records[test_index]))
        per_fold.append({"records": records, **summary(classification_metrics(data.labels[test_index],
                                                                              clean[test_index]))})
        if two_leads:
            one_lead[test_index] = model.predict(without_second_lead(data.beats[test_index]))
            if probe is not None:
                one_lead_augmented[test_index] = model.predict(without_second_lead(probe[test_index]))
            per_fold[-1]["one_lead"] = summary(classification_metrics(data.labels[test_index], one_lead[test_index]))
        log(f"fold {i + 1}/{k} ({', '.join(records)}): score {per_fold[-1]['score']:.3f}"
            + (f" (one lead {per_fold[-1]['one_lead']['score']:.3f})" if two_leads else "")
            + f" in {time.perf_counter() - started:.0f} s")
    result = pooled_result(data, per_fold, clean, augmented, probabilities, probe is not None)
    if two_leads:
        result["clean_one_lead"] = summary(classification_metrics(data.labels, one_lead))
        result["clean_one_lead_confusion"] = classification_metrics(data.labels, one_lead)["confusion_matrix"]
        if probe is not None:
            result["augmented_one_lead"] = summary(classification_metrics(data.labels, one_lead_augmented))
    return result


BIAS_GRID = np.arange(-4.0, 2.01, 0.5)  # log-prior shifts tried for S, V and F
MIN_N_SENSITIVITY = 0.95


def choose_logit_bias(runs: list[dict]) -> tuple[dict[str, float], float, float]:
    """The shift of the S, V and F logits that maximises the mean selection score of the runs'
    pooled held-out probabilities, keeping N sensitivity at least MIN_N_SENSITIVITY: a decision
    rule chosen inside DS1, folded into the head's bias (Recipe.logit_bias). Returns the shift, and
    the mean score before and after."""
    labels = np.asarray(runs[0]["held_out"]["labels"])
    logs = [np.log(np.clip(np.asarray(r["held_out"]["probabilities"]), 1e-12, 1)) for r in runs]

    def score(shift: np.ndarray) -> tuple[float, float]:
        scores, n_se = [], []
        for log_p in logs:
            predicted = (log_p + shift).argmax(axis=1)
            m = classification_metrics(labels, predicted)
            scores.append(selection_score(m))
            n_se.append(m["per_class"]["N"]["recall"])
        return float(np.mean(scores)), float(np.mean(n_se))

    baseline, _ = score(np.zeros(5))
    best, best_score = {}, -1.0
    for s_shift in BIAS_GRID:
        for v_shift in BIAS_GRID:
            for f_shift in BIAS_GRID:
                shift = np.array([0.0, s_shift, v_shift, f_shift, 0.0])
                value, n_se = score(shift)
                if n_se >= MIN_N_SENSITIVITY and value > best_score:
                    best, best_score = {"S": float(s_shift), "V": float(v_shift), "F": float(f_shift)}, value
    return best, baseline, best_score


def held_out_af_criteria(records: list[str], folder: Path) -> np.ndarray:
    """The AF criteria flag of each held-out beat of a run (whole records, in the run's order), from
    each record's beat times in `folder`."""
    records = np.asarray(records)
    flags = np.zeros(records.size, dtype=bool)
    for record in dict.fromkeys(records.tolist()):
        index = np.flatnonzero(records == record)
        _, record_flags = record_af_criteria(folder, record)
        if record_flags.size != index.size or np.any(np.diff(index) != 1):
            raise ValueError(f"the run's beats of record {record} are not its {record_flags.size} annotated beats")
        flags[index] = record_flags
    return flags


def calibrate(run_path: Path, out: Path | None, budget: float = ECTOPIC_BUDGET, in_every_fold: bool = False,
              rhythm_gate: bool = False, af_folder: Path | None = None) -> int:
    """`--calibrate`: the decision chosen on a run's pooled held-out probabilities, and what it does
    there; with `af_folder` (the records' folder) S as N where the RR intervals meet the criteria of
    atrial fibrillation is tried too."""
    run = json.loads(run_path.read_text())
    labels = np.asarray(run["held_out"]["labels"])
    probabilities = np.asarray(run["held_out"]["probabilities"])
    fold_of = {record: i for i, fold in enumerate(run["folds"]) for record in fold["records"]}
    groups = np.array([fold_of[record] for record in run["held_out"]["records"]])
    irregularity = run["held_out"].get("irregularity") if rhythm_gate else None
    if rhythm_gate and irregularity is None:
        print(f"{run_path.stem} holds no RR irregularity of its beats (not context beats, or an older run): "
              "no rhythm gate is tried")
    irregularity = None if irregularity is None else np.asarray(irregularity)
    af = None if af_folder is None else held_out_af_criteria(run["held_out"]["records"], af_folder)
    chosen = choose_decision(probabilities, labels, groups, budget=budget, in_every_fold=in_every_fold,
                             irregularity=irregularity, af_criteria=af)
    decision = Decision.of_dict(chosen["decision"])
    figures = held_out_figures(probabilities, labels, decision, irregularity, af)
    thresholds = ", ".join(f"{c} at p >= {t:g}" for c, t in decision.min_probability.items()) or "none"
    if decision.s_max_irregularity is not None:
        thresholds += f"; S not called where the irregularity is above {decision.s_max_irregularity:g}"
    if af is not None:
        thresholds += (f"; S {'given to N' if decision.s_as_n_in_af else 'kept'} where the RR intervals meet "
                       f"the criteria of atrial fibrillation ({np.count_nonzero(af)} of {af.size} beats)")
    budget, search = chosen["ectopic_budget"], chosen["threshold_search"]
    print(f"{run_path.stem}: temperature {decision.temperature:g}; ectopic thresholds: {thresholds}; "
          f"review below confidence {decision.review_below:g}")
    where = f"in every one of {budget['folds']} folds" if budget["in_every_fold"] else "pooled"
    chosen_row, free_row = search["chosen"], search["best_regardless_of_budget"]
    print(f"budget {budget['calls_per_100_normal']:g} false ectopic calls per 100 N, {where}: "
          f"{search['settings_within_budget']} of {search['settings_tried']} settings keep it"
          + ("" if budget["kept"] else " (none: the setting with the fewest calls is taken)")
          + f"; chosen: score {chosen_row['score']:.4f}, {chosen_row['ectopic_calls_per_100_normal']:.2f} calls "
          f"(worst fold {chosen_row['worst_fold_ectopic_calls']:.2f}); best regardless of the budget: score "
          f"{free_row['score']:.4f}, {free_row['ectopic_calls_per_100_normal']:.2f} calls "
          f"(worst fold {free_row['worst_fold_ectopic_calls']:.2f})")
    calls = {key: figures[key]["ectopic_calls_per_100_normal"] for key in ("as_trained", "decided", "not_reviewed")}
    print(f"held-out ECE {figures['ece_raw']:.4f} -> {figures['ece_calibrated']:.4f}; sent to review "
          f"{100 * figures['review_share']:.1f} %; ectopic calls per 100 N {calls['as_trained']:.2f} as trained, "
          f"{calls['decided']:.2f} decided, {calls['not_reviewed']:.2f} among beats not reviewed")
    for name, key in (("as trained", "as_trained"), ("decided", "decided"), ("not reviewed", "not_reviewed")):
        cells = " ".join(f"{c} {figures[key][c]['se'] * 100:5.1f}/{figures[key][c]['ppv'] * 100:5.1f}"
                         for c in ("N", "S", "V", "F"))
        print(f"  {name:12} Se/+P {cells}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"protocol": f"pooled held-out beats of {run['folds_k']}-fold patient-grouped "
                                               "cross-validation inside DS1 (ecg-crossval --calibrate)",
                                   "run": run_path.stem, **chosen, "held_out": figures}, indent=2) + "\n")
    return 0


def format_summary(name: str, s: dict) -> str:
    cells = " ".join(f"{c} {s[c]['se'] * 100:5.1f}/{s[c]['ppv'] * 100:5.1f}" for c in ("N", "S", "V", "F"))
    return f"{name:18} score {s['score']:.4f}  macro-F1 {s['macro_f1']:.4f}  Se/+P {cells}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Patient-grouped cross-validation inside a split's training records.")
    parser.add_argument("--model", choices=("odenet", "resnet", "tree"), required=True,
                        help="network body, or the gradient-boosted tree floor on the same inputs")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="context")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set epochs=8 (repeatable)")
    parser.add_argument("--split", choices=("inter",), default="inter", help="cross-validate inside DS1")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="training and augmentation seed (folds stay fixed)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of MIT-BIH WFDB records")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--noise-data", type=Path, default=DEFAULT_NOISE_DATA,
                        help="folder of the NSTDB noise recordings bw, em, ma (recipes with real_noise)")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--sequence", choices=STAGES, default=None,
                        help="add a sequence stage over each record's beats, trained end to end with the "
                             "network (training.sequence): a GRU, or an ODE-RNN over the RR time")
    parser.add_argument("--look-ahead", type=int, default=LOOK_AHEAD, metavar="BEATS",
                        help=f"sequence stage: beats after a beat its label may read (default {LOOK_AHEAD})")
    parser.add_argument("--beat-loss", type=float, default=0.0, metavar="WEIGHT",
                        help="sequence stage: weight of the per-beat head's loss beside the sequence head's "
                             "(default 0: the sequence head's alone)")
    parser.add_argument("--choose-bias", type=Path, nargs="+", default=None, metavar="RUN.json",
                        help="instead of running: choose the logit bias from these runs' held-out probabilities")
    parser.add_argument("--calibrate", type=Path, default=None, metavar="RUN.json",
                        help="instead of running: choose the decision (temperature, F threshold, review "
                             "threshold; training.calibration) from this run's held-out probabilities")
    parser.add_argument("--ectopic-budget", type=float, default=ECTOPIC_BUDGET, metavar="CALLS",
                        help="--calibrate: normal beats called ectopic allowed per 100 held-out normal beats "
                             f"(default {ECTOPIC_BUDGET:g})")
    parser.add_argument("--budget-in-every-fold", action="store_true",
                        help="--calibrate: hold the budget in every held-out fold, not only pooled")
    parser.add_argument("--rhythm-gate", action="store_true",
                        help="--calibrate: also try not calling S in an irregular rhythm (measured, not "
                             "shipped: it removes the S beats of patients with frequent atrial ectopy)")
    parser.add_argument("--af-criteria", action="store_true",
                        help="--calibrate: also try giving S's probability to N where the RR intervals meet the "
                             "criteria of atrial fibrillation (service.signal.rhythm; reads the records in --data)")
    args = parser.parse_args(argv)
    if args.ectopic_budget < 0:
        parser.error("--ectopic-budget must be 0 or more")
    if args.af_criteria and not args.calibrate:
        parser.error("--af-criteria goes with --calibrate RUN.json")
    if args.calibrate:
        if args.af_criteria and not args.data.is_dir():
            parser.error(f"data folder {args.data} not found; --af-criteria reads the records' beat times there")
        return calibrate(args.calibrate, args.out, args.ectopic_budget, args.budget_in_every_fold, args.rhythm_gate,
                         args.data if args.af_criteria else None)
    if args.choose_bias:
        runs = [json.loads(path.read_text()) for path in args.choose_bias]
        shift, before, after = choose_logit_bias(runs)
        setting = ",".join(f"{c}:{v:g}" for c, v in shift.items())
        print(f"mean score over {len(runs)} runs: {before:.4f} as trained, {after:.4f} with logit_bias={setting} "
              f"(N sensitivity >= {MIN_N_SENSITIVITY:g})")
        print(f"--set logit_bias={setting}")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({
                "decision_rule": {"logit_bias": setting, "runs": [p.stem for p in args.choose_bias],
                                  "score_as_trained": round(before, 4), "score_with_bias": round(after, 4),
                                  "min_n_sensitivity": MIN_N_SENSITIVITY,
                                  "grid": [float(x) for x in BIAS_GRID]}}, indent=2) + "\n")
        return 0
    if not args.data.is_dir():
        parser.error(f"data folder {args.data} not found; pass --data DIR with the MIT-BIH records")
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = override(PRESETS[args.preset], args.set)
    if args.sequence and (args.model == "tree" or recipe.input != "context" or recipe.leads != 1):
        parser.error("--sequence needs a network (odenet or resnet) on one-lead context beats")
    if args.look_ahead < 0 or args.beat_loss < 0:
        parser.error("--look-ahead and --beat-loss must be 0 or more")
    started = time.perf_counter()
    probe = None
    if recipe.input == "context":  # one more augmented view, never trained on, scores robustness
        views = 1 if args.model == "tree" else recipe.variants + 1  # the tree trains on no augmented view
        data, _ = load_split(args.data, args.split, args.seed, input="context", variants=views, leads=recipe.leads,
                             augmentation=augmentation_of(recipe, args.noise_data))
        probe = data.views[-1]
        data = dataclasses.replace(data, views=data.views[:-1] if recipe.variants and args.model != "tree" else None)
        if recipe.rr_features == "basic":
            probe = without_extended_rr(probe)
            data = dataclasses.replace(data, beats=without_extended_rr(data.beats),
                                       views=None if data.views is None else without_extended_rr(data.views))
    else:
        data, _ = load_split(args.data, args.split, args.seed)
    if args.sequence:
        result = cross_validate_sequence(data, probe, args.model, recipe, args.sequence, args.folds, args.seed,
                                         args.look_ahead, args.beat_loss)
    elif args.model == "tree":
        result = cross_validate_tree(data, probe, args.folds, args.seed, leads=recipe.leads,
                                     lead_dropout=recipe.lead_dropout, waves=recipe.waves)
    else:
        result = cross_validate(data, probe, args.model, recipe, args.folds, args.seed)
    result = {"model": args.model, "preset": args.preset, "overrides": args.set, "recipe": dataclasses.asdict(recipe),
              "folds_k": args.folds, "seed": args.seed, "wall_time_s": round(time.perf_counter() - started, 1),
              **result}
    for name in ("clean", "augmented", "clean_one_lead", "augmented_one_lead"):
        if name in result:
            print(format_summary(name, result[name]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
