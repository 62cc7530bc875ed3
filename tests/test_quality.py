"""The signal-quality gate: noise, a flat lead and a clipped amplifier are reported as unreadable
spans and never labelled as heartbeats; clean ECG keeps its beats."""

import os
from pathlib import Path

import numpy as np
import pytest
import wfdb
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.signal.beats import AAMI_GROUPS
from service.signal.quality import readable, unbroken_intervals, Span
from service.signal.strips import strip_beats

from conftest import FULL_DATABASE, MODELS

FS = 360.0
NSTDB = Path(os.environ.get("NSTDB_DIR", FULL_DATABASE.parent / "nstdb"))
NOISE_GAIN = 200.0  # adu/mV: the noise recordings' headers leave the WFDB default
HEARTBEATS = {"N", "S", "V", "F"}
# Where the noise strips start (s): spread over the half-hour recordings.
NOISE_STARTS = (0, 300, 900, 1500)
MAX_LOST = 0.005


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(models_dir=MODELS))) as c:
        yield c


def white_noise(seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.3, int(seconds * FS))


@pytest.fixture(scope="module")
def noise_recordings():
    if not (NSTDB / "em.dat").is_file():
        pytest.skip(f"MIT-BIH Noise Stress Test Database not found at {NSTDB} (set NSTDB_DIR)")
    return {name: wfdb.rdrecord(str(NSTDB / name), physical=False).d_signal / NOISE_GAIN for name in ("em", "ma", "bw")}


def reference(folder: Path, record: str):
    """MLII in mV, its rate and its reference beats' samples."""
    signal = wfdb.rdrecord(str(folder / record))
    annotation = wfdb.rdann(str(folder / record), "atr")
    beats = np.array([t for t, s in zip(annotation.sample, annotation.symbol) if s in AAMI_GROUPS])
    return signal.p_signal[:, signal.sig_name.index("MLII")], float(signal.fs), beats


def covered(spans, seconds: float) -> float:
    return sum(s.end_s - s.start_s for s in spans) / seconds


def test_white_noise_yields_no_beat_and_one_unreadable_span():
    found = strip_beats(white_noise(), FS, "context")
    assert found.peaks.size == 0 and len(found.beats) == 0
    assert [(s.start_s, s.end_s, s.reason) for s in found.unreadable] == [(0.0, 10.0, "noise")]
    assert "unreadable" in found.reason


@pytest.mark.parametrize("name", ["em", "ma", "bw"])
@pytest.mark.parametrize("seconds", [10, 60])
def test_noise_recordings_alone_yield_no_beat(noise_recordings, name, seconds):
    n = int(seconds * FS)
    for channel in range(2):
        for start in NOISE_STARTS:
            strip = noise_recordings[name][int(start * FS):int(start * FS) + n, channel]
            found = strip_beats(strip, FS, "context")
            assert found.peaks.size == 0, f"{name} channel {channel} at {start} s: {found.peaks.size} beats labelled"
            assert covered(found.unreadable, seconds) == pytest.approx(1.0)


@pytest.mark.parametrize("record", ["100", "208", "232"])
def test_clean_fixture_records_keep_their_beats(fixture_dir, record):
    signal, fs, beats = reference(fixture_dir, record)
    found = strip_beats(signal, fs, "context")
    lost = np.mean(~readable(beats, fs, list(found.unreadable)))
    assert lost < MAX_LOST
    assert len(found.beats) == found.peaks.size > 0.95 * beats.size


def test_clean_records_of_the_full_database_keep_their_beats(mitdb_dir):
    """Records not used to fit the gate (DS2) and DS1 records rich in ectopy and atrial fibrillation."""
    total = lost = 0
    for record in ("103", "117", "213", "201"):
        signal, fs, beats = reference(mitdb_dir, record)
        found = strip_beats(signal[: int(10 * 60 * fs)], fs, "context")
        beats = beats[beats < 10 * 60 * fs]
        total += beats.size
        lost += int(np.sum(~readable(beats, fs, list(found.unreadable))))
    assert lost / total < MAX_LOST


