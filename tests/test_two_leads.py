"""Two-lead context beats: the input layout, the two-lead encoder, and one-lead artefacts unchanged."""

import numpy as np
import pytest
import torch

from service.models.artefacts import load_model
from service.models.networks import Architecture, BeatClassifier, ContextEncoder
from service.signal.context import (
    CONTEXT_INPUT, HAS_SECOND_LEAD, SECOND_LEAD_INPUT, TWO_LEAD_INPUT, WINDOW_LENGTH, context_beats, network_input,
    two_lead_input, without_second_lead,
)
from training.augment import Augmentation, augmented_context, augmented_leads
from training.data import read_record, record_context
from training.train import PRESETS, architecture, fit, override

from conftest import MODELS


@pytest.fixture(scope="module")
def record_208(fixture_dir):
    return read_record(fixture_dir, "208", leads=2)


def test_two_lead_input_starts_with_the_one_lead_input(record_208):
    rec = record_208
    assert rec.second_name == "V1" and rec.second.shape == rec.signal.shape
    first = context_beats(rec.signal, rec.fs, rec.samples)
    second = context_beats(rec.second, rec.fs, rec.samples)
    inputs = two_lead_input(first, second)
    assert TWO_LEAD_INPUT == CONTEXT_INPUT + SECOND_LEAD_INPUT == 343 and HAS_SECOND_LEAD == 342
    assert inputs.shape == (len(rec.samples), TWO_LEAD_INPUT) and inputs.dtype == np.float32
    np.testing.assert_array_equal(inputs[:, :CONTEXT_INPUT], network_input(first))
    np.testing.assert_array_equal(inputs[:, CONTEXT_INPUT:CONTEXT_INPUT + WINDOW_LENGTH], second.windows)
    np.testing.assert_array_equal(inputs[:, CONTEXT_INPUT + WINDOW_LENGTH:HAS_SECOND_LEAD], second.templates)
    assert np.all(inputs[:, HAS_SECOND_LEAD] == 1)
    assert not np.array_equal(second.windows, first.windows)


def test_a_missing_second_lead_is_zeros_and_flag_0(record_208):
    first = context_beats(record_208.signal, record_208.fs, record_208.samples)
    inputs = two_lead_input(first)
    np.testing.assert_array_equal(inputs[:, :CONTEXT_INPUT], network_input(first))
    assert np.all(inputs[:, CONTEXT_INPUT:] == 0)
    removed = without_second_lead(two_lead_input(first, context_beats(record_208.second, record_208.fs,
                                                                       record_208.samples)))
    np.testing.assert_array_equal(removed, inputs)
    with pytest.raises(ValueError):
        two_lead_input(first, context_beats(record_208.second, record_208.fs, record_208.samples[:-1]))


def test_the_leads_are_picked_by_name(mitdb_dir):
    rec = read_record(mitdb_dir, "114", leads=2)  # stored V5 first, MLII second
    assert rec.second_name == "V5"
    assert read_record(mitdb_dir, "114").second is None


def test_augmented_leads_share_timing_and_leave_the_first_lead_alone(record_208, fixture_dir):
    rec, aug = record_208, Augmentation()
    one = augmented_context(rec.signal, rec.fs, rec.samples, aug, np.random.default_rng(3))
    first, second = augmented_leads([rec.signal, rec.second], rec.fs, rec.samples, aug, np.random.default_rng(3))
    for field in ("windows", "templates", "rr"):
        np.testing.assert_array_equal(getattr(first, field), getattr(one, field))
    np.testing.assert_array_equal(second.rr, first.rr)  # same R-peaks and strips
    assert not np.allclose(second.windows, first.windows)
    views = record_context(fixture_dir, "208", variants=2, leads=2).views
    assert views.shape == (2, len(rec.samples), TWO_LEAD_INPUT) and np.all(views[..., HAS_SECOND_LEAD] == 1)
    np.testing.assert_array_equal(views[..., :CONTEXT_INPUT], record_context(fixture_dir, "208", variants=2).views)


@pytest.mark.parametrize("waves, second_waves, channels",
                         [("window+difference", "", 4), ("window", "", 2), ("window+difference", "difference", 3)])
def test_two_lead_encoder_reads_the_second_lead_as_more_channels(fixture_dir, waves, second_waves, channels):
    inputs = torch.from_numpy(record_context(fixture_dir, "208", leads=2).beats[:16])
    encoder = ContextEncoder(64, 8, waves=waves, rr_hidden=32, leads=2, second_waves=second_waves).eval()
    assert encoder.window[1].in_channels == channels and encoder.rr[0].in_features == 11
    out = encoder(inputs)
    assert out.shape == (16, 64)
    assert not torch.allclose(out, encoder(torch.from_numpy(without_second_lead(inputs.numpy()))))
    with pytest.raises(ValueError):
        ContextEncoder(64, leads=3)


@pytest.mark.parametrize("body", ["resnet", "odenet"])
def test_two_lead_classifier_trains_with_lead_dropout(fixture_dir, body):
    beats = record_context(fixture_dir, "208", variants=1, leads=2)
    recipe = override(PRESETS["context"], ["leads=2", "lead_dropout=0.5", "epochs=1", "batch_size=64"])
    arch = architecture(body, recipe)
    assert arch.leads == 2 and arch.input_size == TWO_LEAD_INPUT
    assert Architecture.from_dict(arch.as_dict()) == arch
    model = BeatClassifier(arch)
    history = fit(model, beats, recipe, seed=0, progress=False)
    assert np.isfinite(history).all()
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(beats.beats[:8]))
    assert logits.shape == (8, len(arch.classes))


def test_one_lead_architecture_is_unchanged():
    arch = Architecture.from_dict({"body": "resnet", "encoder": "context", "channels": 16, "waves": "window+difference",
                                   "rr_hidden": 32})
    assert arch.leads == 1 and arch.input_size == CONTEXT_INPUT
    state = BeatClassifier(arch).state_dict()
    assert state["encoder.window.1.weight"].shape == (16, 2, 7) and state["encoder.rr.0.weight"].shape == (32, 10)


@pytest.mark.parametrize("name", ["context-resnet-ds1", "context-odenet-ds1"])
def test_shipped_one_lead_context_models_still_load(name, record_208):
    model, card = load_model(MODELS / name)  # strict load of weights.safetensors
    assert model.arch.leads == 1 and model.arch.input_size == CONTEXT_INPUT
    first = context_beats(record_208.signal, record_208.fs, record_208.samples)
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(network_input(first)[:8]))
    assert logits.shape == (8, len(card["classes"])) and torch.isfinite(logits).all()


def test_the_service_refuses_a_two_lead_artefact_by_name_and_says_why(tmp_path):
    """No route builds two-lead inputs from a request yet: such a model is refused, loudly, not
    fed one-lead beats."""
    from service.models.registry import ModelRegistry
    from training.export import write_artefact
    from training.train import input_card

    torch.manual_seed(0)
    arch = architecture("resnet", override(PRESETS["context"], ["leads=2"]))
    card = {"name": "two-leads", "architecture": arch.as_dict(), "classes": list(arch.classes),
            "input": input_card(arch)}
    write_artefact(BeatClassifier(arch), card, tmp_path / "two-leads")
    registry = ModelRegistry.load(tmp_path)
    assert "two-leads" not in registry.models and "two leads" in registry.failures["two-leads"]
