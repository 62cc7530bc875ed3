"""The nn.Module definitions that trained artefacts instantiate: one shape, two bodies.

Both classifiers are encoder -> body -> head on a 64-dim state. The ResNet body is a stack of
residual blocks h + f(h), i.e. fixed Euler steps of an ODE; the ODE-Net body integrates
dh/dt = f(t, h) over t in [0, 1] with an adaptive torchdiffeq solver (Chen et al. 2018).
"""

from __future__ import annotations

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from service.models.architecture import WAVES, Architecture
from service.models.solver import (ADAPTIVE_METHODS, DEFAULT_STEP_SIZE, FIXED_STEP_METHODS, SolverConfig,
                                   SolverError, SolverStepLimitError)
from service.signal.beats import BEAT_LENGTH
from service.signal.context import CONTEXT_INPUT, HAS_SECOND_LEAD, RR_FEATURES, WINDOW_LENGTH

# Re-exported: training and tests import the solver vocabulary and the card's shape from here.
__all__ = ["ADAPTIVE_METHODS", "FIXED_STEP_METHODS", "WAVES", "Architecture", "SolverConfig", "SolverError",
           "SolverStepLimitError", "BeatClassifier", "ContextEncoder", "ODEBody", "ODEDynamics", "ConcatLinear",
           "ResidualBlock", "conv_encoder", "conv_stages", "mlp_encoder", "per_beat_rms_norm"]


def per_beat_rms_norm(error: torch.Tensor) -> torch.Tensor:
    """Max over beats of each beat's RMS error: the step size answers to the worst beat, so a
    beat's result does not depend on which other beats share its batch (beyond the tolerance)."""
    return error.pow(2).mean(dim=-1).sqrt().max()


class ConcatLinear(nn.Module):
    """Linear layer that also sees the time t, as in Chen et al.'s ODE-Net code."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width + 1, width)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        time = torch.ones_like(h[..., :1]) * t
        return self.linear(torch.cat([time, h], dim=-1))


class ODEDynamics(nn.Module):
    """f(t, h) = ConcatLinear(t, ReLU(h)); counts its own evaluations (NFE)."""

    def __init__(self, width: int):
        super().__init__()
        self.layer = ConcatLinear(width)
        self.nfe = 0

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.layer(t, torch.relu(h))


class ODEBody(nn.Module):
    """h(1) = h(0) + integral_0^1 f(t, h) dt, solved with torchdiffeq.

    `adjoint=True` backpropagates with the adjoint method (O(1) memory in the number of steps);
    the default backpropagates through the solver's operations directly.
    """

    def __init__(self, width: int, adjoint: bool = False):
        super().__init__()
        self.dynamics = ODEDynamics(width)
        self.adjoint = adjoint
        self.register_buffer("span", torch.tensor([0.0, 1.0]), persistent=False)

    @property
    def nfe(self) -> int:
        """Function evaluations of the last forward pass."""
        return self.dynamics.nfe

    def forward(self, h: torch.Tensor, solver: SolverConfig | None = None) -> torch.Tensor:
        cfg = solver or SolverConfig()
        self.dynamics.nfe = 0
        if cfg.method in FIXED_STEP_METHODS:
            options = {"step_size": cfg.step_size or DEFAULT_STEP_SIZE}
        else:
            options = {"norm": per_beat_rms_norm, "max_num_steps": cfg.max_num_steps}
        integrate, extra = odeint, {}
        if self.adjoint and self.training:
            integrate, extra = odeint_adjoint, {"adjoint_options": {"norm": "seminorm"}}
        try:
            return integrate(self.dynamics, h, self.span, rtol=cfg.rtol, atol=cfg.atol, method=cfg.method,
                             options=options, **extra)[-1]
        except AssertionError as err:  # torchdiffeq signals an exhausted step budget this way
            if "max_num_steps" in str(err):
                raise SolverStepLimitError(
                    f"{cfg.method} needed more than {cfg.max_num_steps} steps at "
                    f"rtol={cfg.rtol:g}, atol={cfg.atol:g}"
                ) from err
            raise


class ResidualBlock(nn.Module):
    """h + Linear(ReLU(h)): one Euler step of the ODE-Net's dynamics, without time."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.linear(torch.relu(h))


def mlp_encoder(width: int) -> nn.Module:
    """The reference encoder: 187 -> 64 -> 64 -> 64 fully connected."""
    return nn.Sequential(
        nn.Linear(BEAT_LENGTH, width), nn.ReLU(),
        nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, width),
    )


def conv_stages(length: int, channels: int, inputs: int = 1) -> tuple[list[nn.Module], int]:
    """Three conv/batch-norm/ReLU/max-pool stages over `inputs` channels of `length` samples; they
    keep the wave's timing. Returns the layers (ending in a flatten) and the number of features."""
    stages, in_ch = [nn.Unflatten(1, (inputs, length))], inputs
    for out_ch, kernel in ((channels, 7), (2 * channels, 5), (2 * channels, 5)):
        stages += [
            nn.Conv1d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm1d(out_ch), nn.ReLU(), nn.MaxPool1d(2),
        ]
        in_ch, length = out_ch, length // 2
    return [*stages, nn.Flatten()], in_ch * length


