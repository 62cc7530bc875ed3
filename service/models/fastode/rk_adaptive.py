"""Adaptive explicit Runge-Kutta, one beat at a time: torchdiffeq's RKAdaptiveStepsizeODESolver.

Every beat takes its own steps (its own initial step, error norm, accepts and rejects), so its
answer is bit-for-bit the same alone or in any batch, and its function evaluations are its own.
Each step follows torchdiffeq 0.2.5 (rk_common.py, misc.py, interp.py) operation by operation, in
float64: the same initial-step rule, stages, error ratio, step-size update, the end of a step
evaluated one ulp early (Perturb.PREV) and fourth-order interpolation at t = 1. The tableaus are
torchdiffeq's own (service.models.fastode.tableaus).

Why float64: an ODE-Net's error estimate is a small difference of large stage values. For the
shipped models it is ~1e-9 while float32 rounding of the stages is ~1e-6, so in float32 the step
sizes follow rounding noise, and no two float32 kernels (MKL's, LLVM's) take the same steps. In
float64 the estimate is far above rounding, and this solver takes torchdiffeq's steps exactly.

The loops below work in place on scratch rows allocated once per batch: no array is created per
step.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from service.models.fastode.dynamics import evaluate

SOLVED, STEP_LIMIT, UNDERFLOW, NOT_FINITE = 0, 1, 2, 3
SAFETY, IFACTOR, DFACTOR = 0.9, 10.0, 0.2
SCRATCH = 6  # rows: y0, f0, f1 / y, error, y_mid, spare


@njit(cache=True, inline="always")
def combine(base, k, count, weights, scale, out):
    """out[:] = base + sum over the first `count` stages of k[j] * (weights[j] * scale); base may be
    None. Each element is summed in stage order, then added to base; with the stage loop outside,
    every pass is one vectorised axpy over the width, not a chain of dependent scalar adds."""
    w = weights[0] * scale
    for i in range(out.size):
        out[i] = k[0, i] * w
    for j in range(1, count):
        w = weights[j] * scale
        for i in range(out.size):
            out[i] += k[j, i] * w
    if base is not None:
        for i in range(out.size):
            out[i] = base[i] + out[i]


@njit(cache=True, inline="always")
def scaled_rms(values, y0, y1, rtol, atol):
    """RMS of values / (atol + rtol * max(|y0|, |y1|)) (torchdiffeq's error ratio, per beat)."""
    total = 0.0
    for i in range(values.size):
        q = values[i] / (atol + rtol * max(abs(y0[i]), abs(y1[i])))
        total += q * q
    return np.sqrt(total / values.size)


@njit(cache=True, nogil=True)
def solve_beat(h0, w_t, w_h, bias, alpha, beta, c_sol, c_error, mid, fsal, order, rtol, atol, max_steps,
               out, k, scratch, coeff, active):
    """Integrate one beat from t = 0 to 1 into `out`; returns (status, nfe). `k` (stages + 1,
    width), `scratch` (SCRATCH, width), `coeff` (5, width) and `active` (width,) are work space."""
    width = h0.size
    y0, f0, y, error, y_mid, probe = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4], scratch[5]
    y0[:] = h0
    evaluate(0.0, y0, w_t, w_h, bias, f0, active)
    nfe = 1

    # Initial step (Hairer, Norsett & Wanner II.4), as misc._select_initial_step.
    d0 = d1 = 0.0
    for i in range(width):
        scale = atol + abs(y0[i]) * rtol
        d0 += (y0[i] / scale) ** 2
        d1 += (f0[i] / scale) ** 2
    d0, d1 = np.sqrt(d0 / width), np.sqrt(d1 / width)
    h = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    for i in range(width):
        probe[i] = y0[i] + h * f0[i]
    evaluate(h, probe, w_t, w_h, bias, error, active)  # error row holds f1 here
    nfe += 1
    d2 = 0.0
    for i in range(width):
        d2 += ((error[i] - f0[i]) / (atol + abs(y0[i]) * rtol)) ** 2
    d2 = abs(np.sqrt(d2 / width) / h)
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / order)
    dt = min(100.0 * h, h1)

    stages = alpha.size
    t0, t1 = 0.0, 0.0  # the last accepted step spans [t0, t1]
    for i in range(5):
        coeff[i] = y0
    steps = 0
    while 1.0 > t1:
        if steps >= max_steps:
            return STEP_LIMIT, nfe
        steps += 1
        start = t1
        end = start + dt
        if not end > start:
            return UNDERFLOW, nfe
        k[0] = f0
        for i in range(stages):
            ti = np.nextafter(end, end - 1) if alpha[i] == 1.0 else start + alpha[i] * dt
            combine(y0, k, i + 1, beta[i], dt, y)
            evaluate(ti, y, w_t, w_h, bias, k[i + 1], active)
            nfe += 1
        if not fsal:
            combine(y0, k, stages + 1, c_sol, dt, y)
        combine(None, k, stages + 1, c_error, dt, error)
        ratio = scaled_rms(error, y0, y, rtol, atol)
        if not np.isfinite(ratio):
            return NOT_FINITE, nfe
        if ratio <= 1:
            # Fourth-order interpolation through the step (interp._interp_fit).
            combine(y0, k, stages + 1, mid, dt, y_mid)
            g0, g1 = k[0], k[stages]
            for i in range(width):
                coeff[0, i] = y0[i]
                coeff[1, i] = dt * g0[i]
                coeff[2, i] = dt * (g1[i] - 4 * g0[i]) - 11 * y0[i] - 5 * y[i] + 16 * y_mid[i]
                coeff[3, i] = dt * (5 * g0[i] - 3 * g1[i]) + 18 * y0[i] + 14 * y[i] - 32 * y_mid[i]
                coeff[4, i] = 2 * dt * (g1[i] - g0[i]) - 8 * (y[i] + y0[i]) + 16 * y_mid[i]
            t0, t1 = start, end
            y0[:] = y
            f0[:] = k[stages]
        # Step-size update (misc._optimal_step_size).
        if ratio == 0.0:
            dt = dt * IFACTOR
        else:
            floor = 1.0 if ratio < 1 else DFACTOR
            dt = dt * min(IFACTOR, max(SAFETY / ratio ** (1.0 / order), floor))
    x = (1.0 - t0) / (t1 - t0)
    for i in range(width):
        out[i] = coeff[0, i] + x * coeff[1, i] + x * x * coeff[2, i] + x * x * x * coeff[3, i] \
            + x * x * x * x * coeff[4, i]
    return SOLVED, nfe


@njit(cache=True, nogil=True)
def solve_batch(h0, w_t, w_h, bias, alpha, beta, c_sol, c_error, mid, fsal, order, rtol, atol, max_steps,
                out, nfe, status):
    """Every beat of h0 (n, width) on its own; per-beat NFE and status."""
    width = h0.shape[1]
    k = np.empty((alpha.size + 1, width))
    scratch = np.empty((SCRATCH, width))
    coeff = np.empty((5, width))
    active = np.empty(width, np.int64)
    for b in range(h0.shape[0]):
        status[b], nfe[b] = solve_beat(h0[b], w_t, w_h, bias, alpha, beta, c_sol, c_error, mid, fsal, order,
                                       rtol, atol, max_steps, out[b], k, scratch, coeff, active)
