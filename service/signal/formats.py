"""Strips in the formats hospitals already hold: WFDB records and HL7 FHIR Observations (R4 and R5),
and the JSON strips of /predict/strip.

WFDB and FHIR are read with their communities' libraries (wfdb; fhir.resources). Every reader
returns the one lead analysed (the shipped models read one lead), in mV with its sampling rate, and
the names of the leads the input held; of several, `lead` chooses one by name or 0-based index
(default MLII where present, else the first: `_pick`, the one rule of every format).

FHIR Observations are validated with fhir.resources: R4 ones with its R4B models (whose
Observation and SampledData are R4's: the sampling step is `period`, in ms), R5 ones
(fhir.resources' default) with its R5 models (the step is `interval` in `intervalUnit`). An
Observation whose SampledData has `interval` is read as R5, else as R4.

Whatever a file holds, a fault is answered with what is wrong with the file, in words: never a
library's message (which may name a temporary path or an array shape), and never a value the
service cannot use replaced by a default (a WFDB header without a usable sampling frequency is
refused, not read at WFDB's default of 250 Hz).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb
from fhir.resources.observation import Observation as ObservationR5
from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from service.signal.strips import MAX_SECONDS, StripError

DEFAULT_LEAD = "MLII"
UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}
INTERVAL_TO_MS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3, "min": 60000.0}  # R5 intervalUnit (UCUM)
FILE_NAME = re.compile(r"[\w-][\w.-]*")  # a plain file name: no path, not "." or ".."
FS_FIELD = re.compile(r"\d+(\.\d*)?([eE][+-]?\d+)?")  # a WFDB frequency field's number (before any "/")
MAX_COMPONENTS = 64  # leads of one Observation (a 12-lead ECG has 12 to 15)
MAX_NESTING = 64  # JSON depth of an Observation; FHIR's own structures stay far below
QUOTED = 24
TOKEN_SLICE = 1 << 22  # characters of SampledData.data looked at at once when counting its samples
# bytes per sample of the WFDB signal formats, to tell a signal file from another file
FORMAT_BYTES = {"8": 1, "16": 2, "61": 2, "80": 1, "160": 2, "212": 1.5, "24": 3, "32": 4, "310": 4 / 3, "311": 4 / 3}


@dataclass(frozen=True)
class Lead:
    signal_mv: np.ndarray
    fs: float
    name: str | None  # the lead analysed, where the input names leads
    received: tuple[str, ...] | None = None  # every lead the input held, in order, where it names them


def quoted(value: str) -> str:
    """A name from the client's file as a message repeats it: escaped and cut short."""
    return repr(value[:QUOTED]) + ("..." if len(value) > QUOTED else "")


def _pick(names: list[str], lead: str | None, field: str) -> int:
    """Index of `lead` (a name or a 0-based index); default MLII where present, else the first."""
    if lead is None:
        return names.index(DEFAULT_LEAD) if DEFAULT_LEAD in names else 0
    if lead in names:
        return names.index(lead)
    if lead.isascii() and lead.isdigit() and int(lead) < len(names):
        return int(lead)
    shown = ", ".join(quoted(n) for n in names[:16]) + (f" and {len(names) - 16} more" if len(names) > 16 else "")
    raise StripError(field, f"lead {quoted(lead)} not found; available: {shown}")


def header_fields(header: bytes) -> tuple[str, str, float]:
    """(record name, its one signal file, sampling frequency) of a WFDB header, checked."""
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError:
        raise StripError("header", "the header file is not a WFDB header (.hea, ASCII text): was the signal "
                                   "file sent as the header?") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        raise StripError("header", "WFDB header is empty")
    fields = lines[0].split()
    record = fields[0].split("/")[0]
    files = {line.split()[0] for line in lines[1:] if line.split()}
    if not FILE_NAME.fullmatch(record) or len(files) != 1 or not all(FILE_NAME.fullmatch(f) for f in files):
        raise StripError("header", "WFDB header must name one record and exactly one signal file (no paths)")
    if len(fields) < 2 or not fields[1].isascii() or not fields[1].isdigit():
        raise StripError("header", "WFDB header's record line must give the number of signals")
    if len(fields) < 3:
        raise StripError("header", "WFDB header gives no sampling frequency; the service does not assume "
                                   "WFDB's default of 250 Hz: add it to the record line")
    frequency = fields[2].split("/")[0]
    fs = float(frequency) if FS_FIELD.fullmatch(frequency) else math.nan
    if not (math.isfinite(fs) and fs > 0):
        raise StripError("header", f"WFDB header's sampling frequency {quoted(fields[2])} is not a positive "
                                   "number of Hz")
    return record, files.pop(), fs


