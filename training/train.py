"""`ecg-train`: one command from raw MIT-BIH records to an evaluated, exported artefact.

Deterministic for a given seed and thread count: seeded shuffles, deterministic torch kernels.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from service.signal.beats import CLASSES
from service.signal.context import (
    CONTEXT_FS, CONTEXT_INPUT, RR_FEATURES, RR_FIELDS, TEMPLATE_BEATS, WINDOW_AFTER, WINDOW_BEFORE, WINDOW_LENGTH,
)
from service.models.networks import Architecture, BeatClassifier, SolverConfig
from training.augment import Augmentation
from training.noise import NoiseBank
from training.data import SPLITS, BeatSet, data_files, load_split, split_records
from training.evaluate import DEFAULT_DATA, format_metrics, metrics_key, split_metrics, tolerance_sweep
from training.export import write_artefact
from training.report import confusion_png, tolerance_png


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings; `class_weighting` and `record_weighting` are how imbalance is handled
    (see README); `variants` augmented views of every training record (training.augment)."""

    encoder: str
    optimizer: str
    lr: float
    epochs: int
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant", "cosine" (annealed to 0) or "onecycle"
    class_weighting: str = "none"  # "none", "sqrt" (inverse square-root frequency) or "inverse"
    # Within a class, record r's beats weigh n_rc ** (q - 1), scaled to keep the class's total:
    # q = 1 leaves them alone, q = 0 gives every record the same say, 0.5 lies between.
    record_weighting: float = 1.0
    variants: int = 0
    channels: int = 32  # conv and context encoders
    dropout: float = 0.1
    waves: str = "window+template"  # context encoder: which waves the convolutions read
    logit_bias: str = ""  # e.g. "S:0.5,V:0" added to the head's bias after training (ecg-crossval --choose-bias)
    rr_features: str = "all"  # "all", or "basic" without log_pre_prev and irregularity (cross-validation)
    rr_hidden: int = 0  # context encoder: a hidden layer of this width in the RR branch (0: none)
    leads: int = 1  # context beats: 1 (MLII, network_input) or 2 (MLII and the other lead, two_lead_input)
    # Two leads: each time a beat is drawn its second lead is removed (zeros, has_second_lead 0)
    # with this probability, so a one-lead strip is not out of distribution.
    lead_dropout: float = 0.0
    second_waves: str = ""  # two leads: the second lead's waves ("": the same as `waves`)
    # Real noise in the augmented views (training.noise): "LOW:HIGH" SNR range in dB, "" for none.
    real_noise: str = ""
    # Adversarial patient head (Ganin and Lempitsky 2015): lambda of the gradient reversal between the
    # encoder's state and a head that names the training record of each beat; 0 = off. The head is
    # used in training only and is not part of the network (see `fit`).
    patient_adversary: float = 0.0

    @property
    def input(self) -> str:
        return "context" if self.encoder == "context" else "beat"


PRESETS = {
    # The reference project's recipe: MLP encoder, SGD 0.1 momentum 0.9, batch 128, 25 epochs.
    "reference": Recipe(encoder="mlp", optimizer="sgd", lr=0.1, epochs=25),
    # The same, with the learning rate annealed to 0 over the 25 epochs (the reference names no schedule).
    "reference-cosine": Recipe(encoder="mlp", optimizer="sgd", lr=0.1, epochs=25, schedule="cosine"),
    # Ours: convolutional encoder, AdamW with a one-cycle schedule, loss weighted against imbalance.
    "conv": Recipe(encoder="conv", optimizer="adamw", lr=3e-3, epochs=30, weight_decay=1e-4,
                   schedule="onecycle", class_weighting="sqrt"),
    # Context beats (window, its difference from the patient's template, RR features), augmented
    # recordings, weighted by class and by record: every setting chosen by patient-grouped
    # cross-validation inside DS1 (ecg-crossval; see the README and each card's "selection").
    "context": Recipe(encoder="context", optimizer="adamw", lr=3e-3, epochs=12, batch_size=256, weight_decay=1e-4,
                      schedule="onecycle", class_weighting="sqrt", record_weighting=0.5, variants=3,
                      channels=16, waves="window+difference", rr_hidden=32),
}


def class_weights(labels: np.ndarray, scheme: str) -> torch.Tensor | None:
    """Cross-entropy weights (n / (K n_c)) ** p: p = 1/2 for "sqrt", 1 for "inverse"."""
    if scheme == "none":
        return None
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    power = {"sqrt": 0.5, "inverse": 1.0}[scheme]
    weights = (counts.sum() / (len(CLASSES) * np.maximum(counts, 1))) ** power
    return torch.tensor(weights, dtype=torch.float32)


