"""The floor in the context cards: a gradient-boosted tree on the networks' own inputs, which each
shipped context model must beat in cross-validation; its DS2 figures reproduce from the records."""

import importlib.util
import json

import numpy as np
import pytest

from conftest import MODELS, ROOT

CONTEXT_CARDS = ["context-odenet-ds1", "context-resnet-ds1", "context-odenet", "context-resnet"]


def card(name: str) -> dict:
    return json.loads((MODELS / name / "card.json").read_text())


@pytest.mark.parametrize("name", CONTEXT_CARDS)
def test_every_context_card_says_by_how_much_it_beats_the_tree(name):
    floor = card(name)["floor"]
    assert floor["network_minus_floor"]["cv_score"] == pytest.approx(floor["network_cv_score"] - floor["cv_score"],
                                                                    abs=1e-4)
    assert floor["network_minus_floor"]["cv_score"] > 0  # a shipped recipe that lost to the tree would not ship
    assert floor["network_cv_score"] == card(name)["selection"]["decision_rule"]["score_with_bias"]


@pytest.mark.parametrize("name", ["context-odenet-ds1", "context-resnet-ds1"])
def test_the_margin_on_ds2_is_read_from_the_cards_own_confusion_matrix(name):
    c = card(name)
    matrix = np.asarray(c["metrics"]["inter_DS2"]["confusion_matrix"])
    s = 1  # class index of S
    se, ppv = matrix[s, s] / matrix[s].sum(), matrix[s, s] / matrix[:, s].sum()
    network_f1 = 2 * se * ppv / (se + ppv)
    margin = c["floor"]["network_minus_floor"]["inter_DS2_S_f1"]
    assert margin == pytest.approx(network_f1 - c["floor"]["inter_DS2"]["S"]["f1"], abs=1e-3)


def test_the_trees_ds2_figures_reproduce(mitdb_dir):
    """Trained on DS1 with the card's seed, the tree gives the DS2 figures the cards record."""
    spec = importlib.util.spec_from_file_location("tree_floor", ROOT / "scripts" / "tree-floor.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from training.crossval import shifted_predictions, tree_floor, tree_probabilities
    from training.data import DS1, DS2, load_records
    from training.evaluate import classification_metrics

    floor = card("context-odenet-ds1")["floor"]
    tree = tree_floor(load_records(mitdb_dir, DS1, input="context"), seed=0)
    test = load_records(mitdb_dir, DS2, input="context")
    labels = shifted_predictions(tree_probabilities(tree, test.beats), floor.get("logit_bias", ""))
    assert script.figures(classification_metrics(test.labels, labels)) == floor["inter_DS2"]


def test_a_logit_bias_moves_the_call_as_the_networks_head_bias_does():
    from training.crossval import shifted_predictions

    p = np.array([[0.6, 0.3, 0.05, 0.04, 0.01]])
    assert shifted_predictions(p).tolist() == [0]
    assert shifted_predictions(p, "S:1").tolist() == [1]  # log 0.3 + 1 > log 0.6
    assert shifted_predictions(p, "S:0.5,V:3").tolist() == [2]


def test_the_tree_reads_each_leads_waves_as_the_networks_do():
    """A network subtracts the template inside; the tree is handed the difference, for both leads."""
    from service.signal.context import CONTEXT_INPUT, TWO_LEAD_INPUT, WINDOW_LENGTH as W
    from training.crossval import tree_waves

    inputs = np.random.default_rng(0).normal(size=(4, TWO_LEAD_INPUT)).astype(np.float32)
    read = tree_waves(inputs)
    assert read.shape == inputs.shape
    for start in (0, CONTEXT_INPUT):
        window, template = inputs[:, start:start + W], inputs[:, start + W:start + 2 * W]
        assert np.array_equal(read[:, start:start + W], window)
        assert np.allclose(read[:, start + W:start + 2 * W], window - template)
    assert np.array_equal(read[:, 2 * W:CONTEXT_INPUT], inputs[:, 2 * W:CONTEXT_INPUT])  # the RR features
    assert np.array_equal(read[:, -1], inputs[:, -1])  # has_second_lead
    assert np.array_equal(tree_waves(inputs[:, :CONTEXT_INPUT], "window+template"), inputs[:, :CONTEXT_INPUT])


def test_a_recipes_logit_bias_lands_in_the_networks_head():
    from service.models.networks import BeatClassifier
    from training.train import PRESETS, apply_logit_bias, architecture, override

    recipe = override(PRESETS["context"], ["logit_bias=S:-0.5,V:-0.5,F:1"])
    model = BeatClassifier(architecture("odenet", recipe))
    before = model.head[-1].bias.detach().clone()
    apply_logit_bias(model, recipe)
    assert (model.head[-1].bias - before).tolist() == pytest.approx([0.0, -0.5, -0.5, 1.0, 0.0], abs=1e-6)