def test_a_lead_off_stretch_and_a_clipped_stretch_are_unreadable_and_the_rest_is_kept(fixture_dir):
    signal, fs, beats = reference(fixture_dir, "100")
    clean = strip_beats(signal, fs, "context")
    broken = signal.copy()
    broken[int(20 * fs):int(30 * fs)] = broken[int(20 * fs)]  # lead off: the amplifier holds its last value
    top = np.percentile(signal, 10)  # the amplifier saturates: everything above this is clipped
    broken[int(60 * fs):int(70 * fs)] = np.minimum(broken[int(60 * fs):int(70 * fs)], top)
    found = strip_beats(broken, fs, "context")
    reasons = {(round(s.start_s), round(s.end_s)): s.reason for s in found.unreadable}
    assert reasons.get((20, 30)) == "flat" and reasons.get((60, 70)) == "saturated"
    seconds = found.peaks / fs
    assert not np.any((seconds >= 20) & (seconds < 30)) and not np.any((seconds >= 60) & (seconds < 70))
    outside = (clean.peaks / fs < 20) | ((clean.peaks / fs >= 30) & (clean.peaks / fs < 60)) | (clean.peaks / fs >= 70)
    assert np.isin(clean.peaks[outside], found.peaks).mean() > 0.99


def test_rr_intervals_across_a_span_are_not_heart_beat_intervals():
    peaks = np.array([0, 360, 720, 3600, 3960])
    assert unbroken_intervals(peaks, 360.0, [Span(3.0, 8.0, "noise")]).tolist() == [True, True, False, True]


def post_strip(client, signal, **extra):
    return client.post("/predict/strip", json={"signal": signal.round(4).tolist(), "sampling_rate": FS, **extra})


def test_a_white_noise_strip_is_answered_with_no_heartbeat_and_an_unreadable_report(client):
    response = post_strip(client, white_noise())
    assert response.status_code == 200, response.text
    body = response.json()
    assert not HEARTBEATS & {b["label"] for b in body["beats"]}
    assert body["report"]["unreadable"] == [{"start_s": 0.0, "end_s": 10.0, "reason": "noise"}]
    assert "unreadable" in body["reason"]
    assert body["summary"]["n_beats"] == 0


def test_an_electrode_motion_strip_is_answered_with_no_heartbeat(client, noise_recordings):
    for seconds in (10, 60):
        response = post_strip(client, noise_recordings["em"][int(300 * FS):int((300 + seconds) * FS), 0])
        assert response.status_code == 200, response.text
        body = response.json()
        assert not HEARTBEATS & {b["label"] for b in body["beats"]}
        assert sum(s["end_s"] - s["start_s"] for s in body["report"]["unreadable"]) == pytest.approx(seconds)


def test_noise_inside_a_clean_strip_is_reported_and_its_beats_left_out(client, fixture_dir):
    signal, fs, beats = reference(fixture_dir, "100")
    strip = signal[: int(60 * fs)].copy()
    strip[int(20 * fs):int(40 * fs)] = white_noise(20.0, seed=1)
    body = post_strip(client, strip, sampling_rate=fs).json()
    spans = body["report"]["unreadable"]
    assert [s["reason"] for s in spans] == ["noise"]
    assert spans[0]["start_s"] <= 20.0 + 5 and spans[0]["end_s"] >= 40.0 - 5
    times = np.array([b["time_s"] for b in body["beats"]])
    assert not np.any((times > spans[0]["start_s"]) & (times < spans[0]["end_s"]))
    assert np.sum(times < 15) >= 15 and np.sum(times > 45) >= 10  # the clean minutes keep their beats
    assert body["reason"] is None
    assert 60 <= body["summary"]["mean_heart_rate_bpm"] <= 90  # no interval across the noise