def sample_weights(labels: np.ndarray, records: np.ndarray, recipe: Recipe) -> torch.Tensor:
    """Per-beat loss weights: the class weight times the record factor n_rc ** (q - 1), scaled so
    each class keeps its total weight."""
    per_class = class_weights(labels, recipe.class_weighting)
    weights = np.ones(labels.size) if per_class is None else per_class.numpy()[labels].astype(np.float64)
    for c in np.unique(labels):
        in_class = labels == c
        _, index, counts = np.unique(records[in_class], return_inverse=True, return_counts=True)
        factor = counts.astype(np.float64) ** (recipe.record_weighting - 1)
        factor *= in_class.sum() / np.sum(counts * factor)
        weights[in_class] *= factor[index]
    return torch.from_numpy(weights.astype(np.float32))


def make_loss(train: BeatSet, recipe: Recipe):
    """loss(logits, index of the beats in `train`): class-weighted cross-entropy, and per-beat
    weights where records are weighted too."""
    if recipe.record_weighting == 1.0:
        loss_fn = nn.CrossEntropyLoss(weight=class_weights(train.labels, recipe.class_weighting))
        labels = torch.from_numpy(train.labels)
        return lambda logits, index: loss_fn(logits, labels[index])
    labels = torch.from_numpy(train.labels)
    weights = sample_weights(train.labels, train.records, recipe)

    def weighted(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        per_beat = nn.functional.cross_entropy(logits, labels[index], reduction="none")
        return (per_beat * weights[index]).sum() / weights[index].sum()

    return weighted


def logit_shift(setting: str) -> np.ndarray:
    """A logit_bias setting ("S:-0.5,V:0", as --choose-bias prints it) as one shift per class."""
    shift = np.zeros(len(CLASSES), dtype=np.float32)
    for item in filter(None, setting.split(",")):
        name, value = item.split(":")
        shift[CLASSES.index(name.strip())] += float(value)
    return shift


def apply_logit_bias(model: BeatClassifier, recipe: Recipe) -> None:
    """Shift class logits by the recipe's logit_bias: a decision rule chosen by cross-validation,
    stored in the network itself so every backend applies it."""
    with torch.no_grad():
        model.head[-1].bias += torch.from_numpy(logit_shift(recipe.logit_bias))


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


def make_optimizer(model: nn.Module, recipe: Recipe, steps: int):
    if recipe.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                    weight_decay=recipe.weight_decay)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps)
    elif recipe.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return optimizer, scheduler


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times -scale backward (Ganin and Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def adversary_scale(recipe: Recipe, progress: float) -> float:
    """Ganin's ramp of the reversal: lambda (2 / (1 + exp(-10 p)) - 1), p the fraction of training done."""
    return recipe.patient_adversary * (2.0 / (1.0 + np.exp(-10.0 * progress)) - 1.0)


def patient_adversary(model: BeatClassifier, train: BeatSet) -> tuple[nn.Module, torch.Tensor]:
    """A head on the encoder's state that names each beat's training record, and the record index of
    every beat. Drawn with the random state put back afterwards, so the network's own random draws
    (dropout, shuffles) are those of a run without it."""
    names, index = np.unique(train.records, return_inverse=True)
    width = model.arch.width
    with torch.random.fork_rng(devices=[]):
        head = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, len(names)))
    return head, torch.from_numpy(index.astype(np.int64))


