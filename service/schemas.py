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
