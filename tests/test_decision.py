"""Calibrated confidence, the ectopic thresholds and the review flag: chosen in cross-validation
(training.calibration), applied by the service (service.models.decision) to every answer."""

import json
import shutil

import numpy as np
import pytest
import wfdb
from fastapi.testclient import TestClient

from service.app import create_app
from service.models.decision import Decision
from service.signal.beats import CLASSES
from service.settings import Settings
from training.calibration import choose_decision, expected_calibration_error, fit_temperature, held_out_figures

from conftest import FIXTURES, MODELS

N, S, V, F, Q = range(5)


def overconfident(n: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) and probabilities softmax(z * temperature): a network that is
    `temperature` times too sure of itself."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, size=(n, 5))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(5, p=p) for p in true])
    shown = np.exp(logits * temperature)
    return shown / shown.sum(1, keepdims=True), labels


def test_the_fitted_temperature_undoes_overconfidence_and_lowers_the_calibration_error():
    probabilities, labels = overconfident(20_000, temperature=2.5)
    t = fit_temperature(probabilities, labels)
    assert t == pytest.approx(2.5, rel=0.1)
    decided = Decision(temperature=t)(probabilities)
    raw_error = expected_calibration_error(probabilities.max(1), probabilities.argmax(1) == labels)
    assert expected_calibration_error(decided.confidence, decided.labels == labels) < raw_error / 3


def test_temperature_keeps_the_argmax_and_the_rows_sum_to_one():
    probabilities, _ = overconfident(500, temperature=3.0)
    calibrated = Decision(temperature=2.0).calibrated(probabilities)
    assert np.array_equal(calibrated.argmax(1), probabilities.argmax(1))
    assert np.allclose(calibrated.sum(1), 1.0)
    assert np.all(calibrated.max(1) <= probabilities.max(1) + 1e-12)  # T > 1 only softens


def test_fusion_below_its_threshold_takes_the_next_class_and_the_confidence_is_that_class():
    probabilities = np.array([[0.30, 0.00, 0.10, 0.60, 0.00],   # F 0.6 < 0.7: N
                              [0.05, 0.00, 0.15, 0.80, 0.00],   # F 0.8: stays F
                              [0.10, 0.00, 0.35, 0.55, 0.00]])  # F 0.55: V
    decided = Decision(min_probability={"F": 0.7}, review_below=0.5)(probabilities)
    assert [CLASSES[i] for i in decided.labels] == ["N", "F", "V"]
    assert decided.confidence.tolist() == pytest.approx([0.30, 0.80, 0.35])
    assert decided.review.tolist() == [True, False, True]


def test_an_ectopic_class_below_its_threshold_gives_way_to_the_best_class_that_passes():
    probabilities = np.array([[0.30, 0.45, 0.25, 0.00, 0.00],   # S 0.45 < 0.5, V 0.25 < 0.6: N
                              [0.10, 0.45, 0.40, 0.05, 0.00],   # S held back, V 0.40 < 0.6: N
                              [0.05, 0.30, 0.65, 0.00, 0.00],   # V 0.65 passes: V
                              [0.20, 0.55, 0.25, 0.00, 0.00],   # S 0.55 passes: S
                              [0.10, 0.30, 0.20, 0.00, 0.40]])  # Q is never held back
    decided = Decision(min_probability={"S": 0.5, "V": 0.6})(probabilities)
    assert [CLASSES[i] for i in decided.labels] == ["N", "N", "V", "S", "Q"]
    assert decided.confidence.tolist() == pytest.approx([0.30, 0.10, 0.65, 0.55, 0.40])


def test_s_is_not_called_in_an_irregular_rhythm_and_the_gate_needs_the_rhythm():
    probabilities = np.tile([0.30, 0.60, 0.10, 0.00, 0.00], (3, 1))
    gated = Decision(s_max_irregularity=0.3)
    decided = gated(probabilities, irregularity=np.array([0.05, 0.3, 0.9]))
    assert [CLASSES[i] for i in decided.labels] == ["S", "S", "N"]
    assert decided.confidence.tolist() == pytest.approx([0.60, 0.60, 0.30])
    with pytest.raises(ValueError, match="irregular rhythm"):
        gated(probabilities)
    assert Decision()(probabilities).labels.tolist() == [S, S, S]  # no gate: no rhythm needed


def test_a_card_written_with_an_f_threshold_alone_reads_as_before():
    legacy = Decision.of_card({"decision": {"temperature": 1.5, "f_min_probability": 0.8, "review_below": 0.6}})
    assert legacy == Decision(1.5, {"F": 0.8}, 0.6) and legacy.s_max_irregularity is None
    assert Decision.of_dict(legacy.as_dict()) == legacy
    assert Decision.of_card({"decision": {"temperature": 1.2, "f_min_probability": None}}).min_probability == {}
    with pytest.raises(ValueError, match="S, V, F only"):
        Decision(min_probability={"N": 0.5})


