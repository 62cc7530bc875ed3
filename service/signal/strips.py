"""Raw ECG strip -> R-peaks -> beats, for strips posted by clients.

R-peaks come from wfdb's GQRS detector (chosen over XQRS on the MIT-BIH reference annotations: XQRS
misses runs of ventricular beats; see README and scripts/evaluate-strips.py). Pan-Tompkins' T-wave
rule then drops a detection that follows the previous one within 360 ms with less than half its QRS
slope, and wfdb's correct_peaks moves each detection onto the QRS extremum, because training beats
start exactly at the annotated R-peak. The beats are then cut by service.signal.beats.extract_beats: the
same code that built the training set, in the format the chosen model reads: 187-sample beats
(service.signal.beats) or context beats (service.signal.context). Stretches the signal-quality gate
(service.signal.quality) finds unreadable are reported as spans, and the beats inside them are dropped:
noise is not labelled as heartbeats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfiltfilt
from wfdb import processing

from service.signal.beats import extract_beats
from service.signal.context import context_beats, network_input
from service.signal.quality import Span, readable, unreadable_spans

MIN_SECONDS = 10.0
MAX_SECONDS = 60 * 60.0
MIN_FS = 100.0
MAX_FS = 1000.0
FLAT_MV = 0.05  # a strip whose peak-to-peak amplitude is below this carries no ECG
PEAK_SEARCH_SECONDS = 0.05  # radius for moving a detection onto the QRS extremum
T_WAVE_SECONDS = 0.36  # Pan & Tompkins 1985: a candidate this close to a QRS may be its T wave
T_WAVE_SLOPE_RATIO = 0.5  # ... and is one if its slope is under half the QRS's
BAND_LIMIT_HZ = 40.0  # R-peaks are placed on the lead low-passed to this (below 100 Hz's Nyquist)


class StripError(ValueError):
    """A strip that cannot be analysed; `field` names the part of the request at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class StripBeats:
    peaks: np.ndarray  # R-peak sample indices at the strip's own sampling rate, outside unreadable spans
    beats: np.ndarray  # (n, input size): the model's input format
    reason: str | None  # why no beats were found, when none were
    unreadable: tuple[Span, ...] = ()  # stretches with no readable ECG; their beats are not in `peaks`


def check_strip(signal: np.ndarray, fs: float) -> None:
    """Reject what no detector should be fed: wrong rate, too short or long, NaN, flat line."""
    if not MIN_FS <= fs <= MAX_FS:
        raise StripError("sampling_rate", f"sampling rate {fs:g} Hz is outside [{MIN_FS:g}, {MAX_FS:g}] Hz")
    seconds = signal.size / fs
    if seconds < MIN_SECONDS:
        raise StripError("signal", f"strip lasts {seconds:.1f} s; at least {MIN_SECONDS:g} s are needed")
    if seconds > MAX_SECONDS:
        raise StripError("signal", f"strip lasts {seconds:.0f} s; at most {MAX_SECONDS:g} s are accepted")
    if not np.all(np.isfinite(signal)):
        raise StripError("signal", "strip contains NaN or infinite samples")
    amplitude = np.ptp(signal)
    if amplitude < FLAT_MV:
        raise StripError("signal", f"flat line: peak-to-peak amplitude {amplitude:.3g} mV < {FLAT_MV} mV")


def reject_t_waves(signal: np.ndarray, fs: float, peaks: np.ndarray) -> np.ndarray:
    """Drop detections that are T waves by Pan-Tompkins' rule (close after a QRS, half its slope)."""
    if peaks.size < 2:
        return peaks
    slope = np.abs(np.gradient(sosfiltfilt(butter(2, [5, 15], btype="bandpass", fs=fs, output="sos"), signal)))
    half = int(round(0.075 * fs))
    peak_slope = np.array([slope[max(p - half, 0):p + half + 1].max() for p in peaks])
    keep = [0]
    for i in range(1, peaks.size):
        last = keep[-1]
        if peaks[i] - peaks[last] < T_WAVE_SECONDS * fs and peak_slope[i] < T_WAVE_SLOPE_RATIO * peak_slope[last]:
            continue
        keep.append(i)
    return peaks[keep]


def detect_r_peaks(signal: np.ndarray, fs: float) -> np.ndarray:
    """R-peak sample indices: GQRS, T-wave rejection, then snapped to the QRS extremum."""
    detected = np.asarray(processing.gqrs_detect(sig=signal, fs=fs), dtype=np.int64)
    if detected.size == 0:
        return detected
    detected = reject_t_waves(signal, fs, detected)
    radius = max(1, int(round(PEAK_SEARCH_SECONDS * fs)))
    # Snap onto the extremum of the lead limited to 40 Hz, the band every accepted rate carries, so
    # the same beat lands on the same wave (R or S of a biphasic QRS) at 128 Hz as at 1000 Hz.
    banded = sosfiltfilt(butter(4, BAND_LIMIT_HZ, btype="lowpass", fs=fs, output="sos"), signal)
    corrected = processing.correct_peaks(banded, detected, search_radius=radius,
                                         smooth_window_size=max(3, int(round(0.15 * fs))), peak_dir="compare")
    return np.unique(np.clip(corrected, 0, signal.size - 1).astype(np.int64))


def beats_of(signal_mv: np.ndarray, fs: float, peaks: np.ndarray, kind: str) -> np.ndarray:
    """The network inputs of a lead's beats: "beat" (187 samples) or "context" (context beats)."""
    if kind == "context":
        return network_input(context_beats(signal_mv, fs, peaks))
    return extract_beats(signal_mv, fs, peaks)


def no_beats_reason(signal: np.ndarray, fs: float, detected: int, spans: list[Span]) -> str | None:
    """Why a strip yields no beat to label, when it yields none."""
    unreadable_s = sum(span.end_s - span.start_s for span in spans)
    if spans and unreadable_s >= signal.size / fs - 1e-6:
        kinds = " and ".join(sorted({span.reason for span in spans}))
        return f"no readable ECG: the whole strip is unreadable ({kinds})"
    if detected and spans:
        return "no QRS complexes detected outside the unreadable spans"
    return None if detected else "no QRS complexes detected"


def strip_beats(signal_mv: np.ndarray, fs: float, kind: str = "beat", gate: bool = True) -> StripBeats:
    """Validate a strip in mV, find its R-peaks, drop those in unreadable stretches (unless `gate` is
    off) and cut the rest's beats in the `kind` format. Beats are cut with every detection in place,
    so a beat's RR context is the same as without the gate."""
    signal = np.asarray(signal_mv, dtype=np.float64)
    check_strip(signal, fs)
    peaks = detect_r_peaks(signal, fs)
    spans = unreadable_spans(signal, fs, peaks) if gate else []
    keep = readable(peaks, fs, spans)
    beats = beats_of(signal, fs, peaks, kind)[keep]
    reason = no_beats_reason(signal, fs, peaks.size, spans) if not keep.any() else None
    return StripBeats(peaks[keep], beats, reason, tuple(spans))
