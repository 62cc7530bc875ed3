"""Recordings as other devices would make them, for models that must survive them.

A variant of a record is the same heartbeats with: another sampling rate (100-1000 Hz), a slower or
faster time scale (heart-rate and conduction differences), another gain, baseline wander, muscle
noise, mains hum and R-peaks a few milliseconds off (a detector's, not a cardiologist's). It is then
cut into strips of 10 s to 30 min, each run through the serving code on its own, so that training
also sees first and last beats and running means with a short history, as posted strips have.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from service.signal.beats import resample
from service.signal.context import ContextBeats, context_beats

RATES_HZ = (100, 128, 180, 250, 256, 360, 500, 1000)


@dataclass(frozen=True)
class Augmentation:
    """Ranges each variant draws from (uniform unless said otherwise)."""

    rates_hz: tuple[int, ...] = RATES_HZ
    stretch: tuple[float, float] = (0.9, 1.1)  # time scale of the whole record
    gain: tuple[float, float] = (0.5, 2.0)  # log-uniform
    wander_mv: float = 0.4  # peak amplitude of each of three 0.05-0.5 Hz sinusoids
    noise_mv: tuple[float, float] = (0.002, 0.08)  # RMS of white (muscle-like) noise, log-uniform
    mains_mv: float = 0.05  # peak amplitude of 50 or 60 Hz hum
    jitter_ms: float = 6.0  # R-peak positions moved by up to this much
    strip_s: tuple[float, float] = (10.0, 1800.0)  # strip lengths, log-uniform

    def as_dict(self) -> dict:
        return asdict(self)


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def vary_recording(signal: np.ndarray, fs: float, peaks: np.ndarray, aug: Augmentation,
                   rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """(signal mV, fs, R-peaks) -> the same beats recorded differently: new signal, rate and peaks."""
    rate = float(rng.choice(aug.rates_hz))
    stretch = rng.uniform(*aug.stretch)
    # Playing the samples at fs / stretch slows (stretch > 1) or speeds up the whole record.
    source_fs = round(fs / stretch, 1)
    out = resample(signal, source_fs, int(rate))
    scale = rate / source_fs
    t = np.arange(out.size) / rate
    out = out * log_uniform(rng, *aug.gain)
    for _ in range(3):
        out = out + rng.uniform(0, aug.wander_mv) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t
                                                           + rng.uniform(0, 2 * np.pi))
    out = out + rng.normal(0.0, log_uniform(rng, *aug.noise_mv), out.size)
    mains = float(rng.choice((50.0, 60.0)))
    if mains < rate / 2:
        out = out + rng.uniform(0, aug.mains_mv) * np.sin(2 * np.pi * mains * t + rng.uniform(0, 2 * np.pi))
    jitter = rng.uniform(-1, 1, peaks.size) * aug.jitter_ms * rate / 1000
    moved = np.rint(peaks * scale + jitter).astype(np.int64)
    # Jitter must not merge or reorder neighbouring beats: keep them strictly increasing, inside.
    order = np.arange(moved.size)
    moved = np.maximum.accumulate(np.maximum(moved, 0) - order) + order
    return out, rate, np.minimum(moved, out.size - moved.size + order)


def strips_of(n_samples: int, fs: float, aug: Augmentation, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Consecutive [start, stop) sample ranges of random lengths covering the recording."""
    bounds, start = [], 0
    while start < n_samples:
        stop = start + int(log_uniform(rng, *aug.strip_s) * fs)
        if n_samples - stop < aug.strip_s[0] * fs:
            stop = n_samples
        bounds.append((start, stop))
        start = stop
    return bounds


def augmented_context(signal: np.ndarray, fs: float, peaks: np.ndarray, aug: Augmentation,
                      rng: np.random.Generator) -> ContextBeats:
    """Context beats of one varied recording, cut into strips; one row per input peak, in order."""
    out, rate, moved = vary_recording(signal, fs, peaks, aug, rng)
    parts = []
    for start, stop in strips_of(out.size, rate, aug, rng):
        inside = (moved >= start) & (moved < stop)
        parts.append(context_beats(out[start:stop], rate, moved[inside] - start))
    return ContextBeats(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("windows", "templates", "rr")))
