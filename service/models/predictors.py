"""One predictor per kind of network, both without Python in their inner loops and both thread-safe:

- a ResNet is one onnxruntime graph;
- an ODE-Net is its encoder in onnxruntime, its body solved beat by beat by service.models.fastode (the
  answers and function evaluations of torchdiffeq on each beat alone), and its head in numpy.

onnxruntime and the compiled solver release the GIL, so predictions run beside the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.models.fastode import CompiledODE
from service.models.solver import SolverConfig


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray  # (n_beats, n_classes)
    nfe: np.ndarray | None  # (n_beats,) function evaluations of each beat's solve; ODE models only
    seconds: float
    status: np.ndarray | None = None  # (n_beats,) service.models.fastode status, 0 = solved; ODE models only

    def part(self, start: int, stop: int) -> "Prediction":
        """The rows of beats start:stop (a request's share of a dynamic batch)."""
        cut = (lambda a: None if a is None else a[start:stop])
        return Prediction(self.probabilities[start:stop], cut(self.nfe), self.seconds, cut(self.status))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class OnnxGraph:
    """An onnxruntime session on the CPU with one input and one output; `threads` intra-op threads
    (default 1)."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread by default: these graphs are small, batches come from many requests at once,
        # and a pool of spinning intra-op threads would take the CPU the event loop needs.
        options.intra_op_num_threads = threads or 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, beats: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: beats})[0]


class OnnxPredictor:
    """A fixed graph (ResNet) from beats to logits."""

    backend = "onnxruntime"
    is_ode = False

    def __init__(self, path: Path, threads: int | None = None):
        self.graph = OnnxGraph(path, threads)

    def predict(self, beats: np.ndarray, solver: SolverConfig | None = None) -> Prediction:
        started = time.perf_counter()
        probabilities = softmax(self.graph(beats))
        return Prediction(probabilities, None, time.perf_counter() - started)


class ODEPredictor:
    """An ODE-Net: encoder -> per-beat compiled solve of the body -> ReLU -> Linear head.

    The service runs the encoder's ONNX graph on the weights of the artefact's safetensors file;
    training's evaluation passes the torch network and its torch encoder, so the figures on a card
    come from the path the service runs. `network` is either: a state dict (name -> array) or an
    object with `state_dict()` (a torch BeatClassifier)."""

    backend = "onnxruntime+fastode"
    is_ode = True
    DYNAMICS = "body.dynamics.layer.linear"  # the ConcatLinear of service.models.networks.ODEDynamics
    HEAD = "head.1"  # the Linear after the ReLU

    def __init__(self, network, encoder: Callable[[np.ndarray], np.ndarray]):
        weights = network.state_dict() if hasattr(network, "state_dict") else network
        array = (lambda name: self._array(weights, name))
        self.encoder = encoder
        self.body = CompiledODE(array(f"{self.DYNAMICS}.weight"), array(f"{self.DYNAMICS}.bias"))
        self.head_weight = array(f"{self.HEAD}.weight").astype(np.float64).T
        self.head_bias = array(f"{self.HEAD}.bias").astype(np.float64)

    @staticmethod
    def _array(weights: Mapping, name: str) -> np.ndarray:
        value = weights[name]
        return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)

    def predict(self, beats: np.ndarray, solver: SolverConfig | None = None) -> Prediction:
        started = time.perf_counter()
        state, nfe, status = self.body.solve(self.encoder(beats), solver or SolverConfig())
        logits = np.maximum(state, 0.0) @ self.head_weight + self.head_bias
        return Prediction(softmax(logits), nfe, time.perf_counter() - started, status)
