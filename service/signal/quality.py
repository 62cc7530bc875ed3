"""Signal-quality gate: which stretches of a strip carry no readable ECG, so their "beats" are not labelled.

A QRS detector finds "beats" in anything: white noise, electrode motion, muscle noise. Labelling those
as N, S or V tells a clinician something untrue, so the strip is judged in windows of about 5 s and a
window is unreadable when

- its peak-to-peak amplitude is under FLAT_MV ("flat": lead off, or no signal);
- a fifth or more of its samples sit at its own extremes ("saturated": the amplifier clipped);
- the noise score says so ("noise"): a logistic score over signal-quality indices that tell ECG from
  noise (Clifford, Behar et al. 2012; Li, Mark and Clifford 2008), each computed on the lead at 125 Hz:
  kurtosis of the 0.5-40 Hz lead (kSQI) and of its 5-25 Hz QRS band, the share of QRS-band energy within
  60 ms of the detected beats and the share of time those 120 ms take, the 5-15 Hz to 5-40 Hz power
  ratio (pSQI), the share of power above 1 Hz (basSQI), the 1-5 Hz to 5-40 Hz power ratio and the share
  above 15 Hz (electrode motion is slow and smooth next to a QRS), the amplitude, and two template correlations
  of the detected beats: with the running median beat, and with the most alike of their neighbours
  (which keeps ventricular beats, unlike the median beat, readable). The score is averaged with its
  two neighbouring windows, because noise lasts and a clean record's odd window does not, and a
  window next to a noisy one is noisy at a lower score (hysteresis), so an episode is judged whole.

The coefficients and the threshold were fitted on the MIT-BIH Noise Stress Test Database's noise
recordings (bw, em, ma) and on the MIT-BIH DS1 records only, never on DS2
(`python scripts/quality-gate.py fit`); what the gate costs on all 48 records is measured by
`python scripts/quality-gate.py measure` (docs/noise.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import butter, sosfiltfilt, welch

from service.signal.beats import resample
from service.signal.context import filtered

QUALITY_FS = 125  # every measure is taken on the lead resampled to this rate, so thresholds hold at any rate
WINDOW_SECONDS = 5.0
FLAT_MV = 0.05  # a window with a smaller peak-to-peak amplitude holds no ECG
SATURATED_SHARE = 0.2  # ... or with this share of its samples at its extremes was clipped
RAIL_TOLERANCE = 0.002  # a sample within this share of the window's range of an extreme "sits at" it
SEGMENT = (12, 19)  # beat shape for the template correlations: 96 ms before to 152 ms after the R-peak
NEIGHBOUR_BEATS = 8  # the running median beat and the neighbours: 8 beats either side
QRS_HALF_SECONDS = 0.06
_QRS_BAND = butter(2, (5.0, 25.0), btype="bandpass", fs=QUALITY_FS, output="sos")

# The noise score: logistic regression on standardised features (scripts/quality-gate.py fit).
FEATURES = ("log_kurtosis", "neighbour_correlation", "template_correlation", "qrs_energy_share", "log_qrs_kurtosis",
            "power_ratio_5_15", "power_above_1hz", "qrs_time_share", "log_amplitude", "log_power_1_5_to_5_40",
            "log_power_above_15hz")
FEATURE_MEAN = np.array([2.13226, 0.764362, 0.742335, 0.664513, 2.24967, 0.641786,
                         0.677434, 0.147101, -0.00443995, -0.364014, -2.0577])
FEATURE_SCALE = np.array([0.799496, 0.366156, 0.359287, 0.349558, 0.649416, 0.253207,
                          0.360161, 0.0779343, 1.09214, 1.29738, 1.30709])
COEFFICIENTS = np.array([-0.893914, -9.90111, 0.32139, -2.79627, -0.37055, -1.06191,
                         -3.056, 1.85292, 0.575136, -0.331154, -1.91027])
INTERCEPT = 1.06728
NOISE_THRESHOLD = 1.87453  # a window whose smoothed score exceeds this is noise (costs DS1 0.2 % of its beats)
NEXT_TO_NOISE_THRESHOLD = 0.5  # ... and so is its neighbour, if its score exceeds this (hysteresis)


@dataclass(frozen=True)
class Span:
    """A stretch of the strip that carries no readable ECG."""

    start_s: float
    end_s: float
    reason: str  # "flat", "saturated" or "noise"

    def as_dict(self) -> dict:
        return {"start_s": self.start_s, "end_s": self.end_s, "reason": self.reason}


def window_edges(n_samples: int, fs: float) -> np.ndarray:
    """Sample indices bounding windows of about WINDOW_SECONDS that tile the strip exactly."""
    count = max(1, int(round(n_samples / fs / WINDOW_SECONDS)))
    return np.linspace(0, n_samples, count + 1).round().astype(np.int64)


def beat_correlations(lead: np.ndarray, peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per beat: correlation with the running median beat, and the highest with a neighbouring beat."""
    before, after = SEGMENT
    keep = (peaks - before >= 0) & (peaks + after < lead.size)
    template = np.zeros(peaks.size)
    neighbour = np.zeros(peaks.size)
    if keep.sum() < 3:
        return template, neighbour
    shapes = sliding_window_view(lead, before + after + 1)[peaks[keep] - before]
    shapes = shapes - shapes.mean(axis=1, keepdims=True)
    shapes /= np.maximum(np.linalg.norm(shapes, axis=1, keepdims=True), 1e-12)
    k = NEIGHBOUR_BEATS
    padded = np.concatenate([np.full((k, shapes.shape[1]), np.nan), shapes, np.full((k, shapes.shape[1]), np.nan)])
    around = sliding_window_view(padded, (2 * k + 1, shapes.shape[1]))[:, 0]  # (n, 2k+1, width)
    median = np.nanmedian(around, axis=1)
    median -= median.mean(axis=1, keepdims=True)
    median /= np.maximum(np.linalg.norm(median, axis=1, keepdims=True), 1e-12)
    kept_template = np.einsum("ij,ij->i", shapes, median)
    similarity = np.einsum("ij,ikj->ik", shapes, np.nan_to_num(around, nan=0.0))
    similarity[:, k] = -1.0  # not with itself
    similarity[np.isnan(around[:, :, 0])] = -1.0
    template[keep], neighbour[keep] = kept_template, similarity.max(axis=1)
    return template, neighbour