def fit(model: BeatClassifier, train: BeatSet, recipe: Recipe, seed: int, progress: bool = True) -> list[float]:
    """Train in place; returns the mean training loss of each epoch. Each epoch draws every beat
    once, from its clean input or one of its augmented views (train.views). With
    `recipe.patient_adversary` > 0 the loss adds an adversarial record head's cross-entropy, its
    gradient reversed before the encoder; the history is the classification loss alone."""
    generator = seed_everything(seed)
    adversary, patients = patient_adversary(model, train) if recipe.patient_adversary > 0 else (None, None)
    versions = train.beats[None] if train.views is None else np.concatenate([train.beats[None], train.views])
    inputs = torch.from_numpy(versions)
    loss_fn = make_loss(train, recipe)
    batches = (len(train) + recipe.batch_size - 1) // recipe.batch_size
    trained = model if adversary is None else nn.ModuleList([model, adversary])
    optimizer, scheduler = make_optimizer(trained, recipe, recipe.epochs * batches)
    history = []
    for epoch in range(recipe.epochs):
        trained.train()
        order = torch.randperm(len(train), generator=generator)
        version = (torch.zeros(len(train), dtype=torch.long) if train.views is None
                   else torch.randint(0, len(versions), (len(train),), generator=generator))
        total = 0.0
        bar = tqdm(range(batches), desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="batch",
                   disable=None if progress else True, leave=False)  # None: off when not a terminal
        for b in bar:
            index = order[b * recipe.batch_size:(b + 1) * recipe.batch_size]
            batch = inputs[version[index], index]
            if recipe.leads == 2 and recipe.lead_dropout > 0:
                dropped = torch.rand(len(index), generator=generator) < recipe.lead_dropout
                batch[dropped, CONTEXT_INPUT:] = 0.0  # advanced indexing above made `batch` a copy
            if adversary is None:
                loss = loss_fn(model(batch), index)
                objective = loss
            else:
                h = model.encoder(batch)
                loss = loss_fn(model.head(model.body(h)), index)
                scale = adversary_scale(recipe, (epoch * batches + b) / (recipe.epochs * batches))
                named = adversary(GradientReversal.apply(h, scale))
                objective = loss + nn.functional.cross_entropy(named, patients[index])
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item()
            bar.set_postfix(loss=f"{total / (b + 1):.4f}")
        history.append(total / batches)
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{recipe.epochs}  loss {history[-1]:.4f}")
    return history


def override(recipe: Recipe, settings: list[str]) -> Recipe:
    """Apply KEY=VALUE settings, each converted to the type of the recipe's field."""
    fields = {f.name for f in dataclasses.fields(recipe)}
    changes = {}
    for item in settings:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown recipe field {key!r}; fields: {', '.join(sorted(fields))}")
        kind = type(getattr(recipe, key))
        changes[key] = kind(value) if kind is not bool else value.lower() in ("1", "true", "yes")
    return replace(recipe, **changes)


DEFAULT_NOISE_DATA = Path(os.environ.get("NSTDB_DIR", "../shared/data/nstdb"))


def augmentation_of(recipe: Recipe, noise_folder: Path = DEFAULT_NOISE_DATA) -> Augmentation | None:
    """The augmentation a recipe asks for: the default one, plus real NSTDB noise where it says so."""
    if not recipe.real_noise:
        return None
    low, high = (float(x) for x in recipe.real_noise.split(":"))
    return Augmentation(real_noise_snr_db=(low, high), noise=NoiseBank.load(noise_folder))


def architecture(body: str, recipe: Recipe, adjoint: bool = False) -> Architecture:
    return Architecture(body=body, encoder=recipe.encoder, channels=recipe.channels, dropout=recipe.dropout,
                        adjoint=adjoint, waves=recipe.waves, rr_hidden=recipe.rr_hidden, leads=recipe.leads,
                        second_waves=recipe.second_waves)


def input_card(arch: Architecture) -> dict:
    """What the network reads, for the card and GET /models."""
    if arch.input_kind == "beat":
        return {"kind": "beat", "beat_length": 187, "sampling_rate_hz": 125, "range": [0, 1],
                "format": "Kachuee et al. 2018 (service.signal.beats)"}
    reader = "two_lead_input" if arch.leads == 2 else "network_input"
    return {"kind": "context", "size": arch.input_size, "format": f"service.signal.context.{reader}",
            **({"leads": 2, "second_lead_waves_read": arch.second_waves or arch.waves} if arch.leads == 2 else {}),
            "window": {"samples": WINDOW_LENGTH, "sampling_rate_hz": CONTEXT_FS,
                       "from_ms": -1000 * WINDOW_BEFORE / CONTEXT_FS, "to_ms": 1000 * WINDOW_AFTER / CONTEXT_FS},
            "template_beats": TEMPLATE_BEATS, "waves_read": arch.waves, "rr_fields": list(RR_FIELDS),
            "rr_features": list(RR_FEATURES)}


