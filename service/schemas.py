"""Request and response models: the public contract of /predict (v1)."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from service.signal.beats import BEAT_LENGTH
from service.signal.context import CONTEXT_FS, RR_FIELDS, WINDOW_AFTER, WINDOW_BEFORE, WINDOW_LENGTH, ContextBeats, network_input
from service.models.solver import ADAPTIVE_METHODS, FIXED_STEP_METHODS

Sample = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]
Beat = Annotated[list[Sample], Field(min_length=BEAT_LENGTH, max_length=BEAT_LENGTH)]
Method = Literal[ADAPTIVE_METHODS + FIXED_STEP_METHODS]
Tolerance = Annotated[float, Field(strict=True, gt=0.0, le=1.0, allow_inf_nan=False)]

EXAMPLE_BEAT = [round(0.9 * 0.97 ** i + 0.05, 4) for i in range(BEAT_LENGTH)]


class SolverRequest(BaseModel):
    """ODE solver settings; only for ODE models. Omitted fields take the defaults shown."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field("dopri5", description="adaptive: " + ", ".join(ADAPTIVE_METHODS)
                           + "; fixed-step: " + ", ".join(FIXED_STEP_METHODS))
    rtol: Tolerance = Field(1e-3, description="relative tolerance (adaptive methods)")
    atol: Tolerance = Field(1e-3, description="absolute tolerance (adaptive methods)")
    step_size: Annotated[float, Field(strict=True, gt=0.0, le=1.0, allow_inf_nan=False)] | None = Field(
        None, description="step over t in [0, 1] (fixed-step methods; default 0.25)")


WaveSample = Annotated[float, Field(strict=True, ge=-100.0, le=100.0, allow_inf_nan=False)]
Wave = Annotated[list[WaveSample], Field(min_length=WINDOW_LENGTH, max_length=WINDOW_LENGTH)]
Interval = Annotated[float, Field(strict=True, gt=0.0, le=60.0, allow_inf_nan=False)]
WINDOW_MS = f"{1000 * WINDOW_BEFORE / CONTEXT_FS:.0f} ms before to {1000 * WINDOW_AFTER / CONTEXT_FS:.0f} ms after"


class ContextBeat(BaseModel):
    """One context beat as service.signal.context.context_beats builds it from a lead and its R-peaks."""

    model_config = ConfigDict(extra="forbid")

    window: Wave = Field(..., description=f"{WINDOW_LENGTH} samples at {CONTEXT_FS} Hz from {WINDOW_MS} the "
                         "R-peak, band-passed, divided by the running QRS amplitude")
    template: Wave = Field(..., description="the patient's running median beat, same format")
    pre_rr: Interval | None = Field(None, description="s from the previous R-peak; null for a strip's first beat")
    post_rr: Interval | None = Field(None, description="s to the next R-peak; null for a strip's last beat")
    prev_rr: Interval | None = Field(None, description="the RR interval before pre_rr (s); null if unknown")
    local_rr: Interval = Field(..., description="mean of the last 10 RR intervals (s)")
    long_rr: Interval = Field(..., description="mean RR interval of the last 5 minutes (s)")
    irregularity: Annotated[float, Field(strict=True, ge=0.0, le=10.0, allow_inf_nan=False)] = Field(
        0.0, description="mean absolute log ratio of successive RR intervals among the last 10")


def context_inputs(beats: list[ContextBeat]) -> np.ndarray:
    """Validated context beats -> the network input array, through the shared service.signal.context code."""
    rr = np.array([[np.nan if getattr(b, f) is None else getattr(b, f) for f in RR_FIELDS] for b in beats])
    return network_input(ContextBeats(np.array([b.window for b in beats], dtype=np.float32),
                                      np.array([b.template for b in beats], dtype=np.float32), rr))


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"model": "odenet", "beats": [EXAMPLE_BEAT], "solver": {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3}},
            {"model": "resnet", "beats": [EXAMPLE_BEAT, EXAMPLE_BEAT]},
        ]},
    )

    model: str | None = Field(None, description="model name from GET /models (default: the service's default "
                              "for the input sent)")
    beats: list[Beat] | None = Field(None, min_length=1, description=f"beats of {BEAT_LENGTH} samples at 125 Hz "
                                     "in [0, 1], for models whose input is 'beat'")
    context_beats: list[ContextBeat] | None = Field(None, min_length=1, description="context beats, for models "
                                                    "whose input is 'context'")
    solver: SolverRequest | None = Field(None, description="ODE models only")

    @model_validator(mode="after")
    def one_input(self) -> "PredictRequest":
        if (self.beats is None) == (self.context_beats is None):
            raise ValueError("send exactly one of 'beats' (187-sample beats) and 'context_beats'")
        return self

    @property
    def input_kind(self) -> str:
        return "beat" if self.beats is not None else "context"

    def inputs(self) -> np.ndarray:
        if self.beats is not None:
            return np.asarray(self.beats, dtype=np.float32)
        return context_inputs(self.context_beats)


