"""Writes an artefact folder: weights (safetensors), ONNX graphs, figures, and card.json carrying
everything needed to trust and reproduce it (sha256 of every file).

A ResNet is one fixed graph (model.onnx). An ODE-Net's adaptive solver loops a data-dependent number
of times, so only its encoder is a graph (encoder.onnx); the service solves the body with
service.models.fastode and applies the head itself. `python -m training.export models/NAME` rewrites the
graphs of an existing artefact from its weights and updates its card's digests.
"""

from __future__ import annotations

import copy
import json
import platform
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import save_file

from torch import nn

from service.models.artefacts import CARD, ENCODER_ONNX, ONNX, WEIGHTS, load_network, sha256_file
from service.models.networks import BeatClassifier

LIBRARIES = ("torch", "torchdiffeq", "numpy", "scipy", "wfdb", "scikit-learn", "onnx", "onnxruntime")


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), **{name: version(name) for name in LIBRARIES}}


def as_2d_convolutions(module: nn.Module) -> nn.Module:
    """A copy of `module` whose 1-D convolutions, batch norms and max-pools are their 2-D
    counterparts over a height of one, with the same weights: the same function, but onnxruntime's
    blocked (NCHWc) convolution kernels, which fuse conv, ReLU and pooling, apply to 2-D ones only
    (the context encoder runs ~2.5x faster on one core)."""
    module = copy.deepcopy(module)
    rewrite_1d_as_2d(module)
    return module.eval()


def rewrite_1d_as_2d(module: nn.Module) -> None:
    """as_2d_convolutions, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv1d):
            conv = nn.Conv2d(child.in_channels, child.out_channels, (1, child.kernel_size[0]),
                             stride=(1, child.stride[0]), padding=(0, child.padding[0]),
                             dilation=(1, child.dilation[0]), groups=child.groups, bias=child.bias is not None)
            conv.weight.data = child.weight.data.unsqueeze(2).clone()
            if child.bias is not None:
                conv.bias.data = child.bias.data.clone()
            replacement = conv
        elif isinstance(child, nn.BatchNorm1d):
            replacement = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                         child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
        elif isinstance(child, nn.MaxPool1d):
            if child.padding or child.dilation != 1 or child.ceil_mode:
                raise ValueError("only plain max-pools are rewritten")
            replacement = nn.MaxPool2d((1, child.kernel_size), (1, child.stride))
        elif isinstance(child, nn.Unflatten) and len(child.unflattened_size) == 2:
            channels, length = child.unflattened_size
            replacement = nn.Unflatten(child.dim, (channels, 1, length))
        else:
            rewrite_1d_as_2d(child)
            continue
        setattr(module, name, replacement)


def export_onnx(module: nn.Module, input_size: int, output: str, path: Path) -> None:
    """ONNX graph of `module` (beats -> `output`) with a dynamic batch axis, 1-D convolutions
    written as 2-D ones (as_2d_convolutions)."""
    module = as_2d_convolutions(module.eval())
    example = torch.rand(2, input_size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(module, (example,), dynamo=True, input_names=["beats"],
                                output_names=[output], dynamic_shapes=({0: batch},),
                                optimize=True, verbose=False)
    program.save(str(path))


def export_graphs(model: BeatClassifier, folder: Path) -> list[str]:
    """model.onnx for a ResNet, encoder.onnx for an ODE-Net; returns the file names written."""
    if model.is_ode:
        export_onnx(model.encoder, model.arch.input_size, "state", folder / ENCODER_ONNX)
        return [ENCODER_ONNX]
    export_onnx(model, model.arch.input_size, "logits", folder / ONNX)
    return [ONNX]


def write_artefact(model: BeatClassifier, card: dict, folder: Path, figures: dict | None = None) -> dict:
    """Save `model` and its card into `folder`; `figures` maps PNG file names to writer callables."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    (folder / WEIGHTS).chmod(0o644)  # safetensors writes 0600; the service may run as another user
    files = [WEIGHTS, *export_graphs(model, folder)]
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


def rewrite_card(folder: Path, card: dict, figures: dict | None = None) -> dict:
    """Write new figures and an updated card into an existing artefact, with fresh digests."""
    for name, write in (figures or {}).items():
        write(folder / name)
        card["files"][name] = sha256_file(folder / name)
    (folder / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def refresh_graphs(folder: Path) -> dict:
    """Rewrite the ONNX graphs of an existing artefact from its verified weights; update the card's
    digests (the version, derived from the weights, does not change)."""
    model, card = load_network(folder)
    for name in export_graphs(model, folder):
        card["files"][name] = sha256_file(folder / name)
    return rewrite_card(folder, card)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Rewrite the ONNX graphs of artefacts from their weights.")
    parser.add_argument("artefacts", type=Path, nargs="+", help="artefact folders, e.g. models/odenet")
    for folder in parser.parse_args(argv).artefacts:
        card = refresh_graphs(folder)
        print(f"{folder}: {', '.join(sorted(card['files']))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
