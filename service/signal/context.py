"""Raw ECG + R-peaks -> context beats: the input of the models that generalise across patients.

A beat that starts at its R-peak (service.signal.beats) holds neither its own P wave nor how early it came,
and those are what tell a supraventricular premature beat from a normal one in a patient the model
never saw. A context beat is therefore two parts, both computed here for training and serving:

- `window`: the lead around the R-peak, from 256 ms before to 400 ms after (P wave, QRS, ST, T
  onset), band-passed to 0.5-40 Hz at 125 Hz (so any input rate from 100 to 1000 Hz gives the same
  band), centred on its median and divided by the record's running QRS amplitude (the median
  peak-to-peak QRS of the last 32 beats), not by the window's own extremes.
- `template`: the patient's own recent beat, the sample-wise median of the last 32 windows. A wide
  QRS is normal for a patient with bundle branch block; what marks an ectopic beat is that it
  differs from the patient's dominant beat.
- `rr`: pre-RR, post-RR (NaN for the last beat), the RR before the pre-RR, the mean of the last 10
  RR intervals and the mean of the RR intervals of the last 5 minutes (seconds), and how irregular
  the last 10 intervals are. All are causal: a beat's features never depend on beats more than one
  beat after it.

`rr_features` turns them into what the networks read: log ratios to the patient's own rhythm,
plus flags for a missing pre- or post-RR (first and last beat of a strip).

`two_lead_input` adds a second lead (V1 on most MIT-BIH records) read at the same R-peaks: the
one-lead input unchanged, then the second lead's window and template, then a flag that says whether
the beat has a second lead at all (when it has none, those numbers are all 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import butter, sosfiltfilt

from service.signal.beats import resample

CONTEXT_FS = 125
WINDOW_BEFORE = 32  # samples at 125 Hz: 256 ms before the R-peak
WINDOW_AFTER = 50  # 400 ms after
WINDOW_LENGTH = WINDOW_BEFORE + WINDOW_AFTER + 1
BAND_HZ = (0.5, 40.0)
QRS_HALF_WIDTH = 6  # samples at 125 Hz (48 ms) either side of the R-peak for the QRS amplitude
AMPLITUDE_BEATS = 32  # running median of QRS amplitudes over the last 32 beats
TEMPLATE_BEATS = 32  # running median beat over the last 32 windows
MIN_AMPLITUDE = 1e-3  # guard against a flat window (the strip checks reject flat lines earlier)
LOCAL_BEATS = 10  # local rhythm: mean of the last 10 RR intervals
LONG_SECONDS = 300.0  # patient's rhythm: mean RR over the last 5 minutes
DEFAULT_RR_S = 1.0  # a strip with a single beat has no RR interval at all
RR_FIELDS = ("pre_rr", "post_rr", "prev_rr", "local_rr", "long_rr", "irregularity")
RR_FEATURES = ("log_pre_local", "log_post_local", "log_pre_long", "log_post_long", "log_local_long",
               "log_long", "log_pre_prev", "irregularity", "has_pre", "has_post")
CONTEXT_INPUT = 2 * WINDOW_LENGTH + len(RR_FEATURES)  # numbers per beat the context networks read
SECOND_LEAD_INPUT = 2 * WINDOW_LENGTH + 1  # the second lead's window and template, then has_second_lead
TWO_LEAD_INPUT = CONTEXT_INPUT + SECOND_LEAD_INPUT  # numbers per beat the two-lead context networks read
HAS_SECOND_LEAD = TWO_LEAD_INPUT - 1  # column of the has_second_lead flag (1/0)
_SOS = butter(2, BAND_HZ, btype="bandpass", fs=CONTEXT_FS, output="sos")


@dataclass(frozen=True)
class ContextBeats:
    windows: np.ndarray  # (n, WINDOW_LENGTH) float32
    templates: np.ndarray  # (n, WINDOW_LENGTH) float32: median of the last TEMPLATE_BEATS windows
    rr: np.ndarray  # (n, 6) RR table, columns RR_FIELDS (rr_intervals); NaN where unknown

    def __len__(self) -> int:
        return int(self.windows.shape[0])


def filtered(signal: np.ndarray, fs: float) -> np.ndarray:
    """The lead at 125 Hz, band-passed 0.5-40 Hz (zero phase): baseline wander and mains removed.
    The resampler extends each end with its edge value, so an offset makes no step at the ends."""
    resampled = resample(signal, fs, CONTEXT_FS, padtype="edge")
    if resampled.size <= 3 * (2 * len(_SOS) + 1):
        return resampled - np.median(resampled) if resampled.size else resampled
    return sosfiltfilt(_SOS, resampled)


def sample_windows(signal: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Windows around fractional positions (samples of `signal`), by linear interpolation; edge
    values continue past the ends of the signal."""
    grid = positions[:, None] + np.arange(-WINDOW_BEFORE, WINDOW_AFTER + 1)[None, :]
    grid = np.clip(grid, 0, signal.size - 1)
    low = np.floor(grid).astype(np.int64)
    high = np.minimum(low + 1, signal.size - 1)
    frac = grid - low
    return signal[low] * (1 - frac) + signal[high] * frac