def window_features(signal_mv: np.ndarray, fs: float, peaks: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The noise score's features (FEATURES) for each window between `edges` (samples at `fs`)."""
    from scipy.stats import kurtosis

    lead = filtered(signal_mv, fs)
    raw = resample(signal_mv, fs, QUALITY_FS, padtype="edge")
    qrs_band = sosfiltfilt(_QRS_BAND, raw) if raw.size > 15 else raw - raw.mean()
    energy = qrs_band ** 2
    at = np.clip(np.round(peaks * QUALITY_FS / fs).astype(np.int64), 0, max(lead.size - 1, 0))
    template, neighbour = beat_correlations(lead, at)
    near_qrs = np.zeros(lead.size, dtype=bool)
    half = int(round(QRS_HALF_SECONDS * QUALITY_FS))
    for p in at:
        near_qrs[max(p - half, 0):p + half + 1] = True
    bounds = np.clip(np.round(edges * QUALITY_FS / fs).astype(np.int64), 0, lead.size)
    rows = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        x, q, r = lead[a:b], qrs_band[a:b], raw[a:b] - raw[a:b].mean()
        inside = (at >= a) & (at < b)
        f, power = welch(x, fs=QUALITY_FS, nperseg=min(256, x.size))
        f_raw, power_raw = welch(r, fs=QUALITY_FS, nperseg=x.size)

        def band(low, high, upper_open=False):
            inside_band = (f_raw >= low) & ((f_raw < high) if upper_open else (f_raw <= high))
            return float(power_raw[inside_band].sum())
        rows.append((
            np.log(max(kurtosis(x, fisher=False), 1.0)),
            np.median(neighbour[inside]) if inside.sum() >= 2 else 0.0,
            np.median(template[inside]) if inside.sum() >= 2 else 0.0,
            energy[a:b][near_qrs[a:b]].sum() / max(energy[a:b].sum(), 1e-12),
            np.log(max(kurtosis(q, fisher=False), 1.0)),
            power[(f >= 5) & (f <= 15)].sum() / max(power[(f >= 5) & (f <= 40)].sum(), 1e-12),
            1.0 - power_raw[f_raw <= 1].sum() / max(power_raw[f_raw <= 40].sum(), 1e-12),
            near_qrs[a:b].mean(),
            np.log(max(np.percentile(x, 99) - np.percentile(x, 1), 1e-3)),
            np.log(max(band(1, 5, upper_open=True), 1e-6) / max(band(5, 40), 1e-12)),
            np.log(max(band(15, 40), 1e-12) / max(band(1, 40), 1e-12)),
        ))
    return np.nan_to_num(np.array(rows, dtype=np.float64).reshape(-1, len(FEATURES)))


def noise_scores(features: np.ndarray) -> np.ndarray:
    """Each window's noise logit, averaged with its neighbours' (the strip's ends repeat their window)."""
    logit = ((features - FEATURE_MEAN) / FEATURE_SCALE) @ COEFFICIENTS + INTERCEPT
    padded = np.concatenate([logit[:1], logit, logit[-1:]])
    return (padded[:-2] + padded[1:-1] + padded[2:]) / 3


def noisy_windows(scores: np.ndarray) -> np.ndarray:
    """Windows scored above NOISE_THRESHOLD, grown into their neighbours while those score above
    NEXT_TO_NOISE_THRESHOLD: a noise episode is judged as a whole, not window by window."""
    noisy = scores > NOISE_THRESHOLD
    doubtful = scores > NEXT_TO_NOISE_THRESHOLD
    while True:
        beside = np.zeros_like(noisy)
        beside[1:] |= noisy[:-1]
        beside[:-1] |= noisy[1:]
        grown = noisy | (beside & doubtful)
        if np.array_equal(grown, noisy):
            return noisy
        noisy = grown


def window_reasons(signal_mv: np.ndarray, fs: float, peaks: np.ndarray, edges: np.ndarray) -> list[str | None]:
    """Why each window is unreadable ("flat", "saturated", "noise"), or None where it is readable."""
    noisy = noisy_windows(noise_scores(window_features(signal_mv, fs, peaks, edges)))
    reasons = []
    for (a, b), noise in zip(zip(edges[:-1], edges[1:]), noisy):
        x = signal_mv[a:b]
        amplitude = float(np.ptp(x)) if x.size else 0.0
        at_rail = np.mean((x >= x.max() - RAIL_TOLERANCE * amplitude) | (x <= x.min() + RAIL_TOLERANCE * amplitude)) \
            if x.size else 1.0
        if amplitude < FLAT_MV:
            reasons.append("flat")
        elif at_rail >= SATURATED_SHARE:
            reasons.append("saturated")
        else:
            reasons.append("noise" if noise else None)
    return reasons


def unreadable_spans(signal_mv: np.ndarray, fs: float, peaks: np.ndarray) -> list[Span]:
    """The strip's unreadable stretches: neighbouring windows with the same reason, merged."""
    edges = window_edges(signal_mv.size, fs)
    spans: list[Span] = []
    for (a, b), reason in zip(zip(edges[:-1], edges[1:]), window_reasons(signal_mv, fs, peaks, edges)):
        if reason is None:
            continue
        start, end = round(float(a / fs), 3), round(float(b / fs), 3)
        if spans and spans[-1].reason == reason and spans[-1].end_s == start:
            spans[-1] = Span(spans[-1].start_s, end, reason)
        else:
            spans.append(Span(start, end, reason))
    return spans


def readable(peaks: np.ndarray, fs: float, spans: list[Span]) -> np.ndarray:
    """Mask of the R-peaks that lie outside every unreadable span."""
    seconds = peaks / fs
    inside = np.zeros(peaks.size, dtype=bool)
    for span in spans:
        inside |= (seconds >= span.start_s) & (seconds < span.end_s)
    return ~inside


def unbroken_intervals(peaks: np.ndarray, fs: float, spans) -> np.ndarray:
    """Mask of the RR intervals between consecutive `peaks` that no unreadable span interrupts: an
    interval across a span is not a heartbeat interval (beats inside the span went unlabelled)."""
    seconds = np.asarray(peaks, dtype=np.float64) / fs
    unbroken = np.ones(max(seconds.size - 1, 0), dtype=bool)
    for span in spans:
        unbroken &= ~((seconds[:-1] < span.end_s) & (seconds[1:] > span.start_s))
    return unbroken
