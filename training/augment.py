"""Recordings as other devices would make them, for models that must survive them.

A variant of a record is the same heartbeats with: another sampling rate (100-1000 Hz), a slower or
faster time scale (heart-rate and conduction differences), another gain, baseline wander, muscle
noise, mains hum and R-peaks a few milliseconds off (a detector's, not a cardiologist's). It is then
cut into strips of 10 s to 30 min, each run through the serving code on its own, so that training
also sees first and last beats and running means with a short history, as posted strips have.

Both leads of a two-lead record are varied together (`augmented_leads`): the same rate, time scale,
R-peaks and strips, with gain, wander, noise and hum drawn for each lead on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from service.signal.beats import resample
from service.signal.context import ContextBeats, context_beats
from training.noise import NoiseBank

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
    # Real noise (training.noise): every other two-minute stretch of a variant's first lead carries a
    # NSTDB noise recording at an SNR (dB) drawn from this range; None: no real noise.
    real_noise_snr_db: tuple[float, float] | None = None
    noise: NoiseBank | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "noise"}


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def vary_recording(signal: np.ndarray, fs: float, peaks: np.ndarray, aug: Augmentation,
                   rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """(signal mV, fs, R-peaks) -> the same beats recorded differently: new signal, rate and peaks."""
    out, rate, moved, _ = _vary(signal, fs, peaks, aug, rng)
    return out, rate, moved


def _vary(signal: np.ndarray, fs: float, peaks: np.ndarray, aug: Augmentation,
          rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray, float]:
    """vary_recording, also returning the rate the samples were played at (for more leads)."""
    rate = float(rng.choice(aug.rates_hz))
    stretch = rng.uniform(*aug.stretch)
    # Playing the samples at fs / stretch slows (stretch > 1) or speeds up the whole record.
    source_fs = round(fs / stretch, 1)
    out = vary_lead(signal, source_fs, rate, aug, rng)
    scale = rate / source_fs
    jitter = rng.uniform(-1, 1, peaks.size) * aug.jitter_ms * rate / 1000
    moved = np.rint(peaks * scale + jitter).astype(np.int64)
    # Jitter must not merge or reorder neighbouring beats: keep them strictly increasing, inside.
    order = np.arange(moved.size)
    moved = np.minimum(np.maximum.accumulate(np.maximum(moved, 0) - order) + order, out.size - moved.size + order)
    if aug.noise is not None and aug.real_noise_snr_db is not None:
        out = aug.noise.add(out, rate, moved, aug.real_noise_snr_db, rng)
    return out, rate, moved, source_fs


def vary_lead(signal: np.ndarray, source_fs: float, rate: float, aug: Augmentation,
              rng: np.random.Generator) -> np.ndarray:
    """One lead played at `source_fs`, resampled to `rate`, with its own gain, wander, noise and hum."""
    out = resample(signal, source_fs, int(rate))
    t = np.arange(out.size) / rate
    out = out * log_uniform(rng, *aug.gain)
    for _ in range(3):
        out = out + rng.uniform(0, aug.wander_mv) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t
                                                           + rng.uniform(0, 2 * np.pi))
    out = out + rng.normal(0.0, log_uniform(rng, *aug.noise_mv), out.size)
    mains = float(rng.choice((50.0, 60.0)))
    if mains < rate / 2:
        out = out + rng.uniform(0, aug.mains_mv) * np.sin(2 * np.pi * mains * t + rng.uniform(0, 2 * np.pi))
    return out


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
    return augmented_leads([signal], fs, peaks, aug, rng)[0]


def augmented_leads(signals: list[np.ndarray], fs: float, peaks: np.ndarray, aug: Augmentation,
                    rng: np.random.Generator) -> list[ContextBeats]:
    """augmented_context of the leads of one recording, varied together: one rate, time scale,
    set of R-peaks and set of strips; each further lead draws its own gain, wander, noise and hum
    from a generator spawned off `rng` (which leaves `rng`'s stream alone, so the first lead's
    views are the one-lead views of the same seed)."""
    out, rate, moved, source_fs = _vary(signals[0], fs, peaks, aug, rng)
    strips = strips_of(out.size, rate, aug, rng)
    others = rng.spawn(len(signals) - 1) if len(signals) > 1 else []
    leads = [out] + [vary_lead(s, source_fs, rate, aug, g) for s, g in zip(signals[1:], others)]
    views = []
    for lead in leads:
        parts = []
        for start, stop in strips:
            inside = (moved >= start) & (moved < stop)
            parts.append(context_beats(lead[start:stop], rate, moved[inside] - start))
        views.append(ContextBeats(*(np.concatenate([getattr(p, f) for p in parts])
                                    for f in ("windows", "templates", "rr"))))
    return views