def causal_median(values: np.ndarray, count: int, block: int = 1024) -> np.ndarray:
    """Median of values[max(0, i - count + 1) : i + 1] along axis 0, for every i (any trailing
    shape); computed in blocks so a 60-minute strip needs little memory."""
    out = np.empty(values.shape, dtype=np.float64)
    head = min(count - 1, len(values))
    for i in range(head):
        out[i] = np.median(values[:i + 1], axis=0)
    if len(values) >= count:
        for start in range(count - 1, len(values), block):
            stop = min(start + block, len(values))
            view = sliding_window_view(values[start - count + 1:stop], count, axis=0)
            out[start:stop] = np.median(view, axis=-1)
    return out


def causal_means(values: np.ndarray, first: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """mean(values[first[i]:stop[i]]) for every i; NaN where the range is empty."""
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    count = stop - first
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (cumulative[stop] - cumulative[first]) / np.maximum(count, 1), np.nan)


def rr_intervals(times_s: np.ndarray) -> np.ndarray:
    """(n, 6) RR table of beats at `times_s`, columns RR_FIELDS: pre-RR, post-RR, the RR before
    the pre-RR, the local and long means (s), and the local irregularity.

    The means take the RR intervals that end at or before each beat: the last LOCAL_BEATS of them,
    and those ending within the last LONG_SECONDS. The irregularity is the mean absolute log ratio
    of successive intervals among the last LOCAL_BEATS (0 for a regular rhythm; atrial
    fibrillation makes it large). The first beat, which has no interval yet, borrows its post-RR
    (the one beat of look-ahead that post-RR already takes). NaN marks an unknown pre/post/prev-RR.
    """
    n = times_s.size
    rr = np.full((n, len(RR_FIELDS)), np.nan)
    rr[:, 5] = 0.0
    if n < 2:
        rr[:, 3:5] = DEFAULT_RR_S
        return rr
    intervals = np.diff(times_s)  # interval j ends at beat j + 1
    rr[1:, 0] = intervals
    rr[:-1, 1] = intervals
    rr[2:, 2] = intervals[:-1]
    stop = np.arange(n)  # intervals ending at or before beat i: intervals[:i]
    first_local = np.maximum(stop - LOCAL_BEATS, 0)
    first_long = np.minimum(np.searchsorted(times_s[1:], times_s - LONG_SECONDS, side="right"), stop)
    rr[:, 3] = causal_means(intervals, first_local, stop)
    rr[:, 4] = causal_means(intervals, first_long, stop)
    rr[0, 3:5] = intervals[0]
    if n > 2:  # successive pair m (intervals m, m + 1) ends at beat m + 2
        jumps = np.abs(np.diff(np.log(intervals)))
        pairs = causal_means(jumps, np.minimum(first_local, n - 2), np.maximum(stop - 1, 0))
        rr[:, 5] = np.nan_to_num(pairs, nan=0.0)
    return rr