CONFIDENCE = ("probability of the label given (calibrated where the model's card has a decision; "
              "see docs/models.md#confidence-and-review)")
LABEL = ("the most probable class, except that a model whose card has a decision calls S, V or F only at or "
         "above its minimum probability for it (see docs/models.md#confidence-and-review)")
AF_CRITERIA = ("true where the 128 RR intervals ending at this beat meet the criteria of atrial fibrillation "
               "(Dash et al. 2009), so the model's decision gave S's probability to N: in atrial fibrillation "
               "AAMI labels every beat N. Frequent ventricular ectopy meets them too; not a diagnosis. Null where "
               "the model's decision does not read the rhythm (docs/api.md#whole-strips)")
REVIEW = ("true when the confidence is below the model's review threshold (chosen so that about 95 % of "
          "held-out beats are labelled without review); null for models without one")


class BeatPrediction(BaseModel):
    label: str = Field(..., description=LABEL)
    class_index: int = Field(..., description="index of the label in the model's classes")
    probabilities: dict[str, float]
    confidence: float = Field(..., description=CONFIDENCE)
    review: bool | None = Field(None, description=REVIEW)
    nfe: int | None = Field(None, description="function evaluations of this beat's solve (ODE models)")


class SolverReport(BaseModel):
    method: str
    rtol: float
    atol: float
    step_size: float | None
    nfe: int = Field(..., description="the most function evaluations any beat needed (each beat is solved on "
                     "its own; dopri5 spends 2 + 6 per step)")
    nfe_total: int = Field(..., description="function evaluations of all beats together")


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[BeatPrediction]
    solver: SolverReport | None
    latency_ms: float = Field(..., description="time spent in the predictor")


MAX_STRIP_SAMPLES = 3_600_000  # 60 min at 1000 Hz
MAX_STRIP_LEADS = 16
MAX_STRIP_TOTAL_SAMPLES = 2 * MAX_STRIP_SAMPLES  # all leads together: two leads of 60 min at 1000 Hz
MAX_LEAD_NAME = 16
StripSample = Annotated[float, Field(strict=True, allow_inf_nan=False)]
LeadName = Annotated[str, Field(min_length=1, max_length=MAX_LEAD_NAME, pattern=r"^[ -~]+$")]
LEAD_RULE = "default MLII where present, else the first"


