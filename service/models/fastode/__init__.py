"""Compiled ODE-Net solves that give torchdiffeq's answers, one beat at a time.

torchdiffeq stays the reference and the training solver; this package serves. For the dynamics
f(t, h) = W [t, ReLU(h)] + b of an ODE-Net body it integrates each beat from t = 0 to 1 with the
same method, tolerances, step-size control and interpolation as `torchdiffeq.odeint` called on
that beat alone (in float64: see rk_adaptive for why), in a numba-compiled loop, and reports
each beat's own function evaluations.

    solver = CompiledODE(weight, bias)      # the body's ConcatLinear weight (w, w + 1) and bias
    h1, nfe, status = solver.solve(h0, SolverConfig(method="dopri5", rtol=1e-3, atol=1e-3))

A beat whose solve fails (step budget spent, non-finite state) has a non-zero status; the others
are unaffected. `failure(status, solver)` turns a status into the error to raise.
"""

from __future__ import annotations

import numpy as np

from service.models.fastode import fixed_grid, rk_adaptive
from service.models.fastode.rk_adaptive import SOLVED, STEP_LIMIT
from service.models.fastode.dynamics import split_weights
from service.models.fastode.tableaus import TABLEAUS
from service.models.solver import DEFAULT_STEP_SIZE, SolverConfig, SolverError, SolverStepLimitError

METHODS = tuple(TABLEAUS) + tuple(fixed_grid.METHODS)


class CompiledODE:
    """One ODE-Net body's dynamics, solved beat by beat; thread-safe (no state between calls)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        self.w_t, self.w_h, self.bias = split_weights(weight, bias)
        self.width = self.bias.size

    def solve(self, h0: np.ndarray, solver: SolverConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """h(1) for every row of h0 (n, width), the function evaluations and the status of each row."""
        h0 = np.ascontiguousarray(h0, dtype=np.float64)
        out = np.empty_like(h0)
        nfe = np.zeros(len(h0), np.int64)
        status = np.zeros(len(h0), np.int8)
        if solver.method in fixed_grid.METHODS:
            times = fixed_grid.grid(solver.step_size or DEFAULT_STEP_SIZE)
            fixed_grid.solve_batch(h0, self.w_t, self.w_h, self.bias, fixed_grid.METHODS[solver.method], times,
                                   out, nfe)
            return out, nfe, status
        t = TABLEAUS[solver.method]
        rk_adaptive.solve_batch(h0, self.w_t, self.w_h, self.bias, t.alpha, t.beta, t.c_sol, t.c_error, t.mid,
                                t.fsal, t.order, float(solver.rtol), float(solver.atol), int(solver.max_num_steps),
                                out, nfe, status)
        out[status != SOLVED] = 0.0  # no answer for a failed beat; keep the batch's arithmetic finite
        return out, nfe, status


def failure(status: np.ndarray, solver: SolverConfig) -> SolverError | None:
    """The error of the worst failed beat in `status`, or None when every beat was solved."""
    if np.any(status == STEP_LIMIT):
        return SolverStepLimitError(f"{solver.method} needed more than {solver.max_num_steps} steps at "
                                    f"rtol={solver.rtol:g}, atol={solver.atol:g}")
    if np.any(status != SOLVED):
        return SolverError(f"{solver.method} failed: the state became non-finite or the step underflowed")
    return None