def test_a_card_without_a_decision_answers_argmax_and_no_review_flag():
    probabilities = np.array([[0.2, 0.1, 0.6, 0.1, 0.0]])
    decided = Decision.of_card({"name": "x"})(probabilities)
    assert decided.labels.tolist() == [V] and decided.review is None
    assert np.array_equal(decided.probabilities, probabilities)


def test_the_review_threshold_sends_about_five_percent_of_held_out_beats_to_review():
    probabilities, labels = overconfident(10_000, temperature=1.5, seed=1)
    chosen = choose_decision(probabilities, labels)
    figures = held_out_figures(probabilities, labels, Decision.of_dict(chosen["decision"]))
    assert figures["review_share"] == pytest.approx(0.05, abs=0.005)
    # The beats kept are the sure ones: the error rate among them is below the overall one.
    decided = Decision.of_dict(chosen["decision"])(probabilities)
    kept = ~decided.review
    assert np.mean(decided.labels[kept] != labels[kept]) < np.mean(decided.labels != labels)


def test_the_fusion_threshold_stops_normal_beats_called_f_and_keeps_the_fusion_beats():
    rng = np.random.default_rng(2)
    # Normal beats the network calls F at 0.55-0.7, fusion beats called F at 0.85-0.95.
    normal = np.tile([0.3, 0.0, 0.0, 0.7, 0.0], (300, 1)) + rng.uniform(-0.05, 0, (300, 1)) * [[-1, 0, 0, 1, 0]]
    fusion = np.tile([0.1, 0.0, 0.0, 0.9, 0.0], (60, 1))
    probabilities = np.vstack([normal, fusion, np.tile([0.97, 0.01, 0.01, 0.01, 0.0], (2000, 1))])
    labels = np.array([N] * 300 + [F] * 60 + [N] * 2000)
    chosen = choose_decision(probabilities, labels)["decision"]
    f_min = chosen["min_probability"]["F"]
    calibrated = Decision(chosen["temperature"]).calibrated(probabilities)
    assert calibrated[:300, F].max() < f_min <= calibrated[300:360, F].min()