def index_as_text(value):
    """A lead chosen by a JSON integer, read as the same index written as text ("1")."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


LeadChoice = Annotated[LeadName, BeforeValidator(index_as_text), WithJsonSchema({"anyOf": [
    {"type": "string", "minLength": 1, "maxLength": MAX_LEAD_NAME, "pattern": "^[ -~]+$"},
    {"type": "integer", "minimum": 0, "maximum": MAX_STRIP_LEADS - 1}]})]
ONE_LEAD = "the shipped models read one lead, so one lead is analysed"


class StripLead(BaseModel):
    """One lead of a multi-lead strip: its name and its samples."""

    model_config = ConfigDict(extra="forbid")

    name: LeadName = Field(..., description=f"1-{MAX_LEAD_NAME} printable ASCII characters, unique in the "
                           "request (e.g. MLII, V5, II)")
    signal: list[StripSample] = Field(..., min_length=1, max_length=MAX_STRIP_SAMPLES,
                                      description="the lead's samples, in the strip's units; every lead holds "
                                      "the same number")


def refused(*errors: tuple[tuple, str, object]) -> ValidationError:
    """A validation error at the fields named (loc, message, input), as pydantic reports its own."""
    return ValidationError.from_exception_data("StripRequest", [
        InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)
        for loc, message, value in errors])


class StripRequest(BaseModel):
    """Raw ECG as it comes off the device, one lead (`signal`) or several (`leads`); R-peaks are
    found by the service."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"model": "odenet", "sampling_rate": 360, "units": "mV", "signal": [-0.145, -0.145, -0.15, "..."]},
            {"model": "resnet", "sampling_rate": 500, "units": "adc", "gain": 200, "baseline": 1024,
             "signal": [995, 995, 995, "..."]},
            {"sampling_rate": 360, "units": "mV", "lead": "MLII",
             "leads": [{"name": "MLII", "signal": [-0.145, -0.145, -0.15, "..."]},
                       {"name": "V5", "signal": [-0.065, -0.065, -0.065, "..."]}]},
        ]},
    )

    model: str | None = Field(None, description="model name from GET /models")
    solver: SolverRequest | None = Field(None, description="ODE models only")
    sampling_rate: Annotated[float, Field(strict=True, ge=100, le=1000, allow_inf_nan=False)] = Field(
        ..., description="samples per second, 100-1000 Hz")
    units: Literal["mV", "adc"] = Field("mV", description="mV, or raw ADC units with gain and baseline")
    gain: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)] | None = Field(
        None, description="ADC units per mV (units = adc)")
    baseline: Annotated[float, Field(strict=True, allow_inf_nan=False)] = Field(
        0.0, description="ADC value of 0 mV (units = adc)")
    signal: list[StripSample] | None = Field(None, min_length=1, max_length=MAX_STRIP_SAMPLES,
                                             description="10 s to 60 min of one lead (or send `leads`)")
    leads: list[StripLead] | None = Field(
        None, min_length=1, max_length=MAX_STRIP_LEADS,
        description=f"instead of `signal`: 1 to {MAX_STRIP_LEADS} named leads of the same length, at most "
                    f"{MAX_STRIP_TOTAL_SAMPLES} samples in all; {ONE_LEAD} (`lead`)")
    lead: LeadChoice | None = Field(
        None, description=f"with `leads`: the lead analysed, by name or 0-based index ({LEAD_RULE})")

    @model_validator(mode="after")
    def one_form(self) -> "StripRequest":
        if self.signal is not None and self.leads is not None:
            raise refused((("leads",), "send one lead as 'signal' or several as 'leads', not both", None))
        if self.signal is None and self.leads is None:
            raise refused((("signal",), "send one lead as 'signal' or several as 'leads'", None))
        if self.leads is None:
            if self.lead is not None:
                raise refused((("lead",), "'lead' chooses one of 'leads'; a strip sent as 'signal' has one lead: "
                                          "omit 'lead', or send 'leads'", self.lead))
            return self
        errors, seen = [], {}
        length = len(self.leads[0].signal)
        for i, lead in enumerate(self.leads):
            if lead.name in seen:
                errors.append((("leads", i, "name"), f"lead name {lead.name!r} is given twice (leads "
                                                     f"{seen[lead.name]} and {i}): lead names must be unique",
                               lead.name))
            seen.setdefault(lead.name, i)
            if len(lead.signal) != length:
                errors.append((("leads", i, "signal"), f"lead {lead.name!r} holds {len(lead.signal)} samples and "
                                                       f"lead {self.leads[0].name!r} {length}: every lead must "
                                                       "hold the same number", None))
        total = length * len(self.leads)
        if not errors and total > MAX_STRIP_TOTAL_SAMPLES:
            errors.append((("leads",), f"the leads hold {total} samples in all; at most {MAX_STRIP_TOTAL_SAMPLES} "
                                       f"(e.g. 2 leads of 60 min at 1000 Hz, or {MAX_STRIP_LEADS} of "
                                       f"{MAX_STRIP_TOTAL_SAMPLES / MAX_STRIP_LEADS / 60_000:g} min at 1000 Hz)",
                           None))
        if errors:
            raise refused(*errors)
        return self

    @property
    def lead_names(self) -> list[str] | None:
        """The names of the leads sent, in order (None for one lead sent as `signal`)."""
        return None if self.leads is None else [lead.name for lead in self.leads]


class StripBeat(BaseModel):
    sample: int = Field(..., description="R-peak sample index at the strip's sampling rate")
    time_s: float = Field(..., description="R-peak time from the strip's start")
    label: str = Field(..., description=LABEL)
    class_index: int = Field(..., description="index of the label in the model's classes")
    probabilities: dict[str, float]
    confidence: float = Field(..., description=CONFIDENCE)
    review: bool | None = Field(None, description=REVIEW)
    af_criteria: bool | None = Field(None, description=AF_CRITERIA)
    nfe: int | None = Field(None, description="function evaluations of this beat's solve (ODE models)")


