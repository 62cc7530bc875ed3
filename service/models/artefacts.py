"""Reads a trained artefact folder: card, integrity check, weights (never through pickle).

Serving reads an artefact without torch (`load_served`: the card, the weights as numpy arrays, the
ONNX graph it runs); training and the tests rebuild the torch network (`load_network`,
`load_model`), which needs the training extra."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors.numpy import load_file

from service.models.architecture import Architecture

if TYPE_CHECKING:  # torch is the training extra's; only these loaders need it
    from service.models.networks import BeatClassifier

CARD = "card.json"
WEIGHTS = "weights.safetensors"
ONNX = "model.onnx"  # a ResNet: the whole network
ENCODER_ONNX = "encoder.onnx"  # an ODE-Net: the encoder; the body is solved by service.models.fastode


class ArtefactIntegrityError(RuntimeError):
    """A file of an artefact is missing or differs from the sha256 its card records."""


@dataclass(frozen=True)
class ServedArtefact:
    """A verified artefact as the service runs it: no torch."""

    folder: Path
    card: dict
    arch: Architecture
    weights: dict[str, np.ndarray]  # the state dict, as stored in weights.safetensors

    @property
    def graph(self) -> Path:
        """The ONNX graph the service runs: the encoder of an ODE-Net, the whole of a ResNet."""
        return self.folder / served_graph(self.arch)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(folder: str | Path) -> dict:
    return json.loads((Path(folder) / CARD).read_text())


def verify_files(folder: str | Path, card: dict) -> None:
    """Refuse an artefact whose files do not match the digests in its card."""
    folder = Path(folder)
    for name, expected in card["files"].items():
        path = folder / name
        if not path.is_file():
            raise ArtefactIntegrityError(f"{path}: listed in {CARD} but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtefactIntegrityError(
                f"{path}: sha256 {actual} does not match {expected} recorded in {CARD}"
            )


def served_graph(arch: Architecture) -> str:
    return ENCODER_ONNX if arch.is_ode else ONNX


def require_graph(folder: Path, arch: Architecture, card: dict) -> None:
    """An artefact is served only with the ONNX graph its card lists."""
    graph = served_graph(arch)
    if graph not in card["files"]:
        raise ArtefactIntegrityError(f"{folder}: {CARD} lists no {graph}; write it with "
                                     f"`python -m training.export {folder}`")


def load_served(folder: str | Path) -> ServedArtefact:
    """Verified card, architecture and numpy weights of an artefact that carries its ONNX graph."""
    folder = Path(folder)
    card = read_card(folder)
    verify_files(folder, card)
    arch = Architecture.from_dict(card["architecture"])
    require_graph(folder, arch, card)
    return ServedArtefact(folder, card, arch, load_file(folder / WEIGHTS))


def load_network(folder: str | Path) -> tuple["BeatClassifier", dict]:
    """Verified torch network in eval mode, and its card (needs the training extra)."""
    from safetensors.torch import load_file as load_tensors

    from service.models.networks import BeatClassifier

    folder = Path(folder)
    card = read_card(folder)
    verify_files(folder, card)
    model = BeatClassifier(Architecture.from_dict(card["architecture"]))
    model.load_state_dict(load_tensors(folder / WEIGHTS))
    return model.eval(), card


def load_model(folder: str | Path) -> tuple["BeatClassifier", dict]:
    """Verified torch network and card of an artefact that carries the ONNX graph the service runs."""
    model, card = load_network(folder)
    require_graph(Path(folder), model.arch, card)
    return model, card
