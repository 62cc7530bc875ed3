"""The rhythm report of a strip or record, as a Holter report gives it, from its beats alone.

Pure functions of the R-peak times and labels (and, where the analysis gives them, per-beat review
flags and unreadable spans), so the service's answers, the command line and the tests compute the
same report. Every definition is written down, with its source, in docs/reports.md; in short:

- ectopic beats of a class (V or S) are grouped into maximal stretches of consecutive beats of that
  class: 1 beat is isolated, 2 a couplet, 3 a triplet, >= 3 a run (so every triplet is also a run);
- bigeminy: >= `min_cycles` consecutive cycles of one normal beat then one ectopic beat (N X);
  trigeminy: >= `min_cycles` consecutive cycles of two normal beats then one ectopic beat (N N X);
- a pause: an RR interval longer than `pause_threshold_s` (2 s);
- heart rate: 60 / mean RR over consecutive windows of `window_s` (60 s); min and max over the
  windows with at least half a window of readable signal, mean over the whole record.
Nothing crosses an unreadable span: stretches and patterns are cut there, RR intervals that overlap
one are not used for heart rate or pauses, and beats inside one are counted but never ectopy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

CLASSES = ("N", "S", "V", "F", "Q")
ECTOPIC = ("V", "S")
PAUSE_THRESHOLD_S = 2.0
WINDOW_S = 60.0
MIN_CYCLES = 3  # bigeminy / trigeminy: at least this many consecutive cycles
DEFINITIONS = "docs/reports.md"


def rhythm_report(times_s: Sequence[float], labels: Sequence[str], duration_s: float,
                  review: Sequence[bool] | None = None, unreadable: Sequence | None = None,
                  pause_threshold_s: float = PAUSE_THRESHOLD_S, window_s: float = WINDOW_S,
                  min_cycles: int = MIN_CYCLES) -> dict:
    """The report (JSON-ready dict, the fields of service.schemas.RhythmReport) of beats at
    `times_s` (s from the start, ascending) labelled `labels` (N, S, V, F or Q)."""
    times = np.asarray(times_s, dtype=np.float64)
    labels = [str(label) for label in labels]
    if times.shape != (len(labels),):
        raise ValueError(f"{times.size} R-peak times but {len(labels)} labels")
    if times.size > 1 and np.any(np.diff(times) < 0):
        raise ValueError("R-peak times must be in ascending order")
    unknown = set(labels) - set(CLASSES)
    if unknown:
        raise ValueError(f"unknown labels {sorted(unknown)}; expected {', '.join(CLASSES)}")
    if review is not None and len(review) != len(labels):
        raise ValueError(f"{len(review)} review flags but {len(labels)} beats")
    spans = unreadable_spans(unreadable or [], duration_s)
    analysed_s = max(duration_s - sum(s["end_s"] - s["start_s"] for s in spans), 0.0)
    usable = usable_intervals(times, spans)
    parts = segments(times, labels, spans)
    return {
        "duration_s": round(float(duration_s), 3),
        "analysed_s": round(analysed_s, 3),
        "beats": {"total": len(labels), **{c: labels.count(c) for c in CLASSES}},
        "heart_rate": heart_rate(times, usable, duration_s, spans, window_s),
        "ectopy": {c: ectopy(parts, times, c, analysed_s, min_cycles) for c in ECTOPIC},
        "pauses": pauses(times, usable, pause_threshold_s),
        "pause_threshold_s": pause_threshold_s,
        "review": review_share(review, len(labels)),
        "unreadable": spans,
        "definitions": DEFINITIONS,
    }


def span_fields(span) -> tuple[float, float, str]:
    """(start_s, end_s, reason) of a span given as a dict or as an object with those attributes."""
    get = span.get if isinstance(span, dict) else (lambda name: getattr(span, name, None))
    return float(get("start_s")), float(get("end_s")), get("reason") or ""


def unreadable_spans(spans: Sequence, duration_s: float) -> list[dict]:
    """Spans clipped to the record, sorted, overlapping ones merged (their reasons joined)."""
    clipped = sorted((max(start, 0.0), min(end, duration_s), reason)
                     for start, end, reason in map(span_fields, spans))
    merged: list[list] = []
    for start, end, reason in clipped:
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            if reason and reason not in merged[-1][2].split(", "):
                merged[-1][2] = ", ".join(filter(None, (merged[-1][2], reason)))
        else:
            merged.append([start, end, reason])
    return [{"start_s": round(a, 3), "end_s": round(b, 3), "reason": r or None} for a, b, r in merged]


def inside(times: np.ndarray, spans: list[dict]) -> np.ndarray:
    """Which of `times` fall in an unreadable span."""
    hit = np.zeros(times.shape, dtype=bool)
    for span in spans:
        hit |= (times >= span["start_s"]) & (times <= span["end_s"])
    return hit


def usable_intervals(times: np.ndarray, spans: list[dict]) -> np.ndarray:
    """For each RR interval (beat i to i+1): True unless it overlaps an unreadable span."""
    ok = np.ones(max(times.size - 1, 0), dtype=bool)
    for span in spans:
        ok &= ~((times[1:] >= span["start_s"]) & (times[:-1] <= span["end_s"]))
    return ok


def segments(times: np.ndarray, labels: list[str], spans: list[dict]) -> list[tuple[int, str]]:
    """The labels as strings, one character a beat, cut wherever an RR interval overlaps an
    unreadable span (beats inside one are dropped), as (index of the first beat, string)."""
    hidden = inside(times, spans)
    cut = np.concatenate([[True], ~usable_intervals(times, spans)]) if times.size else np.zeros(0, bool)
    found: list[tuple[int, str]] = []
    for i, label in enumerate(labels):
        if hidden[i]:
            continue
        if cut[i] or not found or hidden[i - 1]:
            found.append((i, ""))
        found[-1] = (found[-1][0], found[-1][1] + label)
    return found


def ectopy(parts: list[tuple[int, str]], times: np.ndarray, cls: str, analysed_s: float, min_cycles: int) -> dict:
    """Isolated beats, couplets, triplets, runs, bigeminy and trigeminy of class `cls` (V or S)."""
    stretches = [(offset + m.start(), offset + m.end()) for offset, text in parts
                 for m in re.finditer(f"{cls}+", text)]
    lengths = [end - start for start, end in stretches]
    isolated = lengths.count(1)
    runs = []
    for start, end in stretches:
        if end - start >= 3:
            first, last = float(times[start]), float(times[end - 1])
            runs.append({"start_s": round(first, 3), "end_s": round(last, 3), "beats": end - start,
                         "rate_bpm": round(60.0 * (end - start - 1) / (last - first), 1) if last > first else None})
    hours = analysed_s / 3600.0
    return {
        "isolated": isolated,
        "isolated_per_hour": round(isolated / hours, 1) if hours > 0 else None,
        "couplets": lengths.count(2),
        "triplets": lengths.count(3),
        "runs": runs,
        "bigeminy": episodes(parts, times, f"N{cls}", cls, min_cycles),
        "trigeminy": episodes(parts, times, f"NN{cls}", cls, min_cycles),
    }


def episodes(parts: list[tuple[int, str]], times: np.ndarray, cycle: str, cls: str, min_cycles: int) -> list[dict]:
    """Stretches of >= min_cycles consecutive `cycle`s (N X or N N X) whose last ectopic beat is
    not followed by another of its class (that would make it a couplet, not part of the pattern)."""
    found = []
    for offset, text in parts:
        for match in re.finditer(f"(?:{cycle}){{{min_cycles},}}(?!{cls})", text):
            first, last = offset + match.start(), offset + match.end() - 1
            found.append({"start_s": round(float(times[first]), 3), "end_s": round(float(times[last]), 3),
                          "beats": last - first + 1})
    return found


def heart_rate(times: np.ndarray, usable: np.ndarray, duration_s: float, spans: list[dict],
               window_s: float) -> dict:
    """60 / mean RR per window (each RR interval counted in the window of the beat that ends it),
    the windows' min and max (among those with at least half a window readable) and the mean."""
    rr = np.diff(times)
    ends = times[1:]
    trend = []
    for start in np.arange(0.0, max(duration_s, 1e-9), window_s):
        end = min(start + window_s, duration_s)
        mine = usable & (ends >= start) & (ends < end)
        readable = (end - start) - sum(max(0.0, min(s["end_s"], end) - max(s["start_s"], start)) for s in spans)
        bpm = 60.0 / rr[mine].mean() if mine.any() else None
        trend.append({"start_s": round(float(start), 3), "end_s": round(float(end), 3),
                      "bpm": None if bpm is None else round(float(bpm), 1),
                      "beats": int(np.sum((times >= start) & (times < end))), "_readable": readable})
    rated = [w for w in trend if w["bpm"] is not None and w["_readable"] >= window_s / 2] or \
            [w for w in trend if w["bpm"] is not None]
    for window in trend:
        del window["_readable"]
    low = min(rated, key=lambda w: w["bpm"]) if rated else None
    high = max(rated, key=lambda w: w["bpm"]) if rated else None
    mean = 60.0 / rr[usable].mean() if usable.any() else None
    return {"min_bpm": low and low["bpm"], "min_at_s": low and low["start_s"],
            "mean_bpm": None if mean is None else round(float(mean), 1),
            "max_bpm": high and high["bpm"], "max_at_s": high and high["start_s"],
            "window_s": window_s, "trend": trend}


def pauses(times: np.ndarray, usable: np.ndarray, threshold_s: float) -> list[dict]:
    """RR intervals longer than the threshold, from the beat that starts them."""
    rr = np.diff(times)
    return [{"start_s": round(float(times[i]), 3), "duration_s": round(float(rr[i]), 3)}
            for i in np.flatnonzero(usable & (rr > threshold_s))]


def review_share(review: Sequence[bool] | None, total: int) -> dict:
    """Beats flagged for review and their share of all beats (none flagged when no flags are given)."""
    flagged = int(sum(bool(r) for r in review)) if review is not None else 0
    return {"beats": flagged, "share": round(flagged / total, 4) if total else None}
