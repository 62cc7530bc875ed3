"""Raw ECG strip -> R-peaks -> beats, for strips posted by clients.

R-peaks come from wfdb's GQRS detector (chosen over XQRS on the MIT-BIH reference annotations: XQRS
misses runs of ventricular beats; see README and scripts/evaluate-strips.py). Pan-Tompkins' T-wave
rule then drops a detection that follows the previous one within 360 ms with less than half its QRS
slope, wfdb's correct_peaks moves each detection onto the QRS extremum, because training beats
start exactly at the annotated R-peak, and a detection far smaller than its neighbours that is mostly
high-frequency noise (muscle noise in a pause) is dropped. The beats are then cut by
service.signal.beats.extract_beats: the same code that built the training set, in the format the
chosen model reads: 187-sample beats (service.signal.beats) or context beats
(service.signal.context). Stretches the signal-quality gate (service.signal.quality) finds unreadable
are reported as spans, and the beats inside them are dropped:
noise is not labelled as heartbeats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d, minimum_filter1d, uniform_filter1d
from scipy.signal import butter, sosfiltfilt
from wfdb import processing

from service.signal.beats import extract_beats
from service.signal.context import context_beats, network_input
from service.signal.quality import Span, readable, unreadable_spans
from service.signal.rhythm import af_criteria

MIN_SECONDS = 10.0
MAX_SECONDS = 60 * 60.0
MIN_FS = 100.0
MAX_FS = 1000.0
FLAT_MV = 0.05  # a strip whose peak-to-peak amplitude is below this carries no ECG
PEAK_SEARCH_SECONDS = 0.05  # radius for moving a detection onto the QRS extremum
T_WAVE_SECONDS = 0.36  # Pan & Tompkins 1985: a candidate this close to a QRS may be its T wave
T_WAVE_SLOPE_RATIO = 0.5  # ... and is one if its slope is under half the QRS's
BAND_LIMIT_HZ = 40.0  # R-peaks are placed on the lead low-passed to this (below 100 Hz's Nyquist)
NOISE_NEIGHBOURS = 8  # a detection is compared with the median of the 8 detections either side of it
NOISE_SIZE_RATIO = 0.5  # ... and may be noise if under half their QRS slope and half their amplitude
NOISE_BAND_RATIO = 1.6  # ... and is noise if its 20-40 Hz RMS exceeds 1.6 times its 5-15 Hz (QRS band) RMS
NOISE_WINDOW_SECONDS = 0.15  # half-width of the window a candidate is measured over


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
    af_criteria: np.ndarray | None = None  # (n,) bool per beat, context beats only (service.signal.rhythm)


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


def qrs_band(signal: np.ndarray, fs: float) -> np.ndarray:
    """The lead band-passed to 5-15 Hz, where a QRS complex's energy lies (Pan & Tompkins 1985)."""
    return sosfiltfilt(butter(2, [5, 15], btype="bandpass", fs=fs, output="sos"), signal)


def reject_t_waves(band: np.ndarray, fs: float, peaks: np.ndarray) -> np.ndarray:
    """Drop detections that are T waves by Pan-Tompkins' rule (close after a QRS, half its slope);
    `band` is the lead's qrs_band."""
    if peaks.size < 2:
        return peaks
    slope = np.abs(np.gradient(band))
    half = int(round(0.075 * fs))
    peak_slope = np.array([slope[max(p - half, 0):p + half + 1].max() for p in peaks])
    keep = [0]
    for i in range(1, peaks.size):
        last = keep[-1]
        if peaks[i] - peaks[last] < T_WAVE_SECONDS * fs and peak_slope[i] < T_WAVE_SLOPE_RATIO * peak_slope[last]:
            continue
        keep.append(i)
    return peaks[keep]