def conv_encoder(width: int, channels: int = 32, dropout: float = 0.1) -> nn.Module:
    """1-D convolutional encoder of a 187-sample beat, then 64 features."""
    stages, features = conv_stages(BEAT_LENGTH, channels)
    return nn.Sequential(*stages, nn.Dropout(dropout), nn.Linear(features, width))



class ContextEncoder(nn.Module):
    """A context beat (service.signal.context): conv stages over two waves (by default the window and the
    patient's template; `waves` may swap one for their difference), a small layer over the RR
    features, fused into the 64-dim state. Input: (n, CONTEXT_INPUT) = window, template, RR
    features, one array for every backend. `rr_hidden` > 0 puts a hidden layer of that width in the
    RR branch, so the RR features are combined non-linearly before they meet the 320 morphology
    features (the shipped context models: 32, chosen by cross-validation; older cards: none).

    `leads=2` reads two_lead_input (n, TWO_LEAD_INPUT): the second lead's waves (the same `waves`
    choice) are more input channels of the same conv stages, and its has_second_lead flag joins the
    RR features (`second_waves` may pick other waves for it). `leads=1` is the one-lead network,
    parameter for parameter."""

    def __init__(self, width: int, channels: int = 16, rr_width: int = 16, dropout: float = 0.1,
                 waves: str = WAVES[0], rr_hidden: int = 0, leads: int = 1, second_waves: str = ""):
        super().__init__()
        second_waves = second_waves or waves
        for choice in (waves, second_waves):
            if choice not in WAVES:
                raise ValueError(f"unknown waves {choice!r}; choose from {WAVES}")
        if leads not in (1, 2):
            raise ValueError(f"leads must be 1 or 2, not {leads!r}")
        self.waves = waves
        self.second_waves = second_waves
        self.leads = leads
        inputs = waves.count("+") + 1 + (leads - 1) * (second_waves.count("+") + 1)
        stages, features = conv_stages(WINDOW_LENGTH, channels, inputs)
        self.window = nn.Sequential(*stages)
        # The one-layer branch is drawn first in every case (and replaced when rr_hidden is set), so
        # a seeded run gives the weights of the shipped cards and of their cross-validation runs.
        rr_inputs = len(RR_FEATURES) + (leads - 1)  # two leads: has_second_lead joins the RR features
        rr_layers = [nn.Linear(rr_inputs, rr_width), nn.ReLU()]
        if rr_hidden:
            rr_layers = [nn.Linear(rr_inputs, rr_hidden), nn.ReLU(), nn.Linear(rr_hidden, rr_width), nn.ReLU()]
        self.rr = nn.Sequential(*rr_layers)
        self.fuse = nn.Sequential(nn.Dropout(dropout), nn.Linear(features + rr_width, width))

    def lead_waves(self, window: torch.Tensor, template: torch.Tensor, waves: str) -> list[torch.Tensor]:
        named = {"window": window, "template": template, "difference": window - template}
        return [named[w] for w in waves.split("+")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        waves = self.lead_waves(x[:, :WINDOW_LENGTH], x[:, WINDOW_LENGTH:2 * WINDOW_LENGTH], self.waves)
        if self.leads == 1:
            rr = x[:, 2 * WINDOW_LENGTH:]
        else:  # two_lead_input: the second lead's window and template, then has_second_lead
            start = CONTEXT_INPUT
            waves += self.lead_waves(x[:, start:start + WINDOW_LENGTH], x[:, start + WINDOW_LENGTH:HAS_SECOND_LEAD],
                                     self.second_waves)
            rr = torch.cat([x[:, 2 * WINDOW_LENGTH:CONTEXT_INPUT], x[:, HAS_SECOND_LEAD:HAS_SECOND_LEAD + 1]], dim=1)
        return self.fuse(torch.cat([self.window(torch.cat(waves, dim=1)), self.rr(rr)], dim=1))


class BeatClassifier(nn.Module):
    """encoder -> body (ResNet blocks or ODE block) -> ReLU -> Linear to class logits."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        if arch.encoder == "mlp":
            self.encoder = mlp_encoder(arch.width)
        elif arch.encoder == "conv":
            self.encoder = conv_encoder(arch.width, arch.channels, arch.dropout)
        elif arch.encoder == "context":
            self.encoder = ContextEncoder(arch.width, arch.channels, dropout=arch.dropout, waves=arch.waves,
                                          rr_hidden=arch.rr_hidden, leads=arch.leads, second_waves=arch.second_waves)
        else:
            raise ValueError(f"unknown encoder {arch.encoder!r}")
        if arch.body == "resnet":
            self.body = nn.Sequential(*(ResidualBlock(arch.width) for _ in range(arch.blocks)))
        elif arch.body == "odenet":
            self.body = ODEBody(arch.width, adjoint=arch.adjoint)
        else:
            raise ValueError(f"unknown body {arch.body!r}")
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(arch.width, len(arch.classes)))

    @property
    def is_ode(self) -> bool:
        return isinstance(self.body, ODEBody)

    def forward(self, beats: torch.Tensor, solver: SolverConfig | None = None) -> torch.Tensor:
        h = self.encoder(beats)
        h = self.body(h, solver) if self.is_ode else self.body(h)
        return self.head(h)
