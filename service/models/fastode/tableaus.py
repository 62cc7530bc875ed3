"""The Butcher tableaus of torchdiffeq's adaptive solvers, taken from torchdiffeq itself (pinned
0.2.5) so the compiled solver cannot drift from the reference; `beta` padded into one
lower-triangular matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torchdiffeq._impl.adaptive_heun import AdaptiveHeunSolver
from torchdiffeq._impl.bosh3 import Bosh3Solver
from torchdiffeq._impl.dopri5 import Dopri5Solver
from torchdiffeq._impl.dopri8 import Dopri8Solver
from torchdiffeq._impl.fehlberg2 import Fehlberg2

SOLVERS = {"dopri5": Dopri5Solver, "dopri8": Dopri8Solver, "bosh3": Bosh3Solver, "fehlberg2": Fehlberg2,
           "adaptive_heun": AdaptiveHeunSolver}


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
    solver = SOLVERS[method]
    t = solver.tableau
    stages = len(t.alpha)
    beta = np.zeros((stages, stages))
    for i, row in enumerate(t.beta):
        beta[i, :len(row)] = row.numpy()
    c_sol = t.c_sol.numpy()
    fsal = bool(c_sol[-1] == 0 and np.all(c_sol[:-1] == beta[-1]))
    return Tableau(t.alpha.numpy(), beta, c_sol, t.c_error.numpy(), solver.mid.numpy(), solver.order, fsal)


TABLEAUS = {method: tableau(method) for method in SOLVERS}
