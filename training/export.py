"""Writes an artefact folder: weights (safetensors), ONNX where the model allows it, figures, and
card.json carrying everything needed to trust and reproduce it (sha256 of every file)."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import save_file

from service.artefacts import CARD, ONNX, WEIGHTS, sha256_file
from service.beats import BEAT_LENGTH
from service.networks import BeatClassifier

LIBRARIES = ("torch", "torchdiffeq", "numpy", "scipy", "wfdb", "scikit-learn", "onnx", "onnxruntime")


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), **{name: version(name) for name in LIBRARIES}}


def export_onnx(model: BeatClassifier, path: Path) -> None:
    """ONNX graph with a dynamic batch axis. Only fixed graphs export: the ODE-Net's adaptive solver
    loops a data-dependent number of times, so it is served with torchdiffeq instead."""
    model.eval()
    example = torch.rand(2, BEAT_LENGTH)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=["beats"],
                                output_names=["logits"], dynamic_shapes=({0: batch},),
                                optimize=True, verbose=False)
    program.save(str(path))


def write_artefact(model: BeatClassifier, card: dict, folder: Path, figures: dict | None = None) -> dict:
    """Save `model` and its card into `folder`; `figures` maps PNG file names to writer callables."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    (folder / WEIGHTS).chmod(0o644)  # safetensors writes 0600; the service may run as another user
    files = [WEIGHTS]
    if not model.is_ode:
        export_onnx(model, folder / ONNX)
        files.append(ONNX)
    for name, write in (figures or {}).items():
        write(folder / name)
        files.append(name)
    digests = {name: sha256_file(folder / name) for name in files}
    card = {
        **card,
        "version": f"{card.get('version_base', '1.0.0')}+{digests[WEIGHTS][:12]}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "libraries": library_versions(),
        "files": digests,
    }
    card.pop("version_base", None)
    (folder / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card
