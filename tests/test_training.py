"""Short training runs on real beats: the loss falls, runs repeat exactly, gradients agree."""

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")  # the training extra (pyproject.toml): torch is the reference here

import numpy as np

from service.models.networks import Architecture, BeatClassifier
from training.data import load_records
from training.train import PRESETS, architecture, class_weights, fit, sample_weights


@pytest.mark.parametrize("body,preset", [("resnet", "reference"), ("odenet", "reference"), ("resnet", "conv")])
def test_loss_falls_on_a_small_subset(fixture_beats, body, preset):
    recipe = replace(PRESETS[preset], epochs=4)
    torch.manual_seed(0)
    model = BeatClassifier(Architecture(body=body, encoder=recipe.encoder))
    history = fit(model, fixture_beats, recipe, seed=0, progress=False)
    assert history[-1] < 0.7 * history[0]


@pytest.mark.parametrize("body", ["resnet", "odenet"])
def test_context_models_learn_from_augmented_recordings(fixture_dir, body):
    """The shipped recipe (context beats, two augmented recordings cut into strips, weights by class
    and by record) lowers the loss on a small subset, for both bodies."""
    data = load_records(fixture_dir, ("100", "208", "232"), input="context", variants=2)
    assert data.views.shape == (2, len(data), data.beats.shape[1])
    recipe = replace(PRESETS["context"], epochs=4)
    torch.manual_seed(0)
    model = BeatClassifier(architecture(body, recipe))
    history = fit(model, data, recipe, seed=0, progress=False)
    assert history[-1] < 0.7 * history[0]


def test_record_weights_give_every_record_a_fair_say_within_its_class():
    labels = np.array([1] * 90 + [1] * 10 + [0] * 50)
    records = np.array(["a"] * 90 + ["b"] * 10 + ["a"] * 50)
    recipe = replace(PRESETS["context"], class_weighting="none", record_weighting=0.0)
    weights = sample_weights(labels, records, recipe).numpy()
    assert weights[:90].sum() == pytest.approx(weights[90:100].sum())  # q = 0: each record the same total
    assert weights[:100].sum() == pytest.approx(100)  # and the class keeps its total
    half = sample_weights(labels, records, replace(recipe, record_weighting=0.5)).numpy()
    assert weights[90] > half[90] > 1.0


def test_same_seed_same_weights(fixture_beats):
    recipe = replace(PRESETS["conv"], epochs=1)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = BeatClassifier(Architecture(body="resnet", encoder="conv"))
        fit(model, fixture_beats, recipe, seed=3, progress=False)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_class_weights_lift_rare_classes(fixture_beats):
    weights = class_weights(fixture_beats.labels, "sqrt")
    counts = torch.bincount(torch.from_numpy(fixture_beats.labels), minlength=5)
    assert weights[2] > weights[0]  # V is rarer than N in the excerpts
    assert class_weights(fixture_beats.labels, "none") is None
    assert counts[0] > counts[2]


def test_adjoint_and_direct_backprop_give_the_same_gradient(fixture_beats):
    beats = torch.from_numpy(fixture_beats.beats[:32])
    labels = torch.from_numpy(fixture_beats.labels[:32])
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(0)
        model = BeatClassifier(Architecture(body="odenet", adjoint=adjoint)).train()
        torch.nn.functional.cross_entropy(model(beats), labels).backward()
        grads.append(model.body.dynamics.layer.linear.weight.grad)
    assert torch.allclose(grads[0], grads[1], rtol=0.05, atol=1e-3)


def test_patient_adversary_trains_without_joining_the_network(fixture_beats):
    """The adversarial record head (gradient reversal) changes the training, not the network: the
    trained classifier has exactly the parameters and buffers of one trained without it."""
    recipe = replace(PRESETS["conv"], epochs=1)
    states = []
    for adversary in (0.0, 0.5):
        torch.manual_seed(0)
        model = BeatClassifier(Architecture(body="resnet", encoder="conv"))
        history = fit(model, fixture_beats, replace(recipe, patient_adversary=adversary), seed=0, progress=False)
        assert np.isfinite(history).all()
        states.append(model.state_dict())
    assert list(states[1]) == list(states[0])
    assert all(states[1][k].shape == states[0][k].shape for k in states[0])
    assert not torch.equal(states[1]["encoder.1.weight"], states[0]["encoder.1.weight"])  # it did act
