"""A sequence-stage candidate (training.sequence) trained on all of DS1 and scored on DS2 at the
reference R-peaks, each DS2 record read as one strip: what the candidate would have given on the
unseen patients. Reported only: the candidates were judged, and dropped, in cross-validation inside
DS1 (ecg-crossval --sequence); nothing is chosen here.
Usage: python scripts/sequence-ds2.py --sequence odernn [--model odenet] [--seed 0] [--set KEY=VALUE ...]
"""

import argparse
from pathlib import Path

import torch

from service.models.networks import BeatClassifier
from training.crossval import format_summary, summary
from training.data import load_split
from training.evaluate import DEFAULT_DATA, classification_metrics
from training.sequence import (LOOK_AHEAD, STAGES, SequenceClassifier, apply_sequence_logit_bias, fit_sequence,
                               predict_sequences)
from training.train import PRESETS, architecture, override

# The shipped ODE-Net recipe, as scripts/train-all.sh trains it.
SHIPPED = ["epochs=6", "logit_bias=S:-0.5,V:-0.5,F:1"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequence", choices=STAGES, required=True)
    parser.add_argument("--model", choices=("odenet", "resnet"), default="odenet")
    parser.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                        help=f"recipe overrides (default: the shipped ODE-Net recipe's, {' '.join(SHIPPED)})")
    parser.add_argument("--look-ahead", type=int, default=LOOK_AHEAD)
    parser.add_argument("--beat-loss", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = override(PRESETS["context"], SHIPPED if args.set is None else args.set)
    train, test = load_split(args.data, "inter", args.seed, input="context", variants=recipe.variants)
    torch.manual_seed(args.seed)
    model = SequenceClassifier(BeatClassifier(architecture(args.model, recipe)), args.sequence,
                               look_ahead=args.look_ahead)
    fit_sequence(model, train, recipe, args.seed, beat_loss=args.beat_loss)
    apply_sequence_logit_bias(model, recipe.logit_bias)
    predicted = predict_sequences(model, test.beats, test.records, test.samples).argmax(axis=1)
    metrics = classification_metrics(test.labels, predicted)
    print(format_summary(f"{args.sequence} on DS2", summary(metrics)))
    print(f"ectopic calls per 100 N: {metrics['ectopic_calls_per_100_normal']['all']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
