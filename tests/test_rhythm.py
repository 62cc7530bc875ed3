"""The AF criteria of the RR intervals (service.signal.rhythm) and what the decision does with them:
no S call where the rhythm is random, the same labels elsewhere, on strips as the service answers them."""

import numpy as np
import pytest
import wfdb
from fastapi.testclient import TestClient

from service.app import create_app
from service.models.decision import Decision
from service.signal.rhythm import INTERVALS, af_criteria
from service.settings import Settings
from service.signal.strips import strip_beats

from conftest import MODELS

N, S = 0, 1


def times_of(intervals) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(intervals)])


def sinus_with_premature_beats(beats: int, every: int, rng) -> np.ndarray:
    """A sinus rhythm near 75 / min with breathing, and a premature beat with its compensatory pause
    every `every` beats."""
    intervals = 0.8 + 0.03 * np.sin(np.arange(beats) / 4) + rng.normal(0, 0.005, beats)
    for k in range(every, beats - 1, every):
        intervals[k], intervals[k + 1] = 0.5, 1.1
    return times_of(intervals)


def test_a_random_rhythm_meets_the_criteria_once_128_intervals_are_known():
    flags = af_criteria(times_of(np.random.default_rng(0).uniform(0.4, 1.1, 400)))
    assert not flags[:INTERVALS].any()
    assert flags[INTERVALS:].mean() > 0.95


def test_sinus_rhythm_with_isolated_premature_beats_does_not():
    rng = np.random.default_rng(1)
    assert not af_criteria(sinus_with_premature_beats(600, 20, rng)).any()
    assert not af_criteria(times_of(np.full(400, 0.8))).any()


def test_a_beats_flag_never_changes_when_beats_are_appended():
    times = times_of(np.random.default_rng(2).uniform(0.4, 1.1, 500))
    regular = times[-1] + np.cumsum(np.full(300, 0.8))
    whole = af_criteria(np.concatenate([times, regular]))
    for stop in (100, 129, 200, 450, 501):
        assert np.array_equal(af_criteria(times[:stop]), whole[:stop])
    assert whole[:501].mean() > 0.6 and not whole[-100:].any()  # the flags follow the rhythm


def test_short_strips_are_never_flagged():
    assert not af_criteria(np.array([])).any()
    assert not af_criteria(times_of(np.random.default_rng(3).uniform(0.4, 1.1, INTERVALS - 1))).any()


def test_the_decision_gives_s_to_n_on_flagged_beats_only():
    probabilities = np.array([[0.3, 0.6, 0.05, 0.03, 0.02], [0.3, 0.6, 0.05, 0.03, 0.02]])
    flags = np.array([True, False])
    decided = Decision(s_as_n_in_af=True)(probabilities, af_criteria=flags)
    assert decided.labels.tolist() == [N, S]
    assert decided.confidence[0] == pytest.approx(0.9)
    assert decided.probabilities[0, S] == 0.0 and np.allclose(decided.probabilities.sum(axis=1), 1.0)
    assert Decision(s_as_n_in_af=True)(probabilities).labels.tolist() == [S, S]  # no strip, no flags
    assert Decision()(probabilities, af_criteria=flags).labels.tolist() == [S, S]  # a decision without it
    assert Decision.of_dict(Decision(s_as_n_in_af=True).as_dict()).s_as_n_in_af
    assert not Decision.of_dict({"temperature": 1.2}).s_as_n_in_af  # cards written before it
    with pytest.raises(ValueError, match="flags for 2 beats"):
        Decision(s_as_n_in_af=True)(probabilities, af_criteria=flags[:1])