def _check_signal_size(folder: Path, record: str, size: int) -> None:
    """Refuse a signal file too short for what its header describes (a .atr, a .hea, another record)."""
    try:
        header = wfdb.rdheader(str(folder / record))
    except Exception:  # wfdb raises many types for malformed headers
        raise StripError("header", "cannot read the WFDB header: it does not follow the WFDB header format") from None
    formats = [str(f) for f in header.fmt or []]
    if not header.sig_len or not formats or any(f not in FORMAT_BYTES for f in formats):
        return
    need = math.ceil(header.sig_len * sum(FORMAT_BYTES[f] for f in formats)) + ((header.byte_offset or [0])[0] or 0)
    if size < need:
        raise StripError("signal", f"the signal file holds {size} bytes; its header describes {header.sig_len} "
                                   f"samples of {header.n_sig} signals in format {formats[0]} ({need} bytes): "
                                   "is it the record's signal file (.dat)?")


def read_wfdb(header: bytes, signal: bytes | str, lead: str | None = None, folder: str | None = None) -> Lead:
    """A WFDB record uploaded as its header (.hea) and its one signal file (e.g. .dat), given as
    bytes or as the path of a file holding them; written into `folder` (a fresh temporary folder
    when none is given: the caller that gives one removes it, even if this process is killed)."""
    record, signal_file, fs = header_fields(header)
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="ecg-wfdb-") as own:
            return read_wfdb(header, signal, lead, own)
    where = Path(folder)
    (where / f"{record}.hea").write_bytes(header)
    target = where / signal_file
    if isinstance(signal, (bytes, bytearray)):
        target.write_bytes(signal)
    else:
        os.symlink(os.path.abspath(signal), target)
    _check_signal_size(where, record, target.stat().st_size)
    try:
        data = wfdb.rdrecord(str(where / record), physical=True)
    except Exception:  # wfdb and numpy raise many types for malformed records; their words name our paths
        raise StripError("signal", "cannot read the WFDB record: the signal file does not match its header "
                                   "(format, number of signals or length)") from None
    if data.p_signal is None or data.p_signal.size == 0:
        raise StripError("signal", "WFDB record holds no samples")
    index = _pick([str(n) for n in data.sig_name], lead, "lead")
    if not math.isclose(float(data.fs), fs):
        raise StripError("header", "WFDB header's sampling frequency could not be read as written")
    return Lead(data.p_signal[:, index], fs, data.sig_name[index], tuple(str(n) for n in data.sig_name))


def _sampled_data(observation, lead: str | None):
    """The valueSampledData of the Observation, or of the component named by `lead`, with its name,
    where it stands ("value", or the component's index) and the names of the components with
    SampledData (None when valueSampledData is read)."""
    if observation.valueSampledData is not None and lead is None:
        return observation.valueSampledData, None, "value", None
    places = [i for i, c in enumerate(observation.component or []) if c.valueSampledData is not None]
    components = [observation.component[i] for i in places]
    if not components:
        if observation.valueSampledData is not None:
            raise StripError("lead", "this Observation has one lead in valueSampledData; omit 'lead'")
        raise StripError("observation", "Observation has no valueSampledData (nor components with one)")
    names = []
    for c in components:
        codings = c.code.coding or []
        names.append(c.code.text or next((x.display or x.code for x in codings if x.display or x.code), "?"))
    if lead is not None:
        for c, name, place in zip(components, names, places):
            codes = {x.code for x in c.code.coding or []} | {x.display for x in c.code.coding or []}
            if lead == name or lead in codes:
                return c.valueSampledData, name, place, tuple(names)
    index = _pick(names, lead, "lead")
    return components[index].valueSampledData, names[index], places[index], tuple(names)


def read_strip(request) -> Lead:
    """A validated /predict/strip body (service.schemas.StripRequest): its `signal`, or of its
    `leads` the one `lead` chooses, in mV. Only that lead becomes an array; the Python floats of
    every lead (32 bytes a sample) are freed here, the others' before the chosen one is copied."""
    names = request.lead_names
    if names is None:
        samples, name = request.signal, None
    else:
        index = _pick(names, request.lead, "lead")
        for i, other in enumerate(request.leads):
            if i != index:
                del other.signal[:]
        samples, name = request.leads[index].signal, names[index]
    signal = np.asarray(samples, dtype=np.float64)
    del samples[:]
    if request.units == "adc":
        if request.gain is None:
            raise StripError("gain", "units 'adc' need the gain (ADC units per mV)")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            signal = (signal - request.baseline) / request.gain
    return Lead(signal, request.sampling_rate, name, None if names is None else tuple(names))


def _set_data_aside(payload: dict) -> tuple[dict, dict]:
    """The Observation with each SampledData.data replaced by "0", and the data strings by place:
    the model validation then neither copies nor pattern-matches megabytes of samples."""
    aside = {}

    def take(holder: dict, place) -> dict:
        sampled = holder.get("valueSampledData")
        if isinstance(sampled, dict) and isinstance(sampled.get("data"), str):
            aside[place] = sampled["data"]
            return {**holder, "valueSampledData": {**sampled, "data": "0"}}
        return holder

    payload = take(payload, "value")
    if isinstance(payload.get("component"), list):
        payload = {**payload, "component": [take(c, i) if isinstance(c, dict) else c
                                            for i, c in enumerate(payload["component"])]}
    return payload, aside


