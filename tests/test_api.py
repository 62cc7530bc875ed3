"""The HTTP contract, against the real ASGI app serving the shipped artefacts."""

import asyncio
import math
import shutil
import signal

import httpx
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.models.artefacts import WEIGHTS
from service.signal.beats import CLASSES
from service.settings import Settings
from training.data import load_split

from conftest import MODELS


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(models_dir=MODELS, max_beats_per_request=512))) as c:
        yield c


@pytest.fixture(scope="module")
def test_beats(request, fixture_beats):
    """2,000 beats of the intra-patient test split where the database is present, else the excerpts."""
    from conftest import FULL_DATABASE

    if (FULL_DATABASE / "100.dat").is_file():
        _, test = load_split(FULL_DATABASE, "intra", seed=0)
        pick = np.random.default_rng(0).choice(len(test), 2000, replace=False)
        return test.subset(np.sort(pick))
    return fixture_beats


def post(client, **body):
    return client.post("/predict", json=body)


@pytest.mark.parametrize("model", ["odenet", "resnet"])
def test_real_beats_are_classified(client, fixture_beats, model):
    response = post(client, model=model, beats=fixture_beats.beats.tolist()[:256])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model and body["version"].startswith("1.0.0+")
    labels = [p["label"] for p in body["predictions"]]
    assert np.mean(np.array([CLASSES.index(x) for x in labels]) == fixture_beats.labels[:256]) > 0.95
    for p in body["predictions"]:
        assert set(p["probabilities"]) == set(CLASSES)
        assert math.isclose(sum(p["probabilities"].values()), 1.0, rel_tol=1e-5)
        assert CLASSES[p["class_index"]] == p["label"] == max(p["probabilities"], key=p["probabilities"].get)
    assert body["latency_ms"] > 0
    assert (body["solver"] is None) == (model == "resnet")


def test_default_model_and_solver(client, fixture_beats):
    body = post(client, beats=fixture_beats.beats[:2].tolist()).json()
    assert body["model"] == "odenet"
    assert body["solver"]["method"] == "dopri5" and body["solver"]["rtol"] == 1e-3
    assert body["solver"]["nfe"] >= 8 and (body["solver"]["nfe"] - 2) % 6 == 0


def test_a_beat_alone_and_in_a_batch_of_256_agree(client, test_beats):
    rtol = 1e-3
    batch = test_beats.beats[:256].tolist()
    solver = {"rtol": rtol, "atol": rtol}
    together = post(client, beats=batch, solver=solver).json()["predictions"]
    for i in (0, 17, 255):
        alone = post(client, beats=[batch[i]], solver=solver).json()["predictions"][0]
        assert alone["label"] == together[i]["label"]
        for c in CLASSES:
            assert abs(alone["probabilities"][c] - together[i]["probabilities"][c]) <= 10 * rtol


def test_nfe_rises_and_accuracy_holds_as_tolerance_tightens(client, test_beats):
    beats = test_beats.beats.tolist()
    nfe, accuracy = [], []
    for tol in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        labels, total = [], 0
        for start in range(0, len(beats), 500):
            body = post(client, beats=beats[start:start + 500], solver={"rtol": tol, "atol": tol}).json()
            labels += [p["class_index"] for p in body["predictions"]]
            total += body["solver"]["nfe"]
        nfe.append(total)
        accuracy.append(np.mean(np.array(labels) == test_beats.labels))
    assert nfe == sorted(nfe) and nfe[-1] > nfe[0]
    assert accuracy[-1] >= accuracy[0]


BEAT = [0.5] * 187