def test_calibration_gives_s_to_n_where_the_false_s_calls_are_in_random_rhythm():
    from training.calibration import choose_decision

    rng = np.random.default_rng(4)
    labels = np.array([N] * 900 + [S] * 100)
    flags = np.zeros(labels.size, dtype=bool)
    flags[:300] = True  # 300 normal beats in a random rhythm, the model calls them S
    probabilities = np.tile([0.9, 0.05, 0.03, 0.01, 0.01], (labels.size, 1))
    probabilities[:300] = [0.3, 0.65, 0.03, 0.01, 0.01]
    probabilities[900:] = [0.2, 0.75, 0.03, 0.01, 0.01]
    probabilities = probabilities * rng.uniform(0.95, 1.05, probabilities.shape)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    assert choose_decision(probabilities, labels, af_criteria=flags)["decision"]["s_as_n_in_af"]
    assert not choose_decision(probabilities, labels)["decision"]["s_as_n_in_af"]


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(models_dir=MODELS))) as c:
        yield c


def test_a_strip_in_atrial_fibrillation_gets_no_s_call_where_the_criteria_hold(client, mitdb_dir):
    """Record 219 (atrial fibrillation; a DS2 patient the DS1 model never saw), 8 minutes of MLII."""
    record = wfdb.rdrecord(str(mitdb_dir / "219"), sampto=8 * 60 * 360, channels=[0])
    signal = record.p_signal[:, 0]
    body = client.post("/predict/strip", json={"sampling_rate": 360, "signal": signal.tolist(),
                                               "model": "context-odenet-ds1"}).json()
    assert not body["report"]["unreadable"]  # every detection is in the answer: its times are the rhythm judged
    times = np.array([b["time_s"] for b in body["beats"]])
    labels = np.array([b["label"] for b in body["beats"]])
    flags = af_criteria(times)
    assert flags.sum() > 200 and not np.any(labels[flags] == "S")
    assert [b["af_criteria"] for b in body["beats"]] == flags.tolist()  # each beat says why it is not S
    assert all(b["probabilities"]["S"] == 0.0 for b, f in zip(body["beats"], flags) if f)
    # the same beats through the same model and decision without the strip's beat times call S there
    loaded = client.app.state.registry.models["context-odenet-ds1"]
    found = strip_beats(signal, 360.0, "context")
    assert np.array_equal(found.peaks / 360.0, times)
    ungated = loaded.decision(loaded.predictor.predict(found.beats).probabilities, found.beats)
    assert np.count_nonzero(ungated.labels[flags] == S) > 20
    assert np.array_equal(np.array(["NSVFQ"[i] for i in ungated.labels])[~flags], labels[~flags])


def test_models_that_do_not_read_the_rhythm_say_so(client, fixture_dir):
    record = wfdb.rdrecord(str(fixture_dir / "100"))
    body = client.post("/predict/strip", json={"sampling_rate": 360, "signal": record.p_signal[:, 0].tolist(),
                                               "model": "odenet"}).json()
    assert body["beats"] and all(b["af_criteria"] is None for b in body["beats"])
    context = client.post("/predict/strip", json={"sampling_rate": 360, "signal": record.p_signal[:, 0].tolist()}).json()
    assert all(b["af_criteria"] is False for b in context["beats"])  # two minutes of sinus rhythm


def test_false_detections_in_noise_do_not_make_the_rhythm_look_random(mitdb_dir):
    """The flags are judged on the beats the quality gate keeps: 45 s of white noise in a sinus
    rhythm (record 100) gives the detector a burst of random "beats", which would meet the criteria
    if they counted (they do with the gate off); with the gate they are dropped and no beat is flagged."""
    signal = wfdb.rdrecord(str(mitdb_dir / "100"), sampto=6 * 60 * 360, channels=[0]).p_signal[:, 0].copy()
    signal[150 * 360:195 * 360] = np.random.default_rng(5).normal(0, 0.3, 45 * 360)
    gated, ungated = strip_beats(signal, 360.0, "context"), strip_beats(signal, 360.0, "context", gate=False)
    assert gated.unreadable and gated.peaks.size < ungated.peaks.size
    assert ungated.af_criteria.sum() > 20
    assert gated.peaks.size > 300 and not gated.af_criteria.any()
    assert strip_beats(signal, 360.0, "beat").af_criteria is None  # 187-sample beats carry no rhythm
