"""Which beats end a stretch of RR intervals that meets the criteria of atrial fibrillation.

In atrial fibrillation AAMI labels every beat N: with no organised atrial activity there is nothing
for a beat to be premature against. A network that reads each beat's prematurity calls many of
these beats S, and on patients it never saw most of its false S calls are such beats. Dash, Chon,
Lu and Raeder ("Automatic real time detection of atrial fibrillation", Annals of Biomedical
Engineering 37, 2009) test a stretch of 128 RR intervals, its 8 longest and 8 shortest set aside
so that isolated ectopic beats and pauses do not count, for three signs of a random rhythm: the
root mean square of successive differences over the mean interval (above 0.1), the Shannon entropy
of the intervals' 16-bin histogram over log 16 (above 0.7), and the turning point ratio (above
0.54). Those are the method's thresholds; nothing here is fitted.

The test is causal: a beat is judged on the 128 intervals that end at or before it, so appending
beats never changes it, and the first 128 beats of a strip are never flagged. It speaks of the RR
intervals only, not of the atria: frequent ventricular ectopy (bigeminy) meets it too, which is
why no report names atrial fibrillation from it (service.models.decision reads it for S alone).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

INTERVALS = 128  # RR intervals in each tested stretch
SET_ASIDE = 8  # longest and shortest intervals left out, each
BINS = 16
MIN_RMSSD = 0.1  # over the mean interval
MIN_ENTROPY = 0.7  # over log(BINS)
MIN_TURNING_POINTS = 0.54  # share of the inner intervals that are a local maximum or minimum


def af_criteria(times_s: np.ndarray) -> np.ndarray:
    """(n,) bool for beats at `times_s` (s, increasing): True where the INTERVALS RR intervals
    ending at the beat meet the three criteria of the module docstring."""
    times_s = np.asarray(times_s, dtype=np.float64)
    flags = np.zeros(times_s.size, dtype=bool)
    if times_s.size <= INTERVALS:
        return flags
    windows = sliding_window_view(np.diff(times_s), INTERVALS)  # row j: the intervals ending at beats j + 1 .. j + INTERVALS
    ordered = np.sort(windows, axis=1)
    low, high = ordered[:, SET_ASIDE:SET_ASIDE + 1], ordered[:, -SET_ASIDE - 1:-SET_ASIDE]
    kept = (windows >= low) & (windows <= high)
    # the kept intervals of each row first, in their order (a stable sort of the "not kept" flags)
    compact = np.take_along_axis(windows, np.argsort(~kept, axis=1, kind="stable"), axis=1)
    count = kept.sum(axis=1)
    column = np.arange(INTERVALS)
    inside = column[None, :] < count[:, None]
    mean = np.where(inside, compact, 0.0).sum(axis=1) / count
    steps = np.diff(compact, axis=1)
    pairs = column[None, :-1] < (count - 1)[:, None]
    rmssd = np.sqrt(np.where(pairs, steps ** 2, 0.0).sum(axis=1) / (count - 1)) / mean
    turning = (steps[:, :-1] * steps[:, 1:] < 0) & (column[None, :-2] < (count - 2)[:, None])
    turning_ratio = turning.sum(axis=1) / (count - 2)
    width = np.maximum(high - low, 1e-12)
    bins = np.clip(((compact - low) / width * BINS).astype(np.int64), 0, BINS - 1)
    counts = np.zeros((len(windows), BINS))
    np.add.at(counts, (np.nonzero(inside)[0], bins[inside]), 1.0)
    share = counts / count[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(share > 0, share * np.log(share), 0.0).sum(axis=1) / np.log(BINS)
    flags[INTERVALS:] = (rmssd > MIN_RMSSD) & (entropy > MIN_ENTROPY) & (turning_ratio > MIN_TURNING_POINTS)
    return flags
