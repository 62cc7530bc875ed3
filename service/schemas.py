"""Request and response models: the public contract of /predict (v1)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.beats import BEAT_LENGTH
from service.networks import ADAPTIVE_METHODS, FIXED_STEP_METHODS

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


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"model": "odenet", "beats": [EXAMPLE_BEAT], "solver": {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3}},
            {"model": "resnet", "beats": [EXAMPLE_BEAT, EXAMPLE_BEAT]},
        ]},
    )

    model: str | None = Field(None, description="model name from GET /models (default: the service's default)")
    beats: list[Beat] = Field(..., min_length=1, description=f"beats of {BEAT_LENGTH} samples at 125 Hz in [0, 1]")
    solver: SolverRequest | None = Field(None, description="ODE models only")


class BeatPrediction(BaseModel):
    label: str
    class_index: int
    probabilities: dict[str, float]


class SolverReport(BaseModel):
    method: str
    rtol: float
    atol: float
    step_size: float | None
    nfe: int = Field(..., description="function evaluations of the solve")


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[BeatPrediction]
    solver: SolverReport | None
    latency_ms: float = Field(..., description="time spent in the predictor")


MAX_STRIP_SAMPLES = 3_600_000  # 60 min at 1000 Hz
StripSample = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class StripRequest(BaseModel):
    """One lead of raw ECG as it comes off the device; R-peaks are found by the service."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"model": "odenet", "sampling_rate": 360, "units": "mV", "signal": [-0.145, -0.145, -0.15, "..."]},
            {"model": "resnet", "sampling_rate": 500, "units": "adc", "gain": 200, "baseline": 1024,
             "signal": [995, 995, 995, "..."]},
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
    signal: list[StripSample] = Field(..., min_length=1, max_length=MAX_STRIP_SAMPLES,
                                      description="10 s to 60 min of one lead")


class StripBeat(BaseModel):
    sample: int = Field(..., description="R-peak sample index at the strip's sampling rate")
    time_s: float = Field(..., description="R-peak time from the strip's start")
    label: str
    class_index: int
    probabilities: dict[str, float]


class StripSummary(BaseModel):
    n_beats: int
    counts: dict[str, int]
    mean_heart_rate_bpm: float | None = Field(..., description="60 / mean RR interval; null under two beats")
    duration_s: float
    sampling_rate: float
    lead: str | None = Field(None, description="lead analysed, where the input names leads")


class StripResponse(BaseModel):
    model: str
    version: str
    beats: list[StripBeat]
    summary: StripSummary
    solver: SolverReport | None = Field(..., description="nfe is the total over all solves")
    latency_ms: float = Field(..., description="time spent in the predictor")
    reason: str | None = Field(None, description="why no beats were found, when none were")


QueryTolerance = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]


class UploadOptions(BaseModel):
    """Options of the upload endpoints, as query parameters (the body is the record itself)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="model name from GET /models")
    lead: str | None = Field(None, description="lead name or 0-based index (default MLII, else the first)")
    method: Method | None = Field(None, description="ODE solver method (ODE models only)")
    rtol: QueryTolerance | None = None
    atol: QueryTolerance | None = None
    step_size: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] | None = None

    def solver(self) -> SolverRequest | None:
        given = {k: getattr(self, k) for k in ("method", "rtol", "atol", "step_size") if getattr(self, k) is not None}
        return SolverRequest(**given) if given else None
