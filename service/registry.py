"""Finds the artefacts in the models folder, verifies them against their cards, loads and warms them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.artefacts import CARD, ONNX, load_model
from service.beats import BEAT_LENGTH
from service.predictors import OnnxPredictor, TorchODEPredictor

log = logging.getLogger("service.registry")


@dataclass
class LoadedModel:
    name: str
    card: dict
    predictor: TorchODEPredictor | OnnxPredictor

    @property
    def version(self) -> str:
        return self.card["version"]


@dataclass
class ModelRegistry:
    models: dict[str, LoadedModel] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # name -> why it was refused
    warm: bool = False

    @classmethod
    def load(cls, folder: Path, threads: int | None = None) -> "ModelRegistry":
        """Load every artefact folder; one that fails verification is refused, loudly, not served."""
        registry = cls()
        folders = sorted(p.parent for p in Path(folder).glob(f"*/{CARD}"))
        if not folders:
            registry.failures["*"] = f"no artefacts ({CARD}) found in {folder}"
        for path in folders:
            try:
                model, card = load_model(path)
                if not model.is_ode and (path / ONNX).is_file():
                    predictor = OnnxPredictor(path / ONNX, threads)
                else:
                    predictor = TorchODEPredictor(model)
                registry.models[path.name] = LoadedModel(path.name, card, predictor)
            except Exception as err:  # refuse this model, keep serving the others
                registry.failures[path.name] = f"{type(err).__name__}: {err}"
                log.error("refused model %s: %s", path.name, err)
        return registry

    def warm_up(self) -> None:
        """One prediction per model, so the first request does not pay for lazy initialisation."""
        beat = np.zeros((1, BEAT_LENGTH), dtype=np.float32)
        for loaded in self.models.values():
            loaded.predictor.predict(beat)
        self.warm = True

    @property
    def ready(self) -> bool:
        return self.warm and bool(self.models) and not self.failures
