"""Remakes the request bodies in examples/ from the bundled MIT-BIH excerpts (tests/fixtures/mitdb),
so the curl examples in the README and docs/ post real ECG that anyone can trace back to its record.

    examples/observation.json  an HL7 FHIR R4 Observation: 30 s of record 100, leads MLII and V5 as
                               two components with SampledData (for /predict/fhir)
    examples/strip.json        a StripRequest: 20 s of record 208's MLII lead in ADC units (for
                               /predict/strip)

examples/request.json (three 187-sample beats for /predict) is not remade here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import wfdb

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "mitdb"
MDC = "urn:oid:2.16.840.1.113883.6.24"  # ISO/IEEE 11073 nomenclature, as HL7's ECG Observation example uses
UCUM = "http://unitsofmeasure.org"


def excerpt(record: str, start_s: float, seconds: float) -> wfdb.Record:
    """Raw ADC samples of `seconds` of a fixture record from `start_s`."""
    fs = wfdb.rdheader(str(FIXTURES / record)).fs
    start = int(start_s * fs)
    return wfdb.rdrecord(str(FIXTURES / record), sampfrom=start, sampto=start + int(seconds * fs), physical=False)


def observation(record: str, start_s: float, seconds: float) -> dict:
    """A FHIR R4 Observation with one component per lead; samples are ADC units minus the baseline,
    so origin 0 mV and factor 1/gain give millivolts exactly as the record's header defines them."""
    data = excerpt(record, start_s, seconds)
    components = []
    for index, lead in enumerate(data.sig_name):
        samples = data.d_signal[:, index].astype(int) - int(data.baseline[index])
        components.append({
            "code": {"text": lead},
            "valueSampledData": {
                "origin": {"value": 0, "unit": "mV", "system": UCUM, "code": "mV"},
                "period": 1000.0 / data.fs,
                "factor": 1.0 / data.adc_gain[index],
                "dimensions": 1,
                "data": " ".join(str(v) for v in samples),
            },
        })
    return {
        "resourceType": "Observation",
        "id": f"mitdb-{record}-{int(start_s)}s-{int(start_s + seconds)}s",
        "meta": {"source": "https://physionet.org/content/mitdb/1.0.0/"},
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "procedure", "display": "Procedure"}]}],
        "code": {"coding": [{"system": MDC, "code": "131328", "display": "MDC_ECG_ELEC_POTL"}],
                 "text": f"ECG, {len(components)} leads, {seconds:g} s of MIT-BIH record {record}"},
        "subject": {"display": f"MIT-BIH record {record}"},
        "component": components,
    }


def strip(record: str, start_s: float, seconds: float, lead: str = "MLII") -> dict:
    """A StripRequest body: one lead in ADC units with the header's gain and baseline."""
    data = excerpt(record, start_s, seconds)
    index = data.sig_name.index(lead)
    return {"sampling_rate": data.fs, "units": "adc", "gain": data.adc_gain[index],
            "baseline": int(data.baseline[index]), "signal": data.d_signal[:, index].astype(int).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "examples", help="folder to write (default examples/)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bodies = {"observation.json": observation("100", 10, 30), "strip.json": strip("208", 0, 20)}
    for name, body in bodies.items():
        (args.out / name).write_text(json.dumps(body, separators=(",", ":")) + "\n")
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
