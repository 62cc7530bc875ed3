"""The sequence stage over a strip's beats (training.sequence): its look-ahead is bounded, the
ODE-RNN follows the real RR time and the request's tolerance, and it learns end to end."""

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")  # the training extra (pyproject.toml)

import numpy as np

from service.models.networks import BeatClassifier, SolverConfig
from training import crossval
from training.data import load_records
from training.sequence import LOOK_AHEAD, SequenceClassifier, fit_sequence, predict_sequences
from training.train import PRESETS, architecture


@pytest.fixture(scope="module")
def record_208(fixture_dir):
    """Context beats of fixture 208 (two minutes, ventricular runs and couplets) as one sequence."""
    data = load_records(fixture_dir, ("208",), input="context")
    gaps = np.r_[0.0, np.diff(data.samples) / 360.0].astype(np.float32)
    return torch.from_numpy(data.beats[None]), torch.from_numpy(gaps[None])


def network(stage: str, body: str = "resnet") -> SequenceClassifier:
    torch.manual_seed(0)
    return SequenceClassifier(BeatClassifier(architecture(body, PRESETS["context"])), stage).eval()


@pytest.mark.parametrize("stage", ["gru", "odernn"])
def test_a_label_reads_exactly_its_look_ahead_and_no_further(record_208, stage):
    """Beat i's answer changes with beat i + LOOK_AHEAD and never with anything after it: appending
    beats to a strip leaves every earlier label alone, so a live strip's labels come two beats late."""
    beats, gaps = record_208
    model = network(stage)
    with torch.no_grad():
        short = model(beats[:, :60], gaps[:, :60])
        long = model(beats[:, :100], gaps[:, :100])
        changed = beats.clone()
        changed[:, 60] = changed[:, 10]  # beat 60 becomes another beat
        after = model(changed[:, :100], gaps[:, :100])
    cut = 60 - LOOK_AHEAD
    assert torch.allclose(short[0, :cut], long[0, :cut], atol=1e-6)
    assert not torch.allclose(short[0, cut:], long[0, cut:60])  # the last two beats waited for theirs
    reach = (after[0] - long[0]).abs().amax(dim=1) > 1e-6
    assert reach.nonzero().min().item() == 60 - LOOK_AHEAD  # beat 58 is the first to see beat 60


def test_labels_of_an_ode_body_do_not_depend_on_appended_beats(record_208):
    """With the ODE-Net body the beats share adaptive solves; labels still do not change."""
    beats, gaps = record_208
    model = network("odernn", body="odenet")
    with torch.no_grad():
        short = model(beats[:, :60], gaps[:, :60]).argmax(-1)
        long = model(beats[:, :100], gaps[:, :100]).argmax(-1)
    assert torch.equal(short[0, :60 - LOOK_AHEAD], long[0, :60 - LOOK_AHEAD])


def test_only_the_ode_rnn_follows_the_rr_time(record_208):
    """Same beats, every interval doubled: the ODE-RNN's hidden state evolves longer between beats;
    the GRU, which only sees the order of the beats, answers the same."""
    beats, gaps = record_208
    with torch.no_grad():
        for stage, moves in (("odernn", True), ("gru", False)):
            model = network(stage)
            a, b = model(beats, gaps), model(beats, 2 * gaps)
            assert (not torch.allclose(a, b, atol=1e-5)) is moves


def test_the_request_tolerance_reaches_the_between_beat_solves(record_208):
    beats, gaps = record_208
    model = network("odernn")
    nfe = {}
    with torch.no_grad():
        for rtol in (1e-2, 1e-6):
            model(beats[:, :50], gaps[:, :50], solver=SolverConfig(rtol=rtol, atol=rtol))
            nfe[rtol] = model.nfe
    assert nfe[1e-6] > nfe[1e-2] > 0


def test_a_padded_batch_answers_each_record_as_if_alone(fixture_dir):
    """Held-out records are read in one padded batch; a short record's last beats read its own end."""
    data = load_records(fixture_dir, ("100", "208"), input="context")
    model = network("gru")
    together = predict_sequences(model, data.beats, data.records, data.samples)
    for record in ("100", "208"):
        alone = data.records == record
        single = predict_sequences(model, data.beats[alone], data.records[alone], data.samples[alone])
        assert np.allclose(together[alone], single, atol=1e-5)


@pytest.mark.parametrize("stage,beat_loss", [("gru", 0.0), ("odernn", 0.0), ("odernn", 1.0)])
def test_the_whole_network_learns_on_sequences(fixture_dir, stage, beat_loss):
    data = load_records(fixture_dir, ("100", "208", "232"), input="context", variants=1)
    recipe = replace(PRESETS["context"], epochs=4)
    model = network(stage)
    history = fit_sequence(model, data, recipe, seed=0, beat_loss=beat_loss)
    assert history[-1] < 0.7 * history[0]


@pytest.mark.parametrize("args,message", [
    (["--model", "tree", "--sequence", "gru"], "--sequence needs a network"),
    (["--model", "odenet", "--sequence", "gru", "--look-ahead", "-1"], "must be 0 or more")])
def test_crossval_refuses_a_sequence_stage_it_cannot_run(capsys, fixture_dir, args, message):
    with pytest.raises(SystemExit) as exit:
        crossval.main([*args, "--data", str(fixture_dir)])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