class StripSummary(BaseModel):
    n_beats: int
    counts: dict[str, int]
    mean_heart_rate_bpm: float | None = Field(..., description="60 / mean RR interval; null under two beats")
    duration_s: float
    sampling_rate: float
    lead: str | None = Field(None, description=f"the lead analysed, where the input names leads; {ONE_LEAD}")
    leads_received: list[str] | None = Field(
        None, description="names of the leads the input held, in order (null where it names none: a strip sent "
                          "as `signal`, an Observation's valueSampledData); of them, `lead` was analysed")


class BeatCounts(BaseModel):
    total: int
    N: int
    S: int
    V: int
    F: int
    Q: int


class HeartRateWindow(BaseModel):
    start_s: float
    end_s: float
    bpm: float | None = Field(..., description="60 / mean RR of the window; null without an RR interval")
    beats: int


class HeartRate(BaseModel):
    min_bpm: float | None = Field(..., description="slowest window (of those at least half readable)")
    min_at_s: float | None = Field(..., description="start of the slowest window")
    mean_bpm: float | None = Field(..., description="60 / mean RR of the whole record")
    max_bpm: float | None
    max_at_s: float | None
    window_s: float
    trend: list[HeartRateWindow]


class Run(BaseModel):
    start_s: float = Field(..., description="R-peak of the run's first beat")
    end_s: float = Field(..., description="R-peak of the run's last beat")
    beats: int
    rate_bpm: float | None = Field(..., description="60 x (beats - 1) / (end_s - start_s)")


class Episode(BaseModel):
    start_s: float
    end_s: float
    beats: int


class Ectopy(BaseModel):
    isolated: int = Field(..., description="ectopic beats with no neighbour of their class")
    isolated_per_hour: float | None = Field(..., description="per hour of analysed signal")
    couplets: int = Field(..., description="exactly 2 consecutive")
    triplets: int = Field(..., description="exactly 3 consecutive (also listed in runs)")
    runs: list[Run] = Field(..., description=">= 3 consecutive")
    bigeminy: list[Episode]
    trigeminy: list[Episode]


class Pause(BaseModel):
    start_s: float = Field(..., description="R-peak that starts the pause")
    duration_s: float


class ReviewShare(BaseModel):
    beats: int = Field(..., description="beats flagged for review")
    share: float | None = Field(..., description="their share of all beats; null without beats")


class UnreadableSpan(BaseModel):
    start_s: float
    end_s: float
    reason: str | None


class RhythmReport(BaseModel):
    """A Holter-style rhythm report of the strip; every definition is in docs/reports.md."""

    duration_s: float
    analysed_s: float = Field(..., description="duration less the unreadable spans")
    beats: BeatCounts
    heart_rate: HeartRate
    ectopy: dict[Literal["V", "S"], Ectopy]
    pauses: list[Pause]
    pause_threshold_s: float
    review: ReviewShare
    unreadable: list[UnreadableSpan]
    definitions: str = Field(..., description="where the definitions are written down")


class StripResponse(BaseModel):
    model: str
    version: str
    beats: list[StripBeat]
    summary: StripSummary
    report: RhythmReport | None = Field(None, description="rhythm report of the strip (docs/reports.md)")
    solver: SolverReport | None
    latency_ms: float = Field(..., description="time spent in the predictor")
    reason: str | None = Field(None, description="why no beats were found, when none were")


QueryTolerance = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
AnswerFormat = Literal["json", "atr"]


class UploadOptions(BaseModel):
    """Options of the upload endpoints, as query parameters (the body is the record itself)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="model name from GET /models")
    lead: str | None = Field(None, description=f"lead name or 0-based index ({LEAD_RULE}); {ONE_LEAD}")
    method: Method | None = Field(None, description="ODE solver method (ODE models only)")
    rtol: QueryTolerance | None = None
    atol: QueryTolerance | None = None
    step_size: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] | None = None
    format: AnswerFormat = Field("json", description="json: the StripResponse; atr: the beats as a WFDB "
                                 "annotation file (MIT beat codes) to download")

    def solver(self) -> dict | None:
        """The solver settings the client set, if any."""
        given = {k: getattr(self, k) for k in ("method", "rtol", "atol", "step_size") if getattr(self, k) is not None}
        return given or None
