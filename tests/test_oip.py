"""The Open Inference Protocol V2 over real HTTP, called with Triton's own client (tritonclient),
JSON and binary tensors, against the same beats through /predict."""

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.signal.beats import CLASSES

from conftest import served


@pytest.fixture(scope="module")
def server():
    with served() as (base, _):
        yield base


@pytest.fixture(scope="module")
def client(server):
    return triton.InferenceServerClient(server.removeprefix("http://"))


def infer(client, model, beats, binary, parameters=None, outputs=("probabilities", "class_index", "label", "nfe"),
          version=""):
    tensor = triton.InferInput("beats", list(beats.shape), "FP32")
    tensor.set_data_from_numpy(beats, binary_data=binary)
    requested = [triton.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    return client.infer(model, [tensor], outputs=requested, parameters=parameters, model_version=version)


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("odenet") and not client.is_model_ready("nope")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("odenet")
    assert meta["inputs"] == [{"name": "beats", "datatype": "FP32", "shape": [-1, 187]}]
    assert {o["name"] for o in meta["outputs"]} == {"probabilities", "class_index", "label", "confidence", "nfe"}
    assert {o["name"] for o in client.get_model_metadata("resnet")["outputs"]} == {
        "probabilities", "class_index", "label", "confidence"}


@pytest.mark.parametrize("binary", [False, True])
def test_the_review_flag_and_confidence_reach_a_triton_client_as_predict_gives_them(server, client, binary):
    from service.signal.context import context_beats, network_input
    import wfdb

    from conftest import FIXTURES

    record = wfdb.rdrecord(str(FIXTURES / "208"), channel_names=["MLII"])
    peaks = wfdb.rdann(str(FIXTURES / "208"), "atr").sample[2:-2]
    beats = network_input(context_beats(record.p_signal[:, 0], record.fs, peaks))[:200]
    result = infer(client, "context-odenet", beats, binary, outputs=("probabilities", "class_index", "confidence",
                                                                     "review"))
    threshold = httpx.get(f"{server}/models", timeout=30).json()["models"]["context-odenet"]["decision"]["review_below"]
    probabilities, confidence = result.as_numpy("probabilities"), result.as_numpy("confidence")
    assert np.allclose(confidence, probabilities[np.arange(len(beats)), result.as_numpy("class_index")])
    review = result.as_numpy("review")
    assert review.dtype == np.bool_ and review.tolist() == (confidence < threshold).tolist()
    assert any(review) and not all(review)


@pytest.mark.parametrize("binary", [False, True])
def test_round_trip_equals_predict(server, client, fixture_beats, binary):
    beats = fixture_beats.beats[:64]
    result = infer(client, "odenet", beats, binary, parameters={"rtol": 1e-4, "atol": 1e-4})
    expected = httpx.post(f"{server}/predict", json={"beats": beats.tolist(), "solver": {"rtol": 1e-4, "atol": 1e-4}},
                          timeout=60).json()
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (64, len(CLASSES)) and probabilities.dtype == np.float32
    want = np.array([[p["probabilities"][c] for c in CLASSES] for p in expected["predictions"]])
    assert np.abs(probabilities - want).max() < 1e-6
    assert result.as_numpy("class_index").tolist() == [p["class_index"] for p in expected["predictions"]]
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label").tolist()]
    assert labels == [p["label"] for p in expected["predictions"]]
    assert result.as_numpy("nfe").tolist() == [p["nfe"] for p in expected["predictions"]]
    assert result.get_response()["parameters"]["rtol"] == 1e-4


def test_binary_resnet_batch_and_versioned_route(client, fixture_beats):
    beats = fixture_beats.beats[:256]
    version = client.get_model_metadata("resnet")["versions"][0]
    result = infer(client, "resnet", beats, True, outputs=("probabilities",), version=version)
    assert result.as_numpy("probabilities").shape == (256, 5)
    assert np.mean(result.as_numpy("probabilities").argmax(1) == fixture_beats.labels[:256]) > 0.95


@pytest.mark.parametrize("model,beats,parameters,message", [
    ("odenet", np.zeros((2, 100), np.float32), None, "shape"),
    ("odenet", np.full((1, 187), 2.0, np.float32), None, "[0, 1]"),
    ("odenet", np.zeros((1, 187), np.float32), {"rtol": 5.0}, "rtol"),
    ("odenet", np.zeros((1, 187), np.float32), {"method": "leapfrog"}, "method"),
    ("resnet", np.zeros((1, 187), np.float32), {"rtol": 1e-3}, "not an ODE model"),
    ("transformer", np.zeros((1, 187), np.float32), None, "unknown model"),
])
def test_bad_requests_are_refused_with_a_message(client, model, beats, parameters, message):
    with pytest.raises(InferenceServerException, match=message.replace("[", r"\[").replace("]", r"\]")):
        infer(client, model, beats, True, parameters=parameters, outputs=("probabilities",))


def test_raw_protocol_errors_are_400_json(server):
    for body, headers in [(b"{not json", {}), (b'{"inputs": 3}', {}),
                          (b'{"inputs": [{"name": "beats", "shape": [1, 187], "datatype": "FP32", '
                           b'"parameters": {"binary_data_size": 748}}]}', {"Inference-Header-Content-Length": "85"})]:
        response = httpx.post(f"{server}/v2/models/odenet/infer", content=body, headers=headers, timeout=10)
        assert response.status_code == 400 and "error" in response.json()
