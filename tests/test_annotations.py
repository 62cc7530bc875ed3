"""WFDB annotations out: an analysis downloaded from the real app (?format=atr), read back with
wfdb.rdann and scored against the record's reference annotations as PhysioNet's tools score it."""

import numpy as np
import pytest
import wfdb
from fastapi.testclient import TestClient
from wfdb import processing

from service.app import create_app
from service.settings import Settings
from service.signal.annotations import EXTENSION, write_annotations
from service.signal.beats import AAMI_GROUPS

from conftest import MODELS

MIT_BEATS = set("NSVFQ")


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(models_dir=MODELS))) as c:
        yield c


def upload(client, fixture_dir, record, query="format=atr"):
    files = {"header": (f"{record}.hea", (fixture_dir / f"{record}.hea").read_bytes()),
             "signal": (f"{record}.dat", (fixture_dir / f"{record}.dat").read_bytes())}
    return client.post(f"/predict/wfdb?{query}", files=files)


def saved(tmp_path, answer, expected_name):
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["content-disposition"] == f'attachment; filename="{expected_name}"'
    (tmp_path / expected_name).write_bytes(answer.content)
    record, extension = expected_name.split(".")
    return wfdb.rdann(str(tmp_path / record), extension)


def reference_beat_samples(fixture_dir, record):
    reference = wfdb.rdann(str(fixture_dir / record), "atr")
    return np.array([s for s, sym in zip(reference.sample, reference.symbol) if sym in AAMI_GROUPS])


@pytest.mark.parametrize("record", ["100", "208"])
def test_a_record_s_analysis_reads_back_and_scores_against_its_reference(client, fixture_dir, tmp_path, record):
    annotation = saved(tmp_path, upload(client, fixture_dir, record), f"{record}.{EXTENSION}")
    json_answer = upload(client, fixture_dir, record, "format=json").json()
    beats = [i for i, s in enumerate(annotation.symbol) if s in MIT_BEATS]
    assert annotation.fs == 360
    assert annotation.sample[beats].tolist() == [b["sample"] for b in json_answer["beats"]]
    assert [annotation.symbol[i] for i in beats] == [b["label"] for b in json_answer["beats"]]
    (note,) = [n for s, n in zip(annotation.symbol, annotation.aux_note) if s == '"']
    assert note == f"ecg-odenet model={json_answer['model']} version={json_answer['version']}"

    comparison = processing.compare_annotations(reference_beat_samples(fixture_dir, record),
                                                annotation.sample[beats], int(0.15 * 360))
    comparison.compare()
    assert comparison.sensitivity >= 0.99 and comparison.positive_predictivity >= 0.99


def test_strip_and_fhir_answers_download_the_same_beats(client, fixture_dir, tmp_path):
    record = wfdb.rdrecord(str(fixture_dir / "100"), physical=True)
    body = {"sampling_rate": 360, "signal": record.p_signal[:, 0].tolist()}
    strip = saved(tmp_path, client.post("/predict/strip?format=atr", json=body), f"strip.{EXTENSION}")
    json_answer = client.post("/predict/strip", json=body).json()
    assert [s for s in strip.symbol if s in MIT_BEATS] == [b["label"] for b in json_answer["beats"]]

    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "ECG"},
                   "valueSampledData": {"origin": {"value": 0, "unit": "mV", "code": "mV",
                                                   "system": "http://unitsofmeasure.org"},
                                        "period": 1000 / 360, "dimensions": 1,
                                        "data": " ".join(f"{v:.3f}" for v in record.p_signal[:, 0])}}
    fhir = saved(tmp_path, client.post("/predict/fhir?format=atr", json=observation), f"observation.{EXTENSION}")
    assert fhir.sample[np.isin(fhir.symbol, list(MIT_BEATS))].tolist() == [b["sample"] for b in json_answer["beats"]]


def test_an_unknown_format_is_a_422_naming_the_query_field(client, fixture_dir):
    answer = upload(client, fixture_dir, "100", "format=edf")
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["query", "format"]


def test_the_json_answer_is_unchanged_by_default(client, fixture_dir):
    answer = upload(client, fixture_dir, "100", "")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json()["report"]["beats"]["total"] == len(answer.json()["beats"])


def test_each_class_gets_its_mit_beat_code(tmp_path):
    path = write_annotations(tmp_path, "codes", [0, 100, 200, 300, 400], list("NSVFQ"), 250.0, "m", "1")
    annotation = wfdb.rdann(str(tmp_path / "codes"), EXTENSION)
    assert path.name == f"codes.{EXTENSION}" and annotation.fs == 250
    assert [(int(s), y) for s, y in zip(annotation.sample, annotation.symbol) if y != '"'] == \
        [(0, "N"), (100, "S"), (200, "V"), (300, "F"), (400, "Q")]
    with pytest.raises(ValueError, match="MIT beat code"):
        write_annotations(tmp_path, "bad", [10], ["X"], 250.0, "m", "1")
    with pytest.raises(ValueError, match="ascending"):
        write_annotations(tmp_path, "bad", [10, 5], ["N", "N"], 250.0, "m", "1")