def _count_tokens(data: str) -> int:
    """Whitespace-separated tokens of SampledData.data, counted without splitting the string."""
    tokens, after_space = 0, True
    for start in range(0, len(data), TOKEN_SLICE):  # a slice at a time: temporaries stay small
        raw = np.frombuffer(data[start:start + TOKEN_SLICE].encode("utf-8", "replace"), np.uint8)
        space = (raw == 32) | ((raw >= 9) & (raw <= 13))
        tokens += int(after_space and not space[0]) + int(np.count_nonzero(space[:-1] & ~space[1:]))
        after_space = bool(space[-1])
    return tokens


def _nesting(payload, limit: int) -> int:
    """Depth of a JSON value, walked without recursion, stopping past `limit`."""
    deepest, stack = 0, [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def is_r5(payload: dict) -> bool:
    """An R5 Observation: its SampledData steps by `interval` (R4's by `period`)."""
    sampled = [payload.get("valueSampledData")] + [c.get("valueSampledData") for c in payload.get("component") or []
                                                   if isinstance(c, dict)]
    return any(isinstance(s, dict) and "interval" in s for s in sampled)


def _samples(data: str) -> np.ndarray:
    """SampledData.data (decimals separated by spaces) as float64, without a Python object per sample."""
    if re.search(r"(?:^|\s)[ELU](?=\s|$)", data):
        raise StripError("observation", "SampledData.data holds E/L/U markers (error or out-of-range samples)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns, and stops, at the first token that is not a number
        try:
            values = np.fromstring(data, dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            raise StripError("observation", "SampledData.data must be decimals separated by spaces") from None
    return values


def read_fhir(payload: dict, lead: str | None = None) -> Lead:
    """An HL7 FHIR Observation (R4 or R5) carrying ECG as SampledData (origin, period or interval,
    factor, dimensions, data)."""
    if not isinstance(payload, dict) or payload.get("resourceType") != "Observation":
        raise StripError("observation", "body must be a FHIR Observation (resourceType 'Observation')")
    components = payload.get("component")
    if isinstance(components, list) and len(components) > MAX_COMPONENTS:
        raise StripError("observation", f"Observation has {len(components)} components; at most {MAX_COMPONENTS} "
                                        "leads are read")
    if _nesting(payload, MAX_NESTING) > MAX_NESTING:
        raise StripError("observation", f"Observation is nested more than {MAX_NESTING} levels deep")
    r5 = is_r5(payload)
    payload, aside = _set_data_aside(payload)
    try:
        observation = (ObservationR5 if r5 else Observation).model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x)[:QUOTED] for x in first["loc"])
        release = "R5" if r5 else "R4 (an R5 Observation steps by valueSampledData.interval)"
        raise StripError("observation", f"invalid FHIR {release} Observation at {where}: {first['msg'][:200]}") from None
    sampled, name, place, received = _sampled_data(observation, lead)
    data = aside.get(place) if sampled.data else None
    if not data:
        raise StripError("observation", "SampledData.data is empty")
    period_ms = _period_ms(sampled, r5)
    dimensions = int(sampled.dimensions)
    most = int(MAX_SECONDS * 1000.0 / period_ms * max(dimensions, 1)) + 1
    if _count_tokens(data) > most:  # refused before an array is built for it
        raise StripError("observation", f"SampledData.data holds more than {MAX_SECONDS:g} s of samples")
    values = _samples(data)
    if dimensions < 1 or values.size % dimensions:
        raise StripError("observation", f"{values.size} samples do not split into {dimensions} dimensions")
    values = values.reshape(-1, dimensions)[:, 0]
    unit = (sampled.origin.code or sampled.origin.unit or "mV").lower()
    if unit not in UNIT_TO_MV:
        raise StripError("observation", f"unsupported unit {quoted(unit)}; use mV, uV or V")
    factor = float(sampled.factor) if sampled.factor is not None else 1.0
    origin = float(sampled.origin.value or 0)
    if not (math.isfinite(factor) and math.isfinite(origin)):
        raise StripError("observation", "SampledData.factor and origin must be finite numbers")
    with np.errstate(over="ignore", invalid="ignore"):
        signal = (origin + factor * values) * UNIT_TO_MV[unit]
    return Lead(signal, 1000.0 / period_ms, name, received)


def _period_ms(sampled, r5: bool) -> float:
    """Milliseconds between samples: R4's period, or R5's interval in its intervalUnit."""
    if r5:
        step_unit = str(sampled.intervalUnit or "").lower()
        if step_unit not in INTERVAL_TO_MS:
            raise StripError("observation", f"unsupported SampledData.intervalUnit {quoted(step_unit)}; use ms or s")
        period_ms = float(sampled.interval) * INTERVAL_TO_MS[step_unit]
    else:
        period_ms = float(sampled.period)
    if not (math.isfinite(period_ms) and period_ms > 0):
        raise StripError("observation", "SampledData's sampling step (period, or interval) must be positive")
    return period_ms