def selection_card(paths: list[Path], model: str) -> dict | None:
    """The cross-validation runs (ecg-crossval --out) that chose the recipe, summarised, with the
    decision rule (ecg-crossval --choose-bias) chosen on runs of this model."""
    if not paths:
        return None
    loaded = [(p, json.loads(p.read_text())) for p in paths]
    runs = [(p, r) for p, r in loaded if "decision_rule" not in r]
    card = {"protocol": f"{runs[0][1]['folds_k']}-fold patient-grouped cross-validation inside DS1 (ecg-crossval); "
                        "DS2 was not used for any choice",
            "score": "mean F1 of S and V over the pooled held-out predictions",
            "candidates": [{"name": p.stem, "model": r["model"], "preset": r["preset"], "overrides": r["overrides"],
                            "seed": r["seed"], "clean": r["clean"], "augmented": r.get("augmented"),
                            **({"sequence": r["sequence"]} if "sequence" in r else {})}
                           for p, r in runs]}
    model_of = {p.stem: r["model"] for p, r in runs}
    rules = [r["decision_rule"] for _, r in loaded
             if "decision_rule" in r and all(model_of.get(run) == model for run in r["decision_rule"]["runs"])]
    if rules:
        card["decision_rule"] = rules[0]
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train, evaluate and export an ECG beat classifier.")
    parser.add_argument("--model", choices=("odenet", "resnet"), required=True, help="network body")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="conv",
                        help="'reference': the reference MLP recipe; 'conv': ours on 187-sample beats; "
                             "'context': context beats (default: conv)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set epochs=8 (repeatable)")
    parser.add_argument("--split", choices=SPLITS, default="intra",
                        help="intra: random 80/20 of all beats; inter: de Chazal DS1 -> DS2; "
                             "all: the 44 non-paced records, nothing held out")
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of MIT-BIH WFDB records")
    parser.add_argument("--noise-data", type=Path, default=DEFAULT_NOISE_DATA,
                        help="folder of the NSTDB noise recordings bw, em, ma (recipes with real_noise)")
    parser.add_argument("--out", type=Path, default=None, help="artefact folder (default models/<model>)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--adjoint", action="store_true", help="ODE-Net: backpropagate with the adjoint method")
    parser.add_argument("--no-sweep", action="store_true", help="ODE-Net: skip the tolerance sweep")
    parser.add_argument("--selection", type=Path, nargs="*", default=[],
                        help="ecg-crossval results that chose this recipe, summarised in the card")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"data folder {args.data} not found; pass --data DIR with the MIT-BIH records")
    if args.threads:
        torch.set_num_threads(args.threads)

    recipe = override(PRESETS[args.preset], args.set)
    if args.epochs is not None:
        recipe = replace(recipe, epochs=args.epochs)
    arch = architecture(args.model, recipe, args.adjoint)
    out = args.out or Path("models") / args.model
    augmentation = augmentation_of(recipe, args.noise_data)
    train, test = load_split(args.data, args.split, args.seed, progress=True, input=recipe.input,
                             variants=recipe.variants, leads=recipe.leads, augmentation=augmentation)
    print(f"split {args.split}: train {train.class_counts()}  test {test.class_counts() if test else '-'}")

    seed_everything(args.seed)
    model = BeatClassifier(arch)
    started = time.perf_counter()
    history = fit(model, train, recipe, args.seed)
    apply_logit_bias(model, recipe)
    wall = time.perf_counter() - started
    print(f"trained in {wall:.0f} s")

    solver = SolverConfig() if model.is_ode else None
    scored = test if test is not None else train.without_views()
    metrics = split_metrics(model, scored, args.split, solver)
    key = metrics_key(args.split)
    print(format_metrics(metrics[key]))
    sweep = tolerance_sweep(model, test) if model.is_ode and test is not None and not args.no_sweep else None

    train_records, test_records = split_records(args.split)
    card = {
        "name": out.name,
        "version_base": "1.1.0" if arch.input_kind == "context" else "1.0.0",
        "architecture": arch.as_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "classes": list(CLASSES),
        "input": input_card(arch),
        "training": {
            "preset": args.preset, "recipe": asdict(recipe), "split": args.split, "seed": args.seed,
            "train_records": list(train_records), "test_records": list(test_records),
            "train_beats": train.class_counts(), "test_beats": test.class_counts() if test else {},
            "augmentation": (augmentation or Augmentation()).as_dict() if recipe.variants else None,
            "data_files": data_files(args.data, tuple(sorted(set(train_records) | set(test_records)))),
            "threads": torch.get_num_threads(), "wall_time_s": round(wall, 1),
            "loss_per_epoch": [round(x, 5) for x in history],
            "command": "ecg-train " + " ".join(argv if argv is not None else sys.argv[1:]),
        },
        "metrics": metrics,
    }
    selection = selection_card(args.selection, args.model)
    if selection:
        card["selection"] = selection
    title = f"{out.name} on {key}"
    figures = {"confusion.png": lambda p: confusion_png(metrics[key]["confusion_matrix"], title, p)}
    if model.is_ode:
        card["default_solver"] = SolverConfig().as_dict()
        if sweep:
            card["nfe_vs_tolerance"] = sweep
            figures["tolerance.png"] = lambda p: tolerance_png(sweep, f"{title}: dopri5", p)
    card = write_artefact(model, card, out, figures)
    print(f"wrote {out} (version {card['version']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
