"""Reads a trained artefact folder: card, integrity check, weights (never through pickle)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors.torch import load_file

from service.models.networks import Architecture, BeatClassifier

CARD = "card.json"
WEIGHTS = "weights.safetensors"
ONNX = "model.onnx"  # a ResNet: the whole network
ENCODER_ONNX = "encoder.onnx"  # an ODE-Net: the encoder; the body is solved by service.models.fastode


class ArtefactIntegrityError(RuntimeError):
    """A file of an artefact is missing or differs from the sha256 its card records."""


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


def load_network(folder: str | Path) -> tuple[BeatClassifier, dict]:
    """Verified torch network in eval mode, and its card."""
    folder = Path(folder)
    card = read_card(folder)
    verify_files(folder, card)
    model = BeatClassifier(Architecture.from_dict(card["architecture"]))
    model.load_state_dict(load_file(folder / WEIGHTS))
    return model.eval(), card


def load_model(folder: str | Path) -> tuple[BeatClassifier, dict]:
    """Verified network and card of an artefact that carries the ONNX graph the service runs."""
    model, card = load_network(folder)
    graph = ENCODER_ONNX if model.is_ode else ONNX
    if graph not in card["files"]:
        raise ArtefactIntegrityError(f"{folder}: {CARD} lists no {graph}; write it with "
                                     f"`python -m training.export {folder}`")
    return model, card
