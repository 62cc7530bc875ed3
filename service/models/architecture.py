"""What an artefact's card says about its network: the shape to rebuild it (training) or to feed it
(serving). Torch-free, so the service reads cards without the training extra."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from service.signal.beats import BEAT_LENGTH, CLASSES
from service.signal.context import CONTEXT_INPUT, TWO_LEAD_INPUT

WAVES = ("window+template", "difference+template", "window+difference", "window", "difference")


@dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild a network; stored in each artefact's card."""

    body: str  # "resnet" or "odenet"
    encoder: str = "mlp"  # "mlp" (reference), "conv" (187-sample beats) or "context" (context beats)
    width: int = 64
    blocks: int = 6  # residual blocks of the ResNet body
    channels: int = 32  # conv and context encoders only
    dropout: float = 0.1  # conv and context encoders only
    adjoint: bool = False  # ODE-Net training only
    waves: str = WAVES[0]  # context encoder: which waves the convolutions read
    rr_hidden: int = 0  # context encoder: width of the RR branch's hidden layer (0: none)
    leads: int = 1  # context encoder: 1 (network_input) or 2 (two_lead_input: a second lead and its flag)
    second_waves: str = ""  # two leads: which waves of the second lead the convolutions read ("": as `waves`)
    classes: tuple[str, ...] = field(default=CLASSES)

    @property
    def is_ode(self) -> bool:
        """An ODE-Net body (solved at inference) rather than a fixed stack of residual blocks."""
        return self.body == "odenet"

    @property
    def input_kind(self) -> str:
        """"beat": 187-sample beats (service.signal.beats); "context": context beats (service.signal.context)."""
        return "context" if self.encoder == "context" else "beat"

    @property
    def input_size(self) -> int:
        """Numbers per beat the network reads."""
        if self.input_kind != "context":
            return BEAT_LENGTH
        return TWO_LEAD_INPUT if self.leads == 2 else CONTEXT_INPUT

    def as_dict(self) -> dict:
        return {**asdict(self), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: dict) -> "Architecture":
        return cls(**{**data, "classes": tuple(data.get("classes", CLASSES))})
