"""Hostile and careless inputs, on a real uvicorn: every input the service cannot use is a 422
that names what is wrong (never a 503 that invites retrying the same thing forever), no answer
repeats the input beyond a short prefix or names a server path, a WFDB header's sampling
frequency is never defaulted, FHIR R4 and R5 Observations both read, and the protocol's routes
answer in the protocol's error form."""

import json

import httpx
import numpy as np
import pytest
import wfdb

from conftest import served

MDC = "urn:oid:2.16.840.1.113883.6.24"


@pytest.fixture(scope="module")
def base():
    with served() as (url, _):
        yield url


@pytest.fixture(scope="module")
def record(fixture_dir):
    return wfdb.rdrecord(str(fixture_dir / "100"), physical=True, sampto=360 * 20)


@pytest.fixture(scope="module")
def files(fixture_dir):
    return {"header": ("100.hea", (fixture_dir / "100.hea").read_bytes()),
            "signal": ("100.dat", (fixture_dir / "100.dat").read_bytes())}


def observation(signal: np.ndarray, fs: float, release: str = "R4", factor: float = 0.001, unit: str = "mV"):
    sampled = {"origin": {"value": 0, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
               "factor": factor, "dimensions": 1, "data": " ".join(str(int(round(v / factor))) for v in signal)}
    if release == "R5":
        sampled.update(interval=1000 / fs, intervalUnit="ms")
    else:
        sampled["period"] = 1000 / fs
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": MDC, "code": "131328", "display": "MDC_ECG_ELEC_POTL"}]},
            "valueSampledData": sampled}


def refused(response, loc: tuple, *words: str) -> dict:
    """The answer is a 422 at `loc` whose message holds `words`."""
    assert response.status_code == 422, (response.status_code, response.text[:300])
    errors = response.json()["detail"]
    match = [e for e in errors if tuple(e["loc"]) == loc]
    assert match, errors
    assert all(w in match[0]["msg"] for w in words), match[0]["msg"]
    assert "/tmp" not in response.text and "broadcast" not in response.text and "shape" not in response.text
    return match[0]


def strip(base, signal, fs=360.0, **extra):
    return httpx.post(f"{base}/predict/strip", json={"sampling_rate": fs, "signal": list(map(float, signal)),
                                                     **extra}, timeout=60)


@pytest.mark.parametrize("scale", [1e6, 1e150])
def test_samples_no_lead_holds_are_422(base, record, scale):
    refused(strip(base, record.p_signal[:, 0] * scale), ("body", "signal"), "mV", "units")


def test_an_adc_gain_of_1e_300_is_422(base, record):
    refused(strip(base, record.p_signal[:, 0] * 200 + 1024, units="adc", gain=1e-300, baseline=1024),
            ("body", "signal"))


def test_a_fhir_factor_of_1e300_is_422(base, record):
    body = observation(record.p_signal[:, 0], 360)
    body["valueSampledData"]["factor"] = 1e300
    refused(httpx.post(f"{base}/predict/fhir", json=body, timeout=60), ("body", "observation"))


