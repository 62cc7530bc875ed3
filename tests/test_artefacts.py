"""Artefacts: save/load round trip, tamper detection, ONNX equal to torch, shipped cards reproducible."""

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the training extra (pyproject.toml): torch is the reference here
import onnx  # noqa: E402  (the training extra too)
import onnxruntime as ort  # noqa: E402

from service.models.artefacts import ENCODER_ONNX, ONNX, WEIGHTS, ArtefactIntegrityError, load_model, read_card
from service.models.networks import Architecture, BeatClassifier
from training.export import write_artefact

from conftest import MODELS, ROOT


def minimal_card(name):
    return {"name": name, "architecture": None, "training": {"split": "intra", "seed": 0}}


def export(model, folder):
    card = minimal_card(folder.name)
    card["architecture"] = model.arch.as_dict()
    return write_artefact(model, card, folder)


@pytest.mark.parametrize("body,encoder", [("resnet", "conv"), ("odenet", "conv"), ("resnet", "mlp"),
                                          ("resnet", "context"), ("odenet", "context")])
def test_round_trip_gives_the_same_outputs(tmp_path, fixture_beats, body, encoder):
    torch.manual_seed(0)
    model = BeatClassifier(Architecture(body=body, encoder=encoder)).eval()
    card = export(model, tmp_path / body)
    loaded, loaded_card = load_model(tmp_path / body)
    assert loaded_card == card
    beats = torch.from_numpy(fixture_beats.beats[:50]) if encoder != "context" else torch.rand(50, 176) - 0.5
    with torch.no_grad():
        assert torch.equal(model(beats), loaded(beats))


def test_a_context_card_from_before_the_rr_hidden_layer_still_loads(tmp_path):
    """Cards written before `rr_hidden` existed have no such key: they load with the one-layer RR branch."""
    torch.manual_seed(0)
    model = BeatClassifier(Architecture(body="odenet", encoder="context")).eval()
    export(model, tmp_path / "old")
    card_path = tmp_path / "old" / "card.json"
    card = json.loads(card_path.read_text())
    del card["architecture"]["rr_hidden"]
    card_path.write_text(json.dumps(card))
    loaded, _ = load_model(tmp_path / "old")
    assert loaded.arch.rr_hidden == 0
    beats = torch.rand(20, 176) - 0.5
    with torch.no_grad():
        assert torch.equal(model(beats), loaded(beats))


def test_tampered_weights_are_refused_naming_the_file(tmp_path):
    model = BeatClassifier(Architecture(body="odenet")).eval()
    export(model, tmp_path / "odenet")
    weights = tmp_path / "odenet" / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtefactIntegrityError, match=WEIGHTS):
        load_model(tmp_path / "odenet")


def softmax(logits):
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def assert_onnx_equals_torch(onnx_out, torch_out):
    """Served probabilities agree within 1e-5; logits (up to ~40 in size) to float32 relative precision."""
    assert np.abs(softmax(onnx_out) - softmax(torch_out)).max() < 1e-5
    assert np.allclose(onnx_out, torch_out, rtol=1e-5, atol=1e-5)


def onnx_logits(path, beats):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: beats})[0]


def test_fresh_onnx_export_matches_torch(tmp_path, fixture_beats):
    torch.manual_seed(0)
    model = BeatClassifier(Architecture(body="resnet", encoder="conv")).eval()
    export(model, tmp_path / "resnet")
    beats = fixture_beats.beats[:300]
    with torch.no_grad():
        expected = model(torch.from_numpy(beats)).numpy()
    assert_onnx_equals_torch(onnx_logits(tmp_path / "resnet" / ONNX, beats), expected)
    single = onnx_logits(tmp_path / "resnet" / ONNX, beats[:1])  # dynamic batch axis
    assert_onnx_equals_torch(single, expected[:1])
    graph = onnx.load(str(tmp_path / "resnet" / ONNX)).graph
    weights = {w.name: w for w in graph.initializer}
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    # written as 2-D convolutions of height 1, which onnxruntime runs with its blocked kernels
    assert len(convolutions) == 3 and all(len(weights[node.input[1]].dims) == 4 for node in convolutions)


SHIPPED = sorted(p.parent.name for p in MODELS.glob("*/card.json"))


def test_the_two_served_models_are_shipped():
    assert {"odenet", "resnet"} <= set(SHIPPED)


@pytest.fixture(scope="module")
def context_inputs(fixture_dir):
    from training.data import load_records

    return load_records(fixture_dir, ("100", "208", "232"), input="context").beats


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_artefact_verifies_and_its_graph_matches_torch(name, fixture_beats, context_inputs):
    model, card = load_model(MODELS / name)
    assert card["classes"] == ["N", "S", "V", "F", "Q"]
    assert card["input"]["kind"] == model.arch.input_kind
    beats = context_inputs if model.arch.input_kind == "context" else fixture_beats.beats
    with torch.no_grad():
        if model.is_ode:  # the encoder graph the service runs, against torch's encoder
            expected = model.encoder(torch.from_numpy(beats)).numpy()
            assert np.allclose(onnx_logits(MODELS / name / ENCODER_ONNX, beats), expected, rtol=1e-4, atol=1e-4)
        else:
            expected = model(torch.from_numpy(beats)).numpy()
            assert_onnx_equals_torch(onnx_logits(MODELS / name / ONNX, beats), expected)


@pytest.mark.parametrize("name", ["odenet", "resnet", "context-odenet-ds1", "context-resnet-ds1"])
def test_evaluate_reproduces_the_shipped_card(name, mitdb_dir):
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", str(MODELS / name), "--data", str(mitdb_dir), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    recorded = read_card(MODELS / name)["metrics"]
    assert set(metrics) == set(recorded)
    for key in metrics:
        assert metrics[key]["confusion_matrix"] == recorded[key]["confusion_matrix"], key
    assert "card reproduced" in result.stderr


@pytest.mark.parametrize("name", sorted(p.parent.name for p in MODELS.glob("*/card.json")))
def test_the_service_reads_the_weights_torch_reads_without_torch(name):
    """Serving reads weights.safetensors as numpy arrays (no torch); they are torch's, bit for bit."""
    from service.models.artefacts import load_served

    served = load_served(MODELS / name)
    model, card = load_model(MODELS / name)
    assert served.card == card and served.arch == model.arch and served.arch.is_ode == model.is_ode
    state = model.state_dict()
    assert set(served.weights) == set(state)
    for key, value in state.items():
        assert served.weights[key].dtype == value.numpy().dtype and np.array_equal(served.weights[key], value.numpy())