@pytest.mark.parametrize("body,field", [
    ({"beats": [[0.5] * 186]}, ["body", "beats", 0]),
    ({"beats": [[0.5] * 188]}, ["body", "beats", 0]),
    ({"beats": []}, ["body", "beats"]),
    ({"beats": [["0.5"] + BEAT[1:]]}, ["body", "beats", 0, 0]),
    ({"beats": [[1.5] + BEAT[1:]]}, ["body", "beats", 0, 0]),
    ({"beats": [BEAT] * 513}, ["body", "beats"]),
    ({"beats": [BEAT], "solver": {"rtol": 0}}, ["body", "solver", "rtol"]),
    ({"beats": [BEAT], "solver": {"atol": -1e-3}}, ["body", "solver", "atol"]),
    ({"beats": [BEAT], "solver": {"rtol": 1e-9, "atol": 1e-9}}, ["body", "solver", "rtol"]),
    ({"beats": [BEAT], "solver": {"atol": 1e-8}}, ["body", "solver", "atol"]),
    ({"beats": [BEAT], "solver": {"method": "leapfrog"}}, ["body", "solver", "method"]),
    ({"beats": [BEAT], "solver": {"method": "dopri5", "step_size": 0.1}}, ["body", "solver", "step_size"]),
    ({"beats": [BEAT], "solver": {"method": "rk4", "step_size": 0.001}}, ["body", "solver", "step_size"]),
    ({"beats": [BEAT], "model": "transformer"}, ["body", "model"]),
    ({"beats": [BEAT], "model": "resnet", "solver": {"rtol": 1e-3}}, ["body", "solver"]),
    ({"beats": [BEAT], "temperature": 2}, ["body", "temperature"]),
])
def test_bad_input_is_a_422_naming_the_field(client, body, field):
    response = post(client, **body)
    assert response.status_code == 422, response.text
    assert field in [error["loc"] for error in response.json()["detail"]]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_samples_are_a_422(client, token):
    """NaN and Infinity are not JSON (RFC 8259): refused where they stand, never passed on."""
    raw = '{"beats": [[' + token + "," + ",".join(["0.5"] * 186) + "]]}"
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["type"] == "json_invalid" and error["loc"][0] == "body"
    assert abs(error["loc"][1] - raw.index(token)) <= 1  # the character position of the token


def test_malformed_json_is_a_422(client):
    response = client.post("/predict", content="{beats", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_fixed_step_solver_reports_its_nfe(client, fixture_beats):
    body = post(client, beats=fixture_beats.beats[:4].tolist(),
                solver={"method": "rk4", "step_size": 0.25}).json()
    assert body["solver"]["nfe"] == 16 and body["solver"]["step_size"] == 0.25


def test_models_health_and_docs(client):
    cards = client.get("/models").json()
    assert {"odenet", "resnet"} <= set(cards["models"]) and cards["refused"] == {}
    odenet = cards["models"]["odenet"]
    assert odenet["default_solver"]["method"] == "dopri5" and "intra_test" in odenet["metrics"]
    assert cards["models"]["resnet"]["backend"] == "onnxruntime"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    schema = client.get("/openapi.json").json()
    assert schema["components"]["schemas"]["PredictRequest"]["examples"]


def test_metrics_count_the_requests_just_made(client, fixture_beats):
    def sample(text, name, **labels):
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = client.get("/metrics").text
    for _ in range(3):
        post(client, model="resnet", beats=fixture_beats.beats[:5].tolist())
    post(client, model="odenet", beats=fixture_beats.beats[:5].tolist(), solver={"rtol": 1e-2, "atol": 1e-2})
    post(client, model="resnet", beats=[])
    after = client.get("/metrics").text
    http = "ecg_http_request_duration_seconds_count"
    assert sample(after, http, route="/predict", status="200") - sample(before, http, route="/predict", status="200") == 4
    assert sample(after, http, route="/predict", status="422") - sample(before, http, route="/predict", status="422") == 1
    latency = "ecg_inference_latency_seconds_count"
    assert sample(after, latency, model="resnet") - sample(before, latency, model="resnet") == 3
    assert sample(after, "ecg_ode_nfe_count", model="odenet", method="dopri5") - \
        sample(before, "ecg_ode_nfe_count", model="odenet", method="dopri5") == 5  # one per beat
    beats = sum(sample(after, "ecg_beats_classified_total", model="resnet", label=c) for c in CLASSES) - \
        sum(sample(before, "ecg_beats_classified_total", model="resnet", label=c) for c in CLASSES)
    assert beats == 15
    assert sample(after, "ecg_model_info", model="odenet") == 1
    assert "ecg_http_requests_in_flight" in after and "ecg_batch_size_beats_bucket" in after
    assert "rtol" not in after


def test_tampered_weights_refuse_that_model_by_file_name(tmp_path, fixture_beats):
    for name in ("odenet", "resnet"):
        shutil.copytree(MODELS / name, tmp_path / name)
    weights = tmp_path / "odenet" / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with TestClient(create_app(Settings(models_dir=tmp_path))) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert str(weights) in ready.json()["refused"]["odenet"]
        assert "odenet" in c.get("/models").json()["refused"]
        assert post(c, model="odenet", beats=[BEAT]).status_code == 422
        assert post(c, model="resnet", beats=[BEAT]).status_code == 200


def test_a_solve_over_its_step_budget_is_a_422_naming_the_cause(fixture_beats):
    with TestClient(create_app(Settings(models_dir=MODELS, max_num_steps=2))) as c:
        response = post(c, beats=fixture_beats.beats[:4].tolist(), solver={"rtol": 1e-6, "atol": 1e-6})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "solver"] and "more than 2 steps" in error["msg"]


