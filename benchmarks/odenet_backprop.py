"""Adjoint method vs direct backpropagation for training the ODE-Net: time per step and NFE.

Prints, for each encoder, the mean wall time of one training step (batch 128 real MIT-BIH beats,
dopri5 at rtol = atol = 1e-3) and the function evaluations spent forward and backward.
Usage: python benchmarks/odenet_backprop.py [--steps 30] [--data tests/fixtures/mitdb]
"""

import argparse
import time
from pathlib import Path

import torch

from service.models.networks import Architecture, BeatClassifier
from training.data import load_records

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "tests/fixtures/mitdb")
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)

data = load_records(args.data, ("100", "208", "232"))
beats, labels = torch.from_numpy(data.beats), torch.from_numpy(data.labels)
print(f"torch {torch.__version__}, {args.threads} thread(s), batch 128, {args.steps} steps, dopri5 1e-3")
print(f"{'encoder':8} {'backprop':9} {'ms/step':>8} {'NFE fwd':>8} {'NFE bwd':>8}")
for encoder in ("mlp", "conv"):
    for adjoint in (False, True):
        torch.manual_seed(0)
        model = BeatClassifier(Architecture(body="odenet", encoder=encoder, adjoint=adjoint)).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        generator = torch.Generator().manual_seed(0)
        elapsed, forward_nfe, backward_nfe = 0.0, 0, 0
        for step in range(args.steps + 3):
            index = torch.randint(len(labels), (128,), generator=generator)
            started = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(beats[index]), labels[index])
            nfe = model.body.nfe
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step >= 3:  # warm-up steps excluded
                elapsed += time.perf_counter() - started
                forward_nfe += nfe
                backward_nfe += model.body.nfe - nfe
        print(f"{encoder:8} {'adjoint' if adjoint else 'direct':9} {1000 * elapsed / args.steps:8.1f} "
              f"{forward_nfe / args.steps:8.1f} {backward_nfe / args.steps:8.1f}")
