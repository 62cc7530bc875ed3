"""One predictor per backend: torch + torchdiffeq for ODE-Nets, onnxruntime for fixed graphs."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from service.networks import BeatClassifier, SolverConfig


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray  # (n_beats, n_classes)
    nfe: int | None  # ODE models only
    seconds: float


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class TorchODEPredictor:
    """Runs an ODE-Net with torchdiffeq. Solves are serialised: the NFE counter lives in the module."""

    backend = "torch"
    is_ode = True

    def __init__(self, model: BeatClassifier):
        self.model = model.eval()
        self._lock = threading.Lock()

    @torch.inference_mode()
    def predict(self, beats: np.ndarray, solver: SolverConfig | None = None) -> Prediction:
        with self._lock:
            started = time.perf_counter()
            logits = self.model(torch.from_numpy(beats), solver or SolverConfig())
            nfe = self.model.body.nfe
            seconds = time.perf_counter() - started
        return Prediction(softmax(logits.numpy()), nfe, seconds)


class OnnxPredictor:
    """Runs an exported graph with onnxruntime (thread-safe sessions, no Python in the loop)."""

    backend = "onnxruntime"
    is_ode = False

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def predict(self, beats: np.ndarray, solver: SolverConfig | None = None) -> Prediction:
        started = time.perf_counter()
        (logits,) = self.session.run(None, {self.input: beats})
        return Prediction(softmax(logits), None, time.perf_counter() - started)
