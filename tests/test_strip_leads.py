"""Multi-lead strips on a real uvicorn: /predict/strip takes one lead as `signal` or several named
`leads` and analyses the one `lead` chooses (MLII where present, else the first), and every strip
answer says which leads it received and which it analysed."""

import httpx
import numpy as np
import pytest
import wfdb

from conftest import ROOT, served


@pytest.fixture(scope="module")
def base():
    with served() as (url, _):
        yield url


@pytest.fixture(scope="module")
def record_100(fixture_dir):
    return wfdb.rdrecord(str(fixture_dir / "100"), physical=False)


@pytest.fixture(scope="module")
def leads_100(record_100):
    """Record 100's two leads in mV, by name (MLII, V5)."""
    mv = (record_100.d_signal - np.asarray(record_100.baseline)) / np.asarray(record_100.adc_gain)
    return {name: mv[:, i].tolist() for i, name in enumerate(record_100.sig_name)}


def post(base, **body):
    return httpx.post(f"{base}/predict/strip", json={"sampling_rate": 360, **body}, timeout=120)


def answer(response) -> dict:
    assert response.status_code == 200, response.text[:500]
    return response.json()


def errors(response) -> list[tuple[tuple, str]]:
    assert response.status_code == 422, (response.status_code, response.text[:500])
    return [(tuple(e["loc"]), e["msg"]) for e in response.json()["detail"]]


def named(*names, seconds=12.0, signal=None):
    """Leads of an ECG-like test strip (or of `signal`), one per name."""
    if signal is None:
        t = np.arange(int(seconds * 360)) / 360
        signal = (np.exp(-((t % 0.8) - 0.4) ** 2 / 2e-4) + 0.05 * np.sin(2 * np.pi * t)).tolist()
    return [{"name": name, "signal": signal} for name in names]


@pytest.fixture(scope="module")
def as_signal(base, leads_100):
    return answer(post(base, signal=leads_100["MLII"]))


def test_two_leads_give_exactly_the_beats_and_labels_of_their_mlii_lead(base, leads_100, as_signal):
    two = answer(post(base, leads=[{"name": "MLII", "signal": leads_100["MLII"]},
                                   {"name": "V5", "signal": leads_100["V5"]}]))
    assert two["summary"]["lead"] == "MLII"
    assert two["summary"]["leads_received"] == ["MLII", "V5"]
    assert as_signal["summary"]["lead"] is None and as_signal["summary"]["leads_received"] is None
    assert len(two["beats"]) == len(as_signal["beats"]) > 100
    assert [b["sample"] for b in two["beats"]] == [b["sample"] for b in as_signal["beats"]]
    assert [b["label"] for b in two["beats"]] == [b["label"] for b in as_signal["beats"]]
    assert [b["probabilities"] for b in two["beats"]] == [b["probabilities"] for b in as_signal["beats"]]
    assert two["report"] == as_signal["report"]


def test_mlii_is_chosen_wherever_it_stands(base, leads_100, as_signal):
    two = answer(post(base, leads=[{"name": "V5", "signal": leads_100["V5"]},
                                   {"name": "MLII", "signal": leads_100["MLII"]}]))
    assert two["summary"]["lead"] == "MLII" and two["summary"]["leads_received"] == ["V5", "MLII"]
    assert [b["sample"] for b in two["beats"]] == [b["sample"] for b in as_signal["beats"]]


@pytest.mark.parametrize("choice", ["V5", "1", 1])
def test_lead_chooses_the_lead_analysed_by_name_or_index(base, leads_100, as_signal, choice):
    chosen = answer(post(base, lead=choice, leads=[{"name": "MLII", "signal": leads_100["MLII"]},
                                                   {"name": "V5", "signal": leads_100["V5"]}]))
    assert chosen["summary"]["lead"] == "V5"
    assert chosen["summary"]["leads_received"] == ["MLII", "V5"]
    assert chosen["beats"], chosen["reason"]
    alone = answer(post(base, signal=leads_100["V5"]))
    assert [b["sample"] for b in chosen["beats"]] == [b["sample"] for b in alone["beats"]]
    assert [b["probabilities"] for b in chosen["beats"]] == [b["probabilities"] for b in alone["beats"]]
    assert [b["probabilities"] for b in chosen["beats"]] != [b["probabilities"] for b in as_signal["beats"]]


def test_a_one_lead_list_is_analysed_whatever_its_name(base, leads_100, as_signal):
    for name in ("MLII", "II"):
        one = answer(post(base, leads=[{"name": name, "signal": leads_100["MLII"]}]))
        assert one["summary"]["lead"] == name and one["summary"]["leads_received"] == [name]
        assert [b["label"] for b in one["beats"]] == [b["label"] for b in as_signal["beats"]]


def test_adc_units_apply_to_the_lead_chosen(base, record_100, as_signal):
    d = record_100.d_signal
    raw = answer(post(base, units="adc", gain=200, baseline=1024, lead="MLII",
                      leads=[{"name": "V5", "signal": d[:, 1].tolist()}, {"name": "MLII", "signal": d[:, 0].tolist()}]))
    assert raw["summary"]["lead"] == "MLII"
    assert [b["label"] for b in raw["beats"]] == [b["label"] for b in as_signal["beats"]]


