"""Calibrated confidence, the fusion threshold and the review flag: chosen in cross-validation
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
    decided = Decision(f_min_probability=0.7, review_below=0.5)(probabilities)
    assert [CLASSES[i] for i in decided.labels] == ["N", "F", "V"]
    assert decided.confidence.tolist() == pytest.approx([0.30, 0.80, 0.35])
    assert decided.review.tolist() == [True, False, True]


def test_a_card_without_a_decision_answers_argmax_and_no_review_flag():
    probabilities = np.array([[0.2, 0.1, 0.6, 0.1, 0.0]])
    decided = Decision.of_card({"name": "x"})(probabilities)
    assert decided.labels.tolist() == [V] and decided.review is None
    assert np.array_equal(decided.probabilities, probabilities)


def test_the_review_threshold_sends_about_five_percent_of_held_out_beats_to_review():
    probabilities, labels = overconfident(10_000, temperature=1.5, seed=1)
    chosen = choose_decision(probabilities, labels)
    figures = held_out_figures(probabilities, labels, Decision(**chosen["decision"]))
    assert figures["review_share"] == pytest.approx(0.05, abs=0.005)
    # The beats kept are the sure ones: the error rate among them is below the overall one.
    decided = Decision(**chosen["decision"])(probabilities)
    kept = ~decided.review
    assert np.mean(decided.labels[kept] != labels[kept]) < np.mean(decided.labels != labels)


def test_the_fusion_threshold_is_the_one_with_the_best_held_out_f1_of_f():
    rng = np.random.default_rng(2)
    # Normal beats the network calls F at 0.55-0.7, fusion beats called F at 0.85-0.95.
    normal = np.tile([0.3, 0.0, 0.0, 0.7, 0.0], (300, 1)) + rng.uniform(-0.05, 0, (300, 1)) * [[-1, 0, 0, 1, 0]]
    fusion = np.tile([0.1, 0.0, 0.0, 0.9, 0.0], (60, 1))
    probabilities = np.vstack([normal, fusion, np.tile([0.97, 0.01, 0.01, 0.01, 0.0], (2000, 1))])
    labels = np.array([N] * 300 + [F] * 60 + [N] * 2000)
    chosen = choose_decision(probabilities, labels)["decision"]
    f_min = chosen["f_min_probability"]
    assert f_min is not None
    calibrated = Decision(chosen["temperature"]).calibrated(probabilities)
    assert calibrated[:300, F].max() < f_min <= calibrated[300:360, F].min()


@pytest.fixture(scope="module")
def decided_models(tmp_path_factory):
    """The shipped context-odenet with a decision in its card (what `ecg-evaluate --decision
    --write-card` records), beside the shipped resnet, which has none."""
    folder = tmp_path_factory.mktemp("models")
    for name in ("context-odenet", "resnet"):
        shutil.copytree(MODELS / name, folder / name)
    card_path = folder / "context-odenet" / "card.json"
    card = json.loads(card_path.read_text())
    card["decision"] = {"temperature": 1.7, "f_min_probability": 0.8, "review_below": 0.9}
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
    assert chosen["held_out"]["ece_calibrated"] < chosen["held_out"]["ece_raw"]
    if name.endswith("-ds1"):  # the figures on DS2 are scored through the decision the service applies
        on_ds2 = card["metrics"]["inter_DS2"]["decision"]
        assert 0.03 < on_ds2["review_share"] < 0.08
        calls = {k: on_ds2[k]["ectopic_calls_per_100_normal"] for k in ("not_reviewed", "decided")}
        assert calls["not_reviewed"] < calls["decided"]