def reject_noise(signal: np.ndarray, band: np.ndarray, fs: float, peaks: np.ndarray) -> np.ndarray:
    """Drop detections that are bursts of noise, not QRS complexes: far smaller than the beats around
    them and made mostly of high frequencies.

    In a long pause (record 232's sinus pauses of up to 6 s) GQRS lowers its threshold until it fires
    on muscle noise. Size alone does not tell that noise from a real small beat (a lead coming loose,
    a wide ventricular beat detected at its onset), so a detection is dropped only when, over the
    150 ms either side of it, (1) its largest 5-15 Hz slope and its 1-40 Hz peak-to-peak amplitude are
    both under NOISE_SIZE_RATIO of the median QRS slope and amplitude of its 16 neighbouring
    detections, and (2) its 20-40 Hz RMS exceeds NOISE_BAND_RATIO times its 5-15 Hz RMS. A QRS
    complex's energy lies at 5-15 Hz (Thakor, Webster & Tompkins 1984, the band Pan & Tompkins 1985
    filter to), muscle noise's mostly above it. On the MLII lead of the 44 non-paced MIT-BIH records
    this drops 14 false detections and no true beat (scripts/evaluate-strips.py). `band` is the
    lead's qrs_band."""
    if peaks.size < 4:
        return peaks
    high_band = sosfiltfilt(butter(2, [20, 40], btype="bandpass", fs=fs, output="sos"), signal)
    wide_band = sosfiltfilt(butter(2, [1, 40], btype="bandpass", fs=fs, output="sos"), signal)
    slope = np.abs(np.gradient(band))

    def window(size_s: float) -> int:
        return 2 * int(round(size_s * fs)) + 1

    qrs, wide = window(0.075), window(NOISE_WINDOW_SECONDS)  # a neighbour's own QRS; the candidate's surround
    qrs_slope = maximum_filter1d(slope, qrs)[peaks]
    qrs_amplitude = (maximum_filter1d(wide_band, qrs) - minimum_filter1d(wide_band, qrs))[peaks]
    slope_around = maximum_filter1d(slope, wide)[peaks]
    amplitude_around = (maximum_filter1d(wide_band, wide) - minimum_filter1d(wide_band, wide))[peaks]
    band_ratio = np.sqrt(uniform_filter1d(high_band ** 2, wide)[peaks]
                         / np.maximum(uniform_filter1d(band ** 2, wide)[peaks], np.finfo(float).tiny))
    keep = np.ones(peaks.size, dtype=bool)
    for i in np.flatnonzero(band_ratio > NOISE_BAND_RATIO):
        neighbours = np.r_[max(i - NOISE_NEIGHBOURS, 0):i, i + 1:min(i + NOISE_NEIGHBOURS + 1, peaks.size)]
        keep[i] = not (slope_around[i] < NOISE_SIZE_RATIO * np.median(qrs_slope[neighbours])
                       and amplitude_around[i] < NOISE_SIZE_RATIO * np.median(qrs_amplitude[neighbours]))
    return peaks[keep]


def detect_r_peaks(signal: np.ndarray, fs: float) -> np.ndarray:
    """R-peak sample indices: GQRS, T-wave rejection, snapped to the QRS extremum, noise rejection."""
    detected = np.asarray(processing.gqrs_detect(sig=signal, fs=fs), dtype=np.int64)
    if detected.size == 0:
        return detected
    band = qrs_band(signal, fs)
    detected = reject_t_waves(band, fs, detected)
    radius = max(1, int(round(PEAK_SEARCH_SECONDS * fs)))
    # Snap onto the extremum of the lead limited to 40 Hz, the band every accepted rate carries, so
    # the same beat lands on the same wave (R or S of a biphasic QRS) at 128 Hz as at 1000 Hz.
    banded = sosfiltfilt(butter(4, BAND_LIMIT_HZ, btype="lowpass", fs=fs, output="sos"), signal)
    corrected = processing.correct_peaks(banded, detected, search_radius=radius,
                                         smooth_window_size=max(3, int(round(0.15 * fs))), peak_dir="compare")
    return reject_noise(signal, band, fs, np.unique(np.clip(corrected, 0, signal.size - 1).astype(np.int64)))


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
    so a beat's RR context is the same as without the gate. The AF criteria flags of context beats
    (service.signal.rhythm) are judged on the beats kept: false detections in noise are not a rhythm."""
    signal = np.asarray(signal_mv, dtype=np.float64)
    check_strip(signal, fs)
    peaks = detect_r_peaks(signal, fs)
    spans = unreadable_spans(signal, fs, peaks) if gate else []
    keep = readable(peaks, fs, spans)
    beats = beats_of(signal, fs, peaks, kind)[keep]
    flags = af_criteria(peaks[keep] / fs) if kind == "context" else None
    reason = no_beats_reason(signal, fs, peaks.size, spans) if not keep.any() else None
    return StripBeats(peaks[keep], beats, reason, tuple(spans), flags)
