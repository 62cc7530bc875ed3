"""Strips in the formats hospitals already hold: WFDB records and HL7 FHIR R4 Observations.

Both are read with their communities' libraries (wfdb; fhir.resources) and returned as one lead
in mV with its sampling rate. FHIR R4 Observations are validated with fhir.resources' R4B models,
whose Observation and SampledData are the same as R4's.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb
from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from service.signal.strips import StripError

DEFAULT_LEAD = "MLII"
UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}


@dataclass(frozen=True)
class Lead:
    signal_mv: np.ndarray
    fs: float
    name: str | None


def _pick(names: list[str], lead: str | None, field: str) -> int:
    """Index of `lead` (a name or a 0-based index); default MLII where present, else the first."""
    if lead is None:
        return names.index(DEFAULT_LEAD) if DEFAULT_LEAD in names else 0
    if lead in names:
        return names.index(lead)
    if lead.isdigit() and int(lead) < len(names):
        return int(lead)
    raise StripError(field, f"lead {lead!r} not found; available: {', '.join(names)}")


def read_wfdb(header: bytes, signal: bytes, lead: str | None = None) -> Lead:
    """A WFDB record uploaded as its header (.hea) and its one signal file (e.g. .dat)."""
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError:
        raise StripError("header", "WFDB header is not ASCII text") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        raise StripError("header", "WFDB header is empty")
    record = lines[0].split()[0].split("/")[0]
    files = {line.split()[0] for line in lines[1:] if line.split()}
    if not re.fullmatch(r"[\w.-]+", record) or len(files) != 1 or not all(re.fullmatch(r"[\w.-]+", f) for f in files):
        raise StripError("header", "WFDB header must name one record and exactly one signal file (no paths)")
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / f"{record}.hea").write_bytes(header)
        (Path(folder) / files.pop()).write_bytes(signal)
        try:
            data = wfdb.rdrecord(str(Path(folder) / record), physical=True)
        except Exception as err:  # wfdb raises many types for malformed records
            raise StripError("signal", f"cannot read the WFDB record: {err}") from None
    if data.p_signal is None or data.p_signal.size == 0:
        raise StripError("signal", "WFDB record holds no samples")
    index = _pick(list(data.sig_name), lead, "lead")
    return Lead(data.p_signal[:, index], float(data.fs), data.sig_name[index])


def _sampled_data(observation: Observation, lead: str | None):
    """The valueSampledData of the Observation, or of the component named by `lead`."""
    if observation.valueSampledData is not None and lead is None:
        return observation.valueSampledData, None
    components = [c for c in observation.component or [] if c.valueSampledData is not None]
    if not components:
        if observation.valueSampledData is not None:
            raise StripError("lead", "this Observation has one lead in valueSampledData; omit 'lead'")
        raise StripError("observation", "Observation has no valueSampledData (nor components with one)")
    names = []
    for c in components:
        codings = c.code.coding or []
        names.append(c.code.text or next((x.display or x.code for x in codings if x.display or x.code), "?"))
    if lead is not None:
        for c, name in zip(components, names):
            codes = {x.code for x in c.code.coding or []} | {x.display for x in c.code.coding or []}
            if lead == name or lead in codes:
                return c.valueSampledData, name
    index = _pick(names, lead, "lead")
    return components[index].valueSampledData, names[index]


def read_fhir(payload: dict, lead: str | None = None) -> Lead:
    """An HL7 FHIR R4 Observation carrying ECG as SampledData (origin, period, factor, dimensions, data)."""
    if not isinstance(payload, dict) or payload.get("resourceType") != "Observation":
        raise StripError("observation", "body must be a FHIR Observation (resourceType 'Observation')")
    try:
        observation = Observation.model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise StripError("observation", f"invalid FHIR Observation at {where}: {first['msg']}") from None
    sampled, name = _sampled_data(observation, lead)
    if not sampled.data:
        raise StripError("observation", "SampledData.data is empty")
    tokens = sampled.data.split()
    if any(t in ("E", "L", "U") for t in tokens):
        raise StripError("observation", "SampledData.data holds E/L/U markers (error or out-of-range samples)")
    try:
        values = np.array(tokens, dtype=np.float64)
    except ValueError:
        raise StripError("observation", "SampledData.data must be decimals separated by spaces") from None
    dimensions = int(sampled.dimensions)
    if values.size % dimensions:
        raise StripError("observation", f"{values.size} samples do not split into {dimensions} dimensions")
    values = values.reshape(-1, dimensions)[:, 0]
    unit = (sampled.origin.code or sampled.origin.unit or "mV").lower()
    if unit not in UNIT_TO_MV:
        raise StripError("observation", f"unsupported unit {unit!r}; use mV, uV or V")
    factor = float(sampled.factor) if sampled.factor is not None else 1.0
    signal = (float(sampled.origin.value or 0) + factor * values) * UNIT_TO_MV[unit]
    period_ms = float(sampled.period)
    if period_ms <= 0:
        raise StripError("observation", "SampledData.period must be positive")
    return Lead(signal, 1000.0 / period_ms, name)
