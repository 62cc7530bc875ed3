"""f(t, h) = W [t, ReLU(h)] + b for one beat: the ODE-Net's dynamics, compiled (float64).

The weights are the trained `ConcatLinear` of service.models.networks, split into the time column
`w_t` (width,) and the state part transposed, `w_h` (width in, width out), so the inner loop is an
axpy over contiguous outputs (vectorised by LLVM without reordering any sum).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def evaluate(t, y, w_t, w_h, bias, out, active):
    """out[:] = bias + w_t * t + w_h.T @ ReLU(y). `active` (width,) int64 is work space: the
    indices of the positive entries are gathered first without a branch, so the loop over them
    neither mispredicts (about half the entries are positive, at random) nor does the zero rows'
    work; the rows are still added in index order."""
    for j in range(out.size):
        out[j] = bias[j] + w_t[j] * t
    count = 0
    for i in range(y.size):
        active[count] = i
        count += y[i] > 0
    for a in range(count):
        i = active[a]
        r = y[i]
        row = w_h[i]
        for j in range(out.size):
            out[j] += row[j] * r


def split_weights(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ConcatLinear's (width, width + 1) weight and bias -> w_t, w_h, bias as float64 arrays."""
    weight = np.asarray(weight, dtype=np.float64)
    return (np.ascontiguousarray(weight[:, 0]), np.ascontiguousarray(weight[:, 1:].T),
            np.ascontiguousarray(bias, dtype=np.float64))