def held_out_with_one_noisy_fold(rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Five folds of 1,000 normal beats and 60 S beats (S probability 0.55-0.95); in fold 0 only,
    100 normal beats look supraventricular (S probability 0.60-0.68): 10 false calls per 100 N
    there, 2 per 100 N pooled, and cutting them also costs true S beats."""
    probabilities, labels, groups = [], [], []
    for fold in range(5):
        s_p = rng.uniform(0.55, 0.95, 60)
        p = np.column_stack([1 - s_p, s_p, np.zeros((60, 3))])
        normal = np.tile([0.97, 0.03, 0.0, 0.0, 0.0], (1000, 1))
        if fold == 0:
            s_n = rng.uniform(0.60, 0.68, 100)
            normal[:100] = np.column_stack([1 - s_n, s_n, np.zeros((100, 3))])
        probabilities += [p, normal]
        labels += [S] * 60 + [N] * 1000
        groups += [fold] * 1060
    return np.vstack(probabilities), np.array(labels), np.array(groups)


def test_the_false_call_budget_can_be_held_in_every_held_out_fold_not_only_pooled():
    probabilities, labels, groups = held_out_with_one_noisy_fold(np.random.default_rng(3))
    per_fold = choose_decision(probabilities, labels, groups, budget=3.0, in_every_fold=True)
    pooled = choose_decision(probabilities, labels, groups, budget=3.0)  # 2 per 100 N pooled is within 3
    assert per_fold["ectopic_budget"]["kept"] and per_fold["ectopic_budget"]["folds"] == 5
    assert per_fold["ectopic_budget"]["in_every_fold"] and not pooled["ectopic_budget"]["in_every_fold"]
    assert pooled["threshold_search"]["chosen"]["worst_fold_ectopic_calls"] > 3.0
    strict, loose = (Decision.of_dict(c["decision"])(probabilities).labels for c in (per_fold, pooled))
    noisy_normals = (groups == 0) & (labels == N)
    assert 100 * np.mean(strict[noisy_normals] != N) <= 3.0
    assert 100 * np.mean(loose[noisy_normals] != N) > 3.0
    assert "S" in per_fold["decision"]["min_probability"]
    assert 0.2 < np.mean(strict[labels == S] == S) < np.mean(loose[labels == S] == S)  # what the budget costs
    search = per_fold["threshold_search"]
    assert search["chosen"]["worst_fold_ectopic_calls"] <= 3.0
    assert search["best_regardless_of_budget"]["score"] >= search["chosen"]["score"]


def test_a_pooled_budget_cuts_the_calls_a_network_makes_beyond_it():
    probabilities, labels, groups = held_out_with_one_noisy_fold(np.random.default_rng(6))
    unlimited = choose_decision(probabilities, labels, groups, budget=100.0)
    strict = choose_decision(probabilities, labels, groups, budget=1.0)
    calls = {name: 100 * np.mean(Decision.of_dict(c["decision"])(probabilities).labels[labels == N] != N)
             for name, c in (("unlimited", unlimited), ("strict", strict))}
    assert calls["unlimited"] > 1.0 >= calls["strict"]
    assert strict["threshold_search"]["chosen"]["ectopic_calls_per_100_normal"] == pytest.approx(calls["strict"], abs=1e-3)


def test_the_rhythm_gate_is_chosen_where_false_s_calls_come_from_an_irregular_rhythm():
    probabilities, labels, groups = held_out_with_one_noisy_fold(np.random.default_rng(7))
    rng = np.random.default_rng(8)
    irregularity = rng.uniform(0.0, 0.1, labels.size)  # regular rhythm everywhere...
    fold0_normals = np.flatnonzero((groups == 0) & (labels == N))
    irregularity[fold0_normals] = rng.uniform(0.4, 0.9, fold0_normals.size)  # ...but fold 0 fibrillates
    without = choose_decision(probabilities, labels, groups, budget=1.0)
    with_gate = choose_decision(probabilities, labels, groups, budget=1.0, irregularity=irregularity)
    assert without["decision"]["s_max_irregularity"] is None
    gate = with_gate["decision"]["s_max_irregularity"]
    assert gate is not None and 0.1 <= gate <= 0.4  # S held back above it: every fibrillating beat
    found = {name: Decision.of_dict(c["decision"])(probabilities, irregularity=irregularity).labels
             for name, c in (("without", without), ("with", with_gate))}
    assert np.mean(found["with"][labels == S] == S) > np.mean(found["without"][labels == S] == S)
    assert with_gate["threshold_search"]["chosen"]["score"] > without["threshold_search"]["chosen"]["score"]


def test_an_unreachable_budget_takes_the_setting_with_the_fewest_calls_and_says_so():
    probabilities, labels, groups = held_out_with_one_noisy_fold(np.random.default_rng(4))
    # Q is never held back: 100 more normal beats of fold 0 called Q keep it at 10 calls per 100 N
    called_q = np.flatnonzero((groups == 0) & (labels == N))[100:200]
    probabilities[called_q] = [0.1, 0.0, 0.0, 0.0, 0.9]
    chosen = choose_decision(probabilities, labels, groups, budget=3.0, in_every_fold=True)
    assert not chosen["ectopic_budget"]["kept"]
    assert chosen["threshold_search"]["settings_within_budget"] == 0
    assert "S" in chosen["decision"]["min_probability"]  # the false S calls are still cut
    assert chosen["threshold_search"]["chosen"]["worst_fold_ectopic_calls"] == pytest.approx(10.0)


@pytest.fixture(scope="module")
def decided_models(tmp_path_factory):
    """The shipped context-odenet with a decision in its card (what `ecg-evaluate --decision
    --write-card` records), beside the shipped resnet, which has none."""
    folder = tmp_path_factory.mktemp("models")
    for name in ("context-odenet", "resnet"):
        shutil.copytree(MODELS / name, folder / name)
    card_path = folder / "context-odenet" / "card.json"
    card = json.loads(card_path.read_text())
    card["decision"] = {"temperature": 1.7, "min_probability": {"F": 0.8}, "review_below": 0.9,
                        "s_max_irregularity": 0.3}
    card_path.write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="module")
def client(decided_models):
    settings = Settings(models_dir=decided_models, default_context_model="context-odenet", default_model="resnet")
    with TestClient(create_app(settings)) as c:
        yield c


def strip_body(record: str = "208") -> dict:
    signal = wfdb.rdrecord(str(FIXTURES / record), channel_names=["MLII"])
    return {"sampling_rate": signal.fs, "signal": signal.p_signal[:, 0].round(4).tolist()}


def test_every_strip_beat_carries_the_decided_label_its_confidence_and_review_flag(client):
    answer = client.post("/predict/strip", json=strip_body()).json()
    beats = answer["beats"]
    assert beats and answer["model"] == "context-odenet"
    for beat in beats:
        p = beat["probabilities"]
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-5)
        assert beat["confidence"] == pytest.approx(p[beat["label"]], abs=1e-6)
        assert beat["review"] == (beat["confidence"] < 0.9)
        if beat["label"] != "F":
            assert p["F"] < 0.8 or max(p, key=p.get) != "F"
        else:
            assert p["F"] >= 0.8
    flagged = sum(b["review"] for b in beats)
    assert flagged and answer["report"]["review"]["beats"] == flagged
    assert answer["report"]["review"]["share"] == pytest.approx(flagged / len(beats), abs=1e-3)


def premature_context_beats(irregularity: float) -> list[dict]:
    """Normal beats of record 208 sent as premature ones (pre-RR 55 % of the local rhythm, then a
    compensatory pause) in a rhythm of the given irregularity: what the network calls S."""
    from service.signal.context import RR_FIELDS, context_beats
    from training.data import read_record

    record = read_record(FIXTURES, "208")
    beats = context_beats(record.signal, record.fs, record.samples)
    out = []
    for i in np.flatnonzero(record.labels == N)[10:60]:
        rr = dict(zip(RR_FIELDS, beats.rr[i].tolist()))
        local = rr["local_rr"]
        out.append({"window": beats.windows[i].tolist(), "template": beats.templates[i].tolist(),
                    "pre_rr": 0.55 * local, "post_rr": 1.45 * local, "prev_rr": local, "local_rr": local,
                    "long_rr": rr["long_rr"], "irregularity": irregularity})
    return out


def test_premature_beats_are_s_in_a_regular_rhythm_and_never_s_in_an_irregular_one(client):
    answers = {irregularity: client.post("/predict", json={"model": "context-odenet",
                                                           "context_beats": premature_context_beats(irregularity)})
               for irregularity in (0.05, 0.9)}
    assert all(a.status_code == 200 for a in answers.values())
    regular, irregular = ([p["label"] for p in answers[k].json()["predictions"]] for k in (0.05, 0.9))
    assert regular.count("S") >= 10
    assert "S" not in irregular
    for beat in answers[0.9].json()["predictions"]:  # the label is the best class that passes
        p = {c: v for c, v in beat["probabilities"].items() if c != "S" and not (c == "F" and v < 0.8)}
        assert beat["label"] == max(p, key=p.get)


def test_a_model_without_a_decision_answers_confidence_and_null_review(client, fixture_beats):
    answer = client.post("/predict", json={"model": "resnet", "beats": fixture_beats.beats[:3].tolist()}).json()
    for beat in answer["predictions"]:
        assert beat["review"] is None
        assert beat["confidence"] == pytest.approx(max(beat["probabilities"].values()), abs=1e-6)


def test_the_annotation_file_marks_the_beats_for_review(client, tmp_path):
    answer = client.post("/predict/strip", json=strip_body()).json()
    download = client.post("/predict/strip?format=atr", json=strip_body())
    assert download.status_code == 200
    (tmp_path / "strip.ecg").write_bytes(download.content)
    annotation = wfdb.rdann(str(tmp_path / "strip"), "ecg")
    beat_notes = [note for symbol, note in zip(annotation.symbol, annotation.aux_note) if symbol != '"']
    assert [note == "review" for note in beat_notes] == [b["review"] for b in answer["beats"]]


def test_oip_outputs_the_confidence_and_the_review_flag(client):
    metadata = client.get("/v2/models/context-odenet").json()
    assert {"confidence", "review"} <= {o["name"] for o in metadata["outputs"]}
    beats = np.zeros((2, metadata["inputs"][0]["shape"][1]), dtype=np.float32)
    body = {"inputs": [{"name": "beats", "datatype": "FP32", "shape": list(beats.shape),
                        "data": beats.ravel().tolist()}]}
    outputs = {o["name"]: o for o in client.post("/v2/models/context-odenet/infer", json=body).json()["outputs"]}
    assert outputs["review"]["datatype"] == "BOOL" and len(outputs["review"]["data"]) == 2
    assert outputs["confidence"]["data"][0] == pytest.approx(max(outputs["probabilities"]["data"][:5]), abs=1e-6)


@pytest.mark.parametrize("name", ["context-odenet", "context-resnet", "context-odenet-ds1", "context-resnet-ds1"])
def test_the_context_models_carry_a_decision_chosen_inside_ds1(name):
    card = json.loads((MODELS / name / "card.json").read_text())
    decision = card["decision"]
    assert decision["temperature"] > 1  # the networks were over-confident on held-out patients
    chosen = decision["chosen_by"]
    assert "inside DS1" in chosen["protocol"]
    assert chosen["held_out"]["review_share"] == pytest.approx(0.05, abs=0.002)
    # the labels' confidence is within 3 points of how often they are right on held-out patients
    # (the ODE-Net's thresholds give some beats a label below their top probability: 0.022 -> 0.024)
    assert chosen["held_out"]["ece_calibrated"] < 0.03
    if name.endswith("-ds1"):  # the figures on DS2 are scored through the decision the service applies
        on_ds2 = card["metrics"]["inter_DS2"]["decision"]
        assert 0.03 < on_ds2["review_share"] < 0.08
        calls = {k: on_ds2[k]["ectopic_calls_per_100_normal"] for k in ("not_reviewed", "decided")}
        assert calls["not_reviewed"] < calls["decided"]