@pytest.fixture(scope="module")
def context_beats_208(fixture_dir):
    """Context beats of two minutes of record 208 as service.signal.context builds them, and as JSON."""
    from service.signal.context import RR_FIELDS, context_beats, network_input
    from training.data import read_record

    record = read_record(fixture_dir, "208")
    beats = context_beats(record.signal, record.fs, record.samples)
    as_json = [{"window": beats.windows[i].tolist(), "template": beats.templates[i].tolist(),
                **{f: None if np.isnan(beats.rr[i, k]) else float(beats.rr[i, k]) for k, f in enumerate(RR_FIELDS)}}
               for i in range(len(beats))]
    return network_input(beats), as_json, record.labels


@pytest.mark.parametrize("model", ["context-odenet", "context-resnet"])
def test_context_beats_are_classified_as_their_network_input(client, context_beats_208, model):
    inputs, as_json, labels = context_beats_208
    body = post(client, model=model, context_beats=as_json[:128]).json()
    loaded = client.app.state.registry.models[model]
    expected = loaded.decision(loaded.predictor.predict(inputs[:128]).probabilities, inputs[:128])  # calibrated, as answered
    got = np.array([[p["probabilities"][c] for c in CLASSES] for p in body["predictions"]])
    assert np.abs(got - expected.probabilities).max() < 1e-5
    assert [p["class_index"] for p in body["predictions"]] == expected.labels.tolist()
    assert np.mean(expected.labels == labels[:128]) > 0.8


def test_context_beats_default_to_the_context_model(client, context_beats_208):
    _, as_json, _ = context_beats_208
    assert post(client, context_beats=as_json[:2]).json()["model"] == "context-odenet"


@pytest.mark.parametrize("body,words", [
    ({"model": "context-odenet", "beats": [BEAT]}, "reads context beats"),
    ({"model": "odenet", "context_beats": "first"}, "reads 187-sample beats"),
    ({"beats": [BEAT], "context_beats": "first"}, "exactly one of"),
    ({}, "exactly one of"),
])
def test_an_input_the_model_does_not_read_is_a_422_naming_its_input(client, context_beats_208, body, words):
    if body.get("context_beats") == "first":
        body = {**body, "context_beats": context_beats_208[1][:1]}
    response = post(client, **body)
    assert response.status_code == 422 and words in response.text, response.text


def test_models_show_each_models_input(client):
    cards = client.get("/models").json()["models"]
    assert cards["odenet"]["input_kind"] == "beat" and cards["odenet"]["input"]["beat_length"] == 187
    context = cards["context-odenet"]
    assert context["input_kind"] == "context" and context["input_size"] == 176
    assert context["input"]["rr_fields"][:2] == ["pre_rr", "post_rr"] and "selection" in context