@pytest.mark.parametrize("body,loc,words", [
    ({"signal": [0.1] * 4320, "leads": named("MLII")}, ("body", "leads"), "not both"),
    ({}, ("body", "signal"), "several as 'leads'"),
    ({"leads": named("MLII") + [{"name": "V5", "signal": [0.1] * 4000}]}, ("body", "leads", 1, "signal"),
     "same number"),
    ({"leads": named("MLII", "V5", "MLII")}, ("body", "leads", 2, "name"), "given twice"),
    ({"lead": "V6", "leads": named("MLII", "V5")}, ("body", "lead"), "'V6' not found; available: 'MLII', 'V5'"),
    ({"lead": "2", "leads": named("MLII", "V5")}, ("body", "lead"), "not found"),
    ({"lead": "MLII", "signal": [0.1] * 4320}, ("body", "lead"), "'lead' chooses one of 'leads'"),
    ({"leads": named(*(f"V{i}" for i in range(17)))}, ("body", "leads"), "at most 16"),
    ({"leads": []}, ("body", "leads"), "at least 1"),
    ({"leads": named("")}, ("body", "leads", 0, "name"), "at least 1 character"),
    ({"leads": named("MLII\n")}, ("body", "leads", 0, "name"), "pattern"),
    ({"leads": named("L" * 17)}, ("body", "leads", 0, "name"), "at most 16 characters"),
    ({"leads": named("MLII", seconds=5)}, ("body", "leads"), "lead 'MLII' (the lead analysed): strip lasts 5.0 s"),
    ({"lead": "V5", "leads": named("MLII") + named("V5", signal=[0.0] * 4320)}, ("body", "leads"),
     "lead 'V5' (the lead analysed): flat line"),
    ({"leads": [{"name": "MLII", "signal": [0.1] * 4320, "gain": 2}]}, ("body", "leads", 0, "gain"), "Extra"),
    ({"leads": [{"name": "MLII", "signal": ["0.1"] * 4320}]}, ("body", "leads", 0, "signal", 0), "valid number"),
    ({"leads": named("MLII"), "units": "adc"}, ("body", "gain"), "need the gain"),
], ids=["both", "neither", "unequal-lengths", "duplicate-names", "unknown-name", "index-past-the-leads",
        "lead-without-leads", "17-leads", "no-leads", "empty-name", "unprintable-name", "long-name",
        "chosen-too-short", "chosen-flat", "extra-field", "text-samples", "adc-without-gain"])
def test_bad_multi_lead_strips_are_422_naming_the_problem(base, body, loc, words):
    found = errors(post(base, **body))
    assert any(l == loc and words in m for l, m in found), found


def test_an_unknown_model_is_reported_before_an_unknown_lead(base):
    found = errors(post(base, model="nope", lead="V6", leads=named("MLII", "V5")))
    assert found[0][0] == ("body", "model")


def test_too_many_samples_over_all_leads_are_refused_before_parsing(base):
    lead = b'{"name": "L%d", "signal": [' + b"1," * 480_000 + b"1]}"
    body = b'{"sampling_rate": 360, "leads": [' + b", ".join(lead % i for i in range(16)) + b"]}"
    response = httpx.post(f"{base}/predict/strip", content=body, headers={"content-type": "application/json"},
                          timeout=120)
    found = errors(response)
    assert found[0][0] == ("body", "leads") and "7200000 samples in all" in found[0][1]
    one = b'{"sampling_rate": 360, "signal": [' + b"1," * 3_700_000 + b"1]}"
    response = httpx.post(f"{base}/predict/strip", content=one, headers={"content-type": "application/json"},
                          timeout=120)
    assert errors(response)[0] == (("body", "signal"), "signal holds more than 3600000 samples")


def test_wfdb_and_fhir_answers_name_the_leads_received(base, fixture_dir):
    files = {"header": ("100.hea", (fixture_dir / "100.hea").read_bytes()),
             "signal": ("100.dat", (fixture_dir / "100.dat").read_bytes())}
    default = answer(httpx.post(f"{base}/predict/wfdb", files=files, timeout=120))
    assert default["summary"]["lead"] == "MLII" and default["summary"]["leads_received"] == ["MLII", "V5"]
    chosen = answer(httpx.post(f"{base}/predict/wfdb", params={"lead": "1"}, files=files, timeout=120))
    assert chosen["summary"]["lead"] == "V5" and chosen["summary"]["leads_received"] == ["MLII", "V5"]
    fhir = answer(httpx.post(f"{base}/predict/fhir", params={"lead": "V5"},
                             content=(ROOT / "examples" / "observation.json").read_bytes(),
                             headers={"content-type": "application/json"}, timeout=120))
    assert fhir["summary"]["lead"] == "V5" and fhir["summary"]["leads_received"] == ["MLII", "V5"]


def test_the_schema_documents_the_multi_lead_form(base):
    schemas = httpx.get(f"{base}/openapi.json", timeout=30).json()["components"]["schemas"]
    request = schemas["StripRequest"]
    assert {"signal", "leads", "lead"} <= set(request["properties"])
    assert "one lead is analysed" in request["properties"]["leads"]["description"]
    assert any("leads" in example for example in request["examples"])
    summary = schemas["StripSummary"]["properties"]
    assert "leads_received" in summary and "one lead is analysed" in summary["lead"]["description"]
