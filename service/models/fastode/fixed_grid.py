"""Fixed-step Euler, midpoint and RK4 (the 3/8 rule), one beat at a time: torchdiffeq's
FixedGridODESolver with `step_size` (fixed_grid.py, rk_common.rk4_alt_step_func), in float64.

The grid is torchdiffeq's: ceil(1 / step + 1) points k * step, the last one moved to t = 1.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from service.models.fastode.dynamics import evaluate

EULER, MIDPOINT, RK4 = 0, 1, 2
METHODS = {"euler": EULER, "midpoint": MIDPOINT, "rk4": RK4}
EVALUATIONS = {EULER: 1, MIDPOINT: 2, RK4: 4}


def grid(step_size: float) -> np.ndarray:
    """torchdiffeq's _grid_constructor_from_step_size over [0, 1]."""
    times = np.arange(int(math.ceil(1.0 / step_size + 1.0))) * step_size
    times[-1] = 1.0
    return times


@njit(cache=True, nogil=True)
def solve_batch(h0, w_t, w_h, bias, method, times, out, nfe):
    width = h0.shape[1]
    k1 = np.empty(width)
    k2 = np.empty(width)
    k3 = np.empty(width)
    k4 = np.empty(width)
    y = np.empty(width)
    active = np.empty(width, np.int64)
    third = 1 / 3
    two_thirds = 2 / 3
    for b in range(h0.shape[0]):
        y0 = h0[b].copy()
        for i in range(times.size - 1):
            t0, t1 = times[i], times[i + 1]
            dt = t1 - t0
            evaluate(t0, y0, w_t, w_h, bias, k1, active)
            if method == EULER:
                y0 = y0 + dt * k1
            elif method == MIDPOINT:
                half = 0.5 * dt
                y[:] = y0 + k1 * half
                evaluate(t0 + half, y, w_t, w_h, bias, k2, active)
                y0 = y0 + dt * k2
            else:
                y[:] = y0 + dt * k1 * third
                evaluate(t0 + dt * third, y, w_t, w_h, bias, k2, active)
                y[:] = y0 + dt * (k2 - k1 * third)
                evaluate(t0 + dt * two_thirds, y, w_t, w_h, bias, k3, active)
                y[:] = y0 + dt * (k1 - k2 + k3)
                evaluate(t1, y, w_t, w_h, bias, k4, active)
                y0 = y0 + (k1 + 3 * (k2 + k3) + k4) * dt * 0.125
        out[b] = y0
        nfe[b] = (times.size - 1) * (1 if method == EULER else 2 if method == MIDPOINT else 4)