def test_one_in_flight_bound_covers_both_stacks():
    """A request held on FastAPI's stack (a strip whose body is in, waiting for its strip worker)
    counts against the same ECG_MAX_REQUESTS_IN_FLIGHT as the hot paths' stack (service.api.lean):
    the next /predict is refused, not admitted past the bound. A request whose body is still
    arriving does not count (service.admission.guard), so the bound holds for work, not uploads."""
    app = create_app(Settings(models_dir=MODELS, max_requests_in_flight=1))

    async def scenario():
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://ecg") as http:
            workers = [w.process for w in app.state.strip_workers.workers]
            for process in workers:
                process.send_signal(signal.SIGSTOP)  # the strip waits in its analysis
            signal_mv = [0.1 * math.sin(i / 10) for i in range(2500)]
            held = asyncio.create_task(http.post("/predict/strip", json={"sampling_rate": 250, "signal": signal_mv}))
            await asyncio.sleep(0.5)  # the strip request is admitted, its body in, its worker stopped
            refused = await http.post("/predict", json={"model": "odenet", "beats": [[0.5] * 187]})
            for process in workers:
                process.send_signal(signal.SIGCONT)
            await held
            admitted = await http.post("/predict", json={"model": "odenet", "beats": [[0.5] * 187]})
        return refused, admitted

    refused, admitted = asyncio.run(scenario())
    assert refused.status_code == 503 and "1 requests in flight (limit 1)" in refused.json()["detail"]
    assert admitted.status_code == 200


def test_the_lean_routes_answer_as_fastapis_own(client, fixture_beats, context_beats_208):
    """POST /predict and /v2 infer go through the lean stack and routes (service.api.lean); the same
    requests through FastAPI's stack and routes alone get the same statuses and bodies."""
    assert client.app.lean_router.routes
    plain_app = create_app(Settings(models_dir=MODELS, max_beats_per_request=512))
    plain_app.lean_router.routes.clear()
    beats = fixture_beats.beats[:3].tolist()
    oip = {"inputs": [{"name": "beats", "shape": [2, 187], "datatype": "FP32", "data": sum(beats[:2], [])}],
           "parameters": {"rtol": 1e-4}}
    requests = [
        ("/predict", {"model": "odenet", "beats": beats, "solver": {"rtol": 1e-4, "atol": 1e-5}}),
        ("/predict", {"model": "resnet", "beats": beats}),
        ("/predict", {"context_beats": context_beats_208[1][:2]}),
        ("/predict", {"model": "context-odenet", "beats": beats}),  # refused inside the endpoint
        ("/predict", {"model": "odenet", "beats": [[2.0] * 187]}),  # refused by the body model
        ("/predict", {"beats": beats, "solver": {"method": "rk4", "step_size": 1e-9}}),
        ("/v2/models/odenet/infer", oip),
        ("/v2/models/odenet/versions/1/infer", oip),
        ("/v2/models/nothing/infer", oip),
    ]
    with TestClient(plain_app) as plain:
        for path, body in requests:
            lean_answer, plain_answer = client.post(path, json=body), plain.post(path, json=body)
            assert lean_answer.status_code == plain_answer.status_code, (path, body)
            got, expected = lean_answer.json(), plain_answer.json()
            for answer in (got, expected):
                answer.pop("latency_ms", None)
            assert got == expected, (path, body)
        for body, content_type in [(b"{not json", "application/json"),
                                   (orjson.dumps({"beats": beats}), "text/plain"),
                                   (orjson.dumps({"beats": beats}), "application/fhir+json; charset=utf-8")]:
            headers = {"content-type": content_type}
            lean_answer = client.post("/predict", content=body, headers=headers)
            plain_answer = plain.post("/predict", content=body, headers=headers)
            assert lean_answer.status_code == plain_answer.status_code, content_type
            if lean_answer.status_code != 200:
                assert lean_answer.json() == plain_answer.json()
    # without any of FastAPI's routes, valid requests are still answered: by the lean routes
    lean_only = create_app(Settings(models_dir=MODELS))
    lean_only.router.routes.clear()
    with TestClient(lean_only) as only:
        assert only.post("/predict", json=requests[0][1]).status_code == 200
        assert only.post("/v2/models/odenet/infer", json=oip).status_code == 200
        assert only.post("/predict", json={"beats": [[2.0] * 187]}).status_code == 404  # handed to FastAPI's
