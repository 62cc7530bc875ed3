"""Raw ECG + R-peak positions -> fixed-length beats, the one code path of training and serving.

The beat format follows Kachuee et al. 2018 ("ECG Heartbeat Classification: A Deep Transferable
Representation"), the source of the public MIT-BIH heartbeat CSVs:

1. resample the lead to 125 Hz with a polyphase filter (360 Hz -> 125 Hz is the ratio 25/72);
2. cut the signal into consecutive 10 s windows and min-max normalise each window to [0, 1];
3. take the median RR interval T of each window;
4. every beat starts at its R-peak and spans 1.2 T, zero-padded or cut to 187 samples.

R-peak positions are an input, so reference annotations (training) and detected peaks (posted
strips) go through exactly the same steps.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

BEAT_FS = 125
BEAT_LENGTH = 187
WINDOW_SECONDS = 10
RR_FACTOR = 1.2

CLASSES = ("N", "S", "V", "F", "Q")
# AAMI EC57 grouping of MIT-BIH beat annotation symbols; other symbols are not beats.
AAMI_GROUPS = {
    "N": "N", "L": "N", "R": "N", "e": "N", "j": "N",
    "A": "S", "a": "S", "J": "S", "S": "S",
    "V": "V", "E": "V",
    "F": "F",
    "/": "Q", "f": "Q", "Q": "Q",
}


def resample(signal: np.ndarray, fs: float, target_fs: int = BEAT_FS, padtype: str = "constant") -> np.ndarray:
    """Polyphase resampling (anti-aliased), exact for rational rate ratios such as 125/360.
    `padtype` is what scipy assumes beyond the ends ("constant": zeros)."""
    ratio = Fraction(target_fs) / Fraction(fs).limit_denominator(1000)
    if ratio == 1:
        return np.asarray(signal, dtype=np.float64)
    return resample_poly(np.asarray(signal, dtype=np.float64), ratio.numerator, ratio.denominator, padtype=padtype)


def rescale_positions(samples: np.ndarray, fs: float, target_fs: int = BEAT_FS) -> np.ndarray:
    """Sample indices at `fs` -> nearest indices at `target_fs` (resample_poly keeps t=0 aligned)."""
    return np.rint(np.asarray(samples, dtype=np.float64) * target_fs / fs).astype(np.int64)


def _window_rr(peaks: np.ndarray, window: np.ndarray, n_windows: int) -> np.ndarray:
    """Median RR interval (samples) per window; windows with under two beats use the overall median."""
    rr = np.diff(peaks)
    overall = float(np.median(rr)) if rr.size else float(BEAT_LENGTH) / RR_FACTOR
    medians = np.full(n_windows, overall)
    same_window = window[1:] == window[:-1]
    for w in np.unique(window[1:][same_window]):
        medians[w] = np.median(rr[same_window & (window[1:] == w)])
    return medians


def segment_beats(signal: np.ndarray, peaks: np.ndarray, fs: int = BEAT_FS) -> np.ndarray:
    """Cut beats from a signal already at `fs` Hz; `peaks` are R-peak sample indices at `fs`.

    Returns float32 (n_beats, 187) in [0, 1]. Each window is normalised over its own span extended
    to the end of its last beat, so every beat lies inside the range it was normalised with.
    """
    signal = np.asarray(signal, dtype=np.float64)
    peaks = np.asarray(peaks, dtype=np.int64)
    beats = np.zeros((peaks.size, BEAT_LENGTH), dtype=np.float32)
    if peaks.size == 0:
        return beats
    if np.any(np.diff(peaks) <= 0) or peaks[0] < 0 or peaks[-1] >= signal.size:
        raise ValueError("R-peaks must be strictly increasing sample indices inside the signal")
    window_length = WINDOW_SECONDS * fs
    window = peaks // window_length
    n_windows = int(window[-1]) + 1
    lengths = np.minimum(np.rint(RR_FACTOR * _window_rr(peaks, window, n_windows)), BEAT_LENGTH)
    lengths = lengths.astype(np.int64)[window]
    for w in np.unique(window):
        members = np.flatnonzero(window == w)
        start = w * window_length
        stop = max((w + 1) * window_length, int(peaks[members[-1]] + lengths[members[-1]]))
        span = signal[start:min(stop, signal.size)]
        low, high = span.min(), span.max()
        scale = high - low if high > low else 1.0
        for i in members:
            piece = signal[peaks[i]:peaks[i] + lengths[i]]
            beats[i, :piece.size] = (piece - low) / scale
    return beats


def extract_beats(signal: np.ndarray, fs: float, peaks: np.ndarray) -> np.ndarray:
    """One ECG lead at `fs` Hz and its R-peaks (indices at `fs`) -> beats of 187 samples at 125 Hz."""
    resampled = resample(signal, fs)
    positions = rescale_positions(peaks, fs)
    # Rounding can push the last peak one sample past the end of the resampled signal.
    positions = np.clip(positions, 0, resampled.size - 1)
    return segment_beats(resampled, positions)