def rr_features(rr: np.ndarray) -> np.ndarray:
    """(n, 6) RR table (rr_intervals) -> (n, 10) network features RR_FEATURES: log ratios to the
    previous interval and to the local and long rhythm, the log of the long mean, the
    irregularity, and 0/1 flags for a known pre- and post-RR. An unknown pre-, post- or prev-RR is
    taken as the local mean (log ratio 0)."""
    rr = np.asarray(rr, dtype=np.float64).reshape(-1, len(RR_FIELDS))
    local, long = rr[:, 3], rr[:, 4]
    has_pre, has_post = np.isfinite(rr[:, 0]), np.isfinite(rr[:, 1])
    pre = np.where(has_pre, rr[:, 0], local)
    post = np.where(has_post, rr[:, 1], local)
    prev = np.where(np.isfinite(rr[:, 2]), rr[:, 2], local)
    return np.stack([
        np.log(pre / local), np.log(post / local), np.log(pre / long), np.log(post / long),
        np.log(local / long), np.log(long), np.log(pre / prev), rr[:, 5], has_pre, has_post,
    ], axis=1).astype(np.float32)


def context_beats(signal: np.ndarray, fs: float, peaks: np.ndarray) -> ContextBeats:
    """One ECG lead at `fs` Hz and its R-peaks (sample indices at `fs`) -> context beats."""
    peaks = np.asarray(peaks, dtype=np.float64)
    if peaks.size == 0:
        empty = np.zeros((0, WINDOW_LENGTH), np.float32)
        return ContextBeats(empty, empty, np.zeros((0, len(RR_FIELDS))))
    if np.any(np.diff(peaks) <= 0) or peaks[0] < 0 or peaks[-1] >= len(signal):
        raise ValueError("R-peaks must be strictly increasing sample indices inside the signal")
    lead = filtered(np.asarray(signal, dtype=np.float64), fs)
    windows = sample_windows(lead, peaks * CONTEXT_FS / fs)
    qrs = windows[:, WINDOW_BEFORE - QRS_HALF_WIDTH:WINDOW_BEFORE + QRS_HALF_WIDTH + 1]
    amplitude = np.maximum(causal_median(np.ptp(qrs, axis=1), AMPLITUDE_BEATS), MIN_AMPLITUDE)
    windows = (windows - np.median(windows, axis=1, keepdims=True)) / amplitude[:, None]
    templates = causal_median(windows, TEMPLATE_BEATS)
    return ContextBeats(windows.astype(np.float32), templates.astype(np.float32), rr_intervals(peaks / fs))


def network_input(beats: ContextBeats) -> np.ndarray:
    """(n, CONTEXT_INPUT) float32: window, template, RR features, what the context
    networks read (one array, so torch, ONNX and every server backend take the same input)."""
    return np.concatenate([beats.windows, beats.templates, rr_features(beats.rr)], axis=1).astype(np.float32)


def two_lead_input(first: ContextBeats, second: ContextBeats | None = None) -> np.ndarray:
    """(n, TWO_LEAD_INPUT) float32: `network_input(first)` (the one-lead input, unchanged), then
    the second lead's window and template (context beats of the same R-peaks), then
    has_second_lead (1/0). Without a second lead those SECOND_LEAD_INPUT numbers are 0."""
    extra = np.zeros((len(first), SECOND_LEAD_INPUT), dtype=np.float32)
    if second is not None:
        if len(second) != len(first):
            raise ValueError(f"the second lead has {len(second)} beats, the first {len(first)}")
        extra[:, :WINDOW_LENGTH] = second.windows
        extra[:, WINDOW_LENGTH:2 * WINDOW_LENGTH] = second.templates
        extra[:, -1] = 1.0
    return np.concatenate([network_input(first), extra], axis=1)


IRREGULARITY_COLUMN = 2 * WINDOW_LENGTH + RR_FEATURES.index("irregularity")  # same in the two-lead input


def irregularity_of(inputs: np.ndarray) -> np.ndarray | None:
    """Each beat's rhythm irregularity (the RR feature) from one- or two-lead context inputs; None
    for inputs of any other width (beats of the models that read no RR intervals)."""
    inputs = np.asarray(inputs)
    if inputs.ndim != 2 or inputs.shape[1] not in (CONTEXT_INPUT, TWO_LEAD_INPUT):
        return None
    return inputs[:, IRREGULARITY_COLUMN].astype(np.float64)


def without_second_lead(inputs: np.ndarray) -> np.ndarray:
    """Two-lead inputs as if no beat had a second lead (its numbers and flag 0); a copy."""
    inputs = np.array(inputs, dtype=np.float32, copy=True)
    inputs[..., CONTEXT_INPUT:] = 0.0
    return inputs
