"""Finds the artefacts in the models folder, verifies them against their cards, loads and warms them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.models.artefacts import CARD, load_served
from service.models.decision import Decision
from service.models.predictors import ODEPredictor, OnnxGraph, OnnxPredictor

log = logging.getLogger("service.models.registry")


@dataclass
class LoadedModel:
    name: str
    card: dict
    predictor: ODEPredictor | OnnxPredictor
    input_kind: str  # "beat" or "context" (Architecture.input_kind)
    input_size: int  # numbers per beat the network reads
    decision: Decision = Decision()  # calibration, ectopic thresholds and review flag from the card

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
                artefact = load_served(path)
                if artefact.arch.leads != 1:  # training.crossval measures them; no route sends two leads yet
                    raise ValueError("the network reads two leads (two_lead_input), which the service does not "
                                     "build from requests")
                if artefact.arch.is_ode:
                    predictor = ODEPredictor(artefact.weights, OnnxGraph(artefact.graph, threads))
                else:
                    predictor = OnnxPredictor(artefact.graph, threads)
                registry.models[path.name] = LoadedModel(path.name, artefact.card, predictor,
                                                         artefact.arch.input_kind, artefact.arch.input_size,
                                                         Decision.of_card(artefact.card))
            except Exception as err:  # refuse this model, keep serving the others
                registry.failures[path.name] = f"{type(err).__name__}: {err}"
                log.error("refused model %s: %s", path.name, err)
        return registry

    def warm_up(self) -> None:
        """One prediction per model, so the first request does not pay for lazy initialisation
        (onnxruntime's first run, numba's compilation or cache load)."""
        for loaded in self.models.values():
            loaded.predictor.predict(np.zeros((1, loaded.input_size), dtype=np.float32))
        self.warm = True

    @property
    def ready(self) -> bool:
        return self.warm and bool(self.models) and not self.failures