def test_json_nested_150_deep_is_422(base):
    nested = {"resourceType": "Observation", "status": "final", "code": {"text": "ECG"}, "extension": []}
    inner = nested["extension"]
    for _ in range(150):
        inner.append({"url": "http://example.org/x", "extension": []})
        inner = inner[0]["extension"]
    refused(httpx.post(f"{base}/predict/fhir", json=nested, timeout=60), ("body", "observation"), "nested")
    deep = "[" * 150 + "]" * 150
    response = httpx.post(f"{base}/predict/strip", content=f'{{"sampling_rate": 360, "signal": {deep}}}',
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 422, response.text[:300]


def test_a_superscript_lead_index_is_422(base, files):
    refused(httpx.post(f"{base}/predict/wfdb", params={"lead": "²"}, files=files, timeout=60), ("query", "lead"),
            "not found", "MLII")


@pytest.mark.parametrize("frequency", ["nan", "inf", "-360", "0", "360x", ""])
def test_an_unusable_wfdb_sampling_rate_is_422_never_250_hz(base, files, frequency):
    header = files["header"][1].replace(b"100 2 360 ", f"100 2 {frequency} ".encode() if frequency else b"100 2 ", 1)
    if not frequency:  # no frequency at all: WFDB's default of 250 Hz is not assumed either
        header = b"100 2\n" + header.split(b"\n", 1)[1]
    response = httpx.post(f"{base}/predict/wfdb", files={**files, "header": ("100.hea", header)}, timeout=60)
    refused(response, ("body", "header"), "sampling frequency")


@pytest.mark.parametrize("name", ["..", "."])
def test_a_header_naming_a_folder_as_its_signal_file_is_422(base, files, name):
    header = files["header"][1].replace(b"100.dat", name.encode())
    refused(httpx.post(f"{base}/predict/wfdb", files={**files, "header": ("100.hea", header)}, timeout=60),
            ("body", "header"), "signal file")


def test_hea_and_dat_mixed_up_or_an_annotation_file_as_the_signal_are_422_about_the_file(base, files, fixture_dir):
    swapped = {"header": ("100.dat", files["signal"][1]), "signal": ("100.hea", files["header"][1])}
    refused(httpx.post(f"{base}/predict/wfdb", files=swapped, timeout=60), ("body", "header"), "signal file")
    annotations = {**files, "signal": ("100.atr", (fixture_dir / "100.atr").read_bytes())}
    refused(httpx.post(f"{base}/predict/wfdb", files=annotations, timeout=60), ("body", "signal"),
            "signal file", ".dat")


def test_fhir_r4_and_r5_observations_give_the_same_beats(base, record):
    answers = []
    for release in ("R4", "R5"):
        response = httpx.post(f"{base}/predict/fhir", json=observation(record.p_signal[:, 0], 360, release), timeout=60)
        assert response.status_code == 200, (release, response.text[:300])
        answers.append([(b["sample"], b["label"]) for b in response.json()["beats"]])
    assert answers[0] == answers[1] and len(answers[0]) > 15
    r5 = observation(record.p_signal[:, 0], 360, "R5")
    r5["valueSampledData"]["intervalUnit"] = "furlong"
    refused(httpx.post(f"{base}/predict/fhir", json=r5, timeout=60), ("body", "observation"), "intervalUnit")
    r4_with_r5_field = observation(record.p_signal[:, 0], 360, "R4")
    r4_with_r5_field["valueSampledData"]["codeMap"] = "x"
    refused(httpx.post(f"{base}/predict/fhir", json=r4_with_r5_field, timeout=60), ("body", "observation"), "R4")


def small(response) -> bool:
    return len(response.content) < 2048


def test_no_error_repeats_a_long_input(base, record, files, fixture_dir):
    beat = [0.5] * 187
    long_name = "m" * (1 << 20)
    response = httpx.post(f"{base}/predict", json={"model": long_name, "beats": [beat]}, timeout=60)
    assert response.status_code == 422 and small(response), len(response.content)
    response = httpx.post(f"{base}/predict", json={"beats": [beat], "x" * 100_000: 1}, timeout=60)
    assert response.status_code == 422 and small(response), len(response.content)
    for path in (f"/v2/models/{'n' * 20_000}", f"/v2/models/odenet/versions/{'v' * 10_000}",
                 f"/v2/models/{'n' * 20_000}/infer"):
        response = httpx.request("POST" if path.endswith("infer") else "GET", f"{base}{path}", json={}, timeout=60)
        assert response.status_code == 404 and small(response) and "error" in response.json(), path[:40]
    response = httpx.get(f"{base}/v2/models/{'n' * 60_000}", timeout=60)  # past the request-line limit
    assert response.status_code == 431 and small(response)
    body = observation(record.p_signal[:, 0], 360, unit="u" * 100_000)
    response = httpx.post(f"{base}/predict/fhir", json=body, timeout=60)
    assert response.status_code == 422 and small(response), len(response.content)
    header = files["header"][1].replace(b" MLII", b" " + b"L" * 20_000).replace(b" V5", b" " + b"K" * 20_000)
    response = httpx.post(f"{base}/predict/wfdb", params={"lead": "V1"}, files={**files, "header": ("100.hea", header)},
                          timeout=60)
    assert response.status_code == 422 and small(response), response.text[:300]
    response = httpx.post(f"{base}/predict/wfdb", files={**files, "signal": ("100.dat", b"\x01" * 5000)}, timeout=60)
    assert response.status_code == 422 and "/tmp" not in response.text and small(response), response.text


def test_protocol_routes_answer_in_the_protocols_error_form(base):
    for method, path, status in [("GET", "/v2/nope", 404), ("POST", "/v2/health/live", 405),
                                 ("GET", "/v2/models/odenet/infer", 405), ("DELETE", "/v2/models/odenet", 405)]:
        response = httpx.request(method, f"{base}{path}", timeout=10)
        assert response.status_code == status and set(response.json()) == {"error"}, (path, response.text)
    assert httpx.get(f"{base}/v2/health/live", timeout=10).json() == {"live": True}
    assert httpx.get(f"{base}/v2/health/ready", timeout=10).json() == {"ready": True}
    assert httpx.get(f"{base}/v2/health/ready", timeout=10).headers["content-type"] == "application/json"


def test_schema_states_the_bounds_the_service_enforces(base):
    schema = httpx.get(f"{base}/openapi.json", timeout=10).json()
    atol = schema["components"]["schemas"]["SolverRequest"]["properties"]["atol"]
    assert atol["minimum"] == 1e-6 and atol["maximum"] == 0.1
    beat = [0.5] * 187
    for value, status in [(1e-6, 200), (0.1, 200), (5e-324, 422)]:
        response = httpx.post(f"{base}/predict", json={"beats": [beat], "solver": {"atol": value}}, timeout=60)
        assert response.status_code == status, (value, response.text[:200])
    wfdb_errors = schema["paths"]["/predict/wfdb"]["post"]["responses"]
    assert "400" in wfdb_errors
    response = httpx.post(f"{base}/predict/wfdb", content=b"--x\r\nbroken", timeout=10,
                          headers={"content-type": "multipart/form-data; boundary=x"})
    assert str(response.status_code) in wfdb_errors, response.status_code
    json.dumps(schema)  # the whole document stays JSON
