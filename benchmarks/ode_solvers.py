"""Candidate ways to solve the ODE-Net body at serving time, measured on the same trained network
and the same real beats (the bundled MIT-BIH excerpts), dopri5:

- torchdiffeq odeint, float32, its default batch-wide error norm (what a plain call does);
- torchdiffeq odeint, float32, the per-beat norm (the service until the compiled path);
- torchdiffeq odeint, float64, one beat per call: the reference for answers and NFE;
- torchode 1.0 (per-beat step control in PyTorch; its own initial step and controller);
- numpy, float64, per-beat step control, all beats advanced together with masks;
- service.models.fastode: numba-compiled, float64, one beat at a time (what the service runs).

For each it prints the time of the body's solve at batch 1 and 256 (p50 of repeated calls; one
thread), whether each beat's NFE equals the reference's, and the largest difference of the final
state and of the class probabilities from the reference.
Usage: python benchmarks/ode_solvers.py [--model models/odenet] [--tol 1e-3] [--reps 50]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torchdiffeq import odeint

from processes import timed
from service.models.artefacts import load_network
from service.models.fastode import CompiledODE
from service.models.fastode.tableaus import TABLEAUS
from service.models.networks import SolverConfig, per_beat_rms_norm
from training.data import load_records

ROOT = Path(__file__).resolve().parents[1]


def numpy_dopri5(h0: np.ndarray, weight: np.ndarray, bias: np.ndarray, rtol: float, atol: float):
    """torchdiffeq's dopri5 in float64 with each beat's own steps, vectorised over beats in numpy."""
    tab = TABLEAUS["dopri5"]
    w_t, w_h = weight[:, 0], weight[:, 1:].T

    def f(t, y):
        return np.maximum(y, 0) @ w_h + t[:, None] * w_t + bias

    def rms(x):
        return np.sqrt((x * x).mean(axis=1))

    n = len(h0)
    y0 = h0.astype(np.float64)
    f0 = f(np.zeros(n), y0)
    scale = atol + np.abs(y0) * rtol
    d0, d1 = rms(y0 / scale), rms(f0 / scale)
    h = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / np.where(d1 > 0, d1, 1))
    f1 = f(h, y0 + h[:, None] * f0)
    d2 = np.abs(rms((f1 - f0) / scale) / h)
    h1 = np.where((d1 <= 1e-15) & (d2 <= 1e-15), np.maximum(1e-6, h * 1e-3),
                  (0.01 / np.maximum(np.maximum(d1, d2), 1e-300)) ** (1 / tab.order))
    dt = np.minimum(100 * h, h1)
    nfe = np.full(n, 2)
    t0, t1 = np.zeros(n), np.zeros(n)
    coeff = np.repeat(y0[None], 5, axis=0)
    active = np.ones(n, bool)
    while active.any():
        i = np.flatnonzero(active)
        start, step = t1[i], dt[i]
        end = start + step
        k = [f0[i]]
        for s in range(tab.alpha.size):
            ti = np.nextafter(end, end - 1) if tab.alpha[s] == 1 else start + tab.alpha[s] * step
            y = y0[i] + sum(kj * (b * step)[:, None] for kj, b in zip(k, tab.beta[s, :s + 1]))
            k.append(f(ti, y))
        nfe[i] += tab.alpha.size
        error = sum(kj * (c * step)[:, None] for kj, c in zip(k, tab.c_error))
        ratio = rms(error / (atol + rtol * np.maximum(np.abs(y0[i]), np.abs(y))))
        ok = ratio <= 1
        a = i[ok]
        if a.size:
            y_mid = y0[a] + sum(kj[ok] * (m * step[ok])[:, None] for kj, m in zip(k, tab.mid))
            g0, g1, s_ok, y_ok, y_old = k[0][ok], k[-1][ok], step[ok][:, None], y[ok], y0[a]
            coeff[:, a] = [y_old, s_ok * g0, s_ok * (g1 - 4 * g0) - 11 * y_old - 5 * y_ok + 16 * y_mid,
                           s_ok * (5 * g0 - 3 * g1) + 18 * y_old + 14 * y_ok - 32 * y_mid,
                           2 * s_ok * (g1 - g0) - 8 * (y_ok + y_old) + 16 * y_mid]
            t0[a], t1[a], y0[a], f0[a] = start[ok], end[ok], y_ok, g1
        with np.errstate(divide="ignore"):
            factor = np.minimum(10.0, np.maximum(0.9 / ratio ** (1 / tab.order), np.where(ok, 1.0, 0.2)))
        dt[i] = step * np.where(ratio == 0, 10.0, factor)
        active[i] = t1[i] < 1.0
    x = ((1.0 - t0) / (t1 - t0))[:, None]
    return coeff[0] + x * coeff[1] + x ** 2 * coeff[2] + x ** 3 * coeff[3] + x ** 4 * coeff[4], nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "odenet")
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)

    model, _ = load_network(args.model)
    records = load_records(ROOT / "tests/fixtures/mitdb", ("100", "208", "232"),
                           input="context" if model.arch.encoder == "context" else "beat")
    with torch.inference_mode():
        h0 = model.encoder(torch.from_numpy(records.beats[:256])).numpy()
    linear = model.body.dynamics.layer.linear
    weight = linear.weight.detach().numpy().astype(np.float64)
    bias = linear.bias.detach().numpy().astype(np.float64)
    head = model.head
    body64 = copy.deepcopy(model.body).double()
    tol = args.tol
    cfg = SolverConfig(rtol=tol, atol=tol)
    span = torch.tensor([0.0, 1.0])

    def probabilities(state: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(head(torch.from_numpy(np.asarray(state, dtype=np.float32))), dim=1).numpy()

    reference, reference_nfe = [], []
    with torch.inference_mode():
        for row in h0:
            reference.append(body64(torch.from_numpy(row[None]).double(), cfg).numpy()[0])
            reference_nfe.append(body64.nfe)
    reference, reference_nfe = np.array(reference), np.array(reference_nfe)
    reference_p = probabilities(reference)

    fast = CompiledODE(weight, bias)

    def plain(x, norm=None):
        options = {"norm": norm} if norm else {}
        return odeint(model.body.dynamics, torch.from_numpy(x), span, rtol=tol, atol=tol, options=options)[-1].numpy()

    def with_torchode(x):
        import torchode  # the 'bench' extra: pip install -e '.[bench]'

        term = torchode.ODETerm(lambda t, y: model.body.dynamics(t[:, None], y))
        solver = torchode.AutoDiffAdjoint(torchode.Dopri5(term=term),
                                          torchode.IntegralController(atol=tol, rtol=tol, term=term))
        x = torch.from_numpy(x)
        problem = torchode.InitialValueProblem(y0=x, t_start=torch.zeros(len(x)), t_end=torch.ones(len(x)))
        solution = solver.solve(problem)
        return solution.ys[:, -1].numpy(), solution.stats["n_f_evals"].numpy()

    candidates = {
        "torchdiffeq f32, batch-wide norm": lambda x: (plain(x), None),
        "torchdiffeq f32, per-beat norm": lambda x: (plain(x, per_beat_rms_norm), None),
        "torchode 1.0 dopri5 (own controller)": with_torchode,
        "numpy f64, per-beat steps": lambda x: numpy_dopri5(x, weight, bias, tol, tol),
        "service.models.fastode (numba) f64": lambda x: fast.solve(x, cfg)[:2],
    }
    print(f"{args.model.name}: body solve, dopri5 rtol = atol = {tol:g}, one thread, real beats")
    print(f"{'candidate':40} {'batch 1 ms':>10} {'batch 256 ms':>12} {'beats/s @256':>12} "
          f"{'NFE = ref':>9} {'max |dh|':>9} {'max |dp|':>9}")
    with torch.inference_mode():
        for name, solve in candidates.items():
            if name.startswith("torchode") and importlib.util.find_spec("torchode") is None:
                print(f"{name:40} skipped: pip install -e '.[bench]'")
                continue
            one = np.median(timed(lambda: solve(h0[:1]), args.reps))
            many = np.median(timed(lambda: solve(h0), max(args.reps // 5, 3)))
            state, nfe = solve(h0)
            same_nfe = "-" if nfe is None else f"{np.mean(np.asarray(nfe) == reference_nfe) * 100:.0f} %"
            dh = np.abs(np.asarray(state, dtype=np.float64) - reference).max()
            dp = np.abs(probabilities(state) - reference_p).max()
            print(f"{name:40} {one * 1e3:10.3f} {many * 1e3:12.2f} {256 / many:12.0f} {same_nfe:>9} "
                  f"{dh:9.1e} {dp:9.1e}")


if __name__ == "__main__":
    main()
