"""The Butcher tableaus of torchdiffeq's adaptive solvers (pinned 0.2.5), read from their float64
literals (service.models.fastode.torchdiffeq_tableaus) so the compiled solver serves without torch;
tests/test_fastode.py compares them with torchdiffeq's own, bit for bit, so they cannot drift from
the reference. `beta` is padded into one lower-triangular matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.models.fastode.torchdiffeq_tableaus import TORCHDIFFEQ_TABLEAUS


@dataclass(frozen=True)
class Tableau:
    alpha: np.ndarray  # (s,) stage times
    beta: np.ndarray  # (s, s) stage weights, row i uses its first i + 1 entries
    c_sol: np.ndarray  # (s + 1,)
    c_error: np.ndarray  # (s + 1,)
    mid: np.ndarray  # (s + 1,) weights of the interpolation mid-point
    order: int
    fsal: bool  # the last stage is the solution (first same as last): no extra combination


def tableau(method: str) -> Tableau:
    t = TORCHDIFFEQ_TABLEAUS[method]
    alpha = np.array(t["alpha"], dtype=np.float64)
    stages = len(alpha)
    beta = np.zeros((stages, stages))
    for i, row in enumerate(t["beta"]):
        beta[i, :len(row)] = row
    c_sol = np.array(t["c_sol"], dtype=np.float64)
    fsal = bool(c_sol[-1] == 0 and np.all(c_sol[:-1] == beta[-1]))
    return Tableau(alpha, beta, c_sol, np.array(t["c_error"], dtype=np.float64),
                   np.array(t["mid"], dtype=np.float64), t["order"], fsal)


TABLEAUS = {method: tableau(method) for method in TORCHDIFFEQ_TABLEAUS}
