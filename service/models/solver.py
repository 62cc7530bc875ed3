"""How an ODE-Net body is integrated, and how a solve fails: the vocabulary shared by the torch
reference (service.models.networks) and the compiled serving solver (service.models.fastode).

Torch-free, so the serving path can import it without the training extra."""

from __future__ import annotations

from dataclasses import asdict, dataclass

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_STEP_METHODS = ("euler", "midpoint", "rk4")
DEFAULT_STEP_SIZE = 0.25  # fixed-step methods when no step_size is given


class SolverError(RuntimeError):
    """A solve that cannot give an answer for this input and these settings."""


class SolverStepLimitError(SolverError):
    """An adaptive solve needed more steps than allowed: the tolerance is too tight for this input."""


@dataclass(frozen=True)
class SolverConfig:
    """How an ODE body is integrated; the accuracy/latency knob of an ODE-Net."""

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    step_size: float | None = None  # fixed-step methods only
    max_num_steps: int = 1000  # adaptive methods only

    def as_dict(self) -> dict:
        return asdict(self)
