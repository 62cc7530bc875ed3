"""The beat format (Kachuee et al. 2018) built from raw records: the input contract of every model."""

from collections import Counter

import numpy as np
import pytest
import wfdb

from service.signal.beats import AAMI_GROUPS, BEAT_LENGTH, CLASSES, extract_beats, resample, segment_beats
from training.data import RECORDS, load_records, record_beats


def aami_counts(folder, record) -> dict[str, int]:
    """Counts straight from the annotation file, independent of the extraction code."""
    symbols = wfdb.rdann(str(folder / record), "atr").symbol
    counts = Counter(AAMI_GROUPS[s] for s in symbols if s in AAMI_GROUPS)
    return {c: counts.get(c, 0) for c in CLASSES}


@pytest.mark.parametrize("record", ["100", "208", "232"])
def test_fixture_record_beats_match_annotations(fixture_dir, record):
    beats = record_beats(fixture_dir, record)
    assert beats.beats.shape == (len(beats), BEAT_LENGTH)
    assert beats.beats.dtype == np.float32
    assert beats.beats.min() >= 0.0 and beats.beats.max() <= 1.0
    assert beats.class_counts() == aami_counts(fixture_dir, record)


def test_each_beat_starts_at_its_r_peak(fixture_beats):
    normal = fixture_beats.beats[fixture_beats.labels == CLASSES.index("N")]
    onset = normal[:, :5].max(axis=1)
    high = np.quantile(normal[:, :60], 0.9, axis=1)
    assert np.mean(onset >= high) > 0.95


def test_resampling_is_polyphase_to_125_hz():
    fs, seconds = 360, 10
    t = np.arange(fs * seconds) / fs
    out = resample(np.sin(2 * np.pi * 7.0 * t), fs)
    assert out.size == 125 * seconds  # 25/72 of the input, not a decimation by 3 (120 Hz)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.fft.rfftfreq(out.size, 1 / 125)[spectrum.argmax()] == pytest.approx(7.0, abs=0.1)


def test_beat_spans_1_2_median_rr_then_zero_padding():
    signal = np.zeros(1250)
    peaks = np.arange(50, 1100, 100)
    signal[peaks] = 1.0
    signal[peaks + 119] = 0.5  # last sample of each beat's 1.2 x 100 span
    beats = segment_beats(signal + 0.1, peaks)
    assert beats.shape == (peaks.size, BEAT_LENGTH)
    assert np.all(beats[:, 0] == 1.0)
    assert np.all(beats[:, 119] > 0) and np.all(beats[:, 120:] == 0)


def test_beat_is_cut_at_187_samples_for_slow_rhythms():
    peaks = np.array([10, 200, 390, 580])  # RR 190 samples: 1.2 RR > 187
    beats = segment_beats(np.random.default_rng(0).random(1000), peaks)
    assert beats.shape == (4, BEAT_LENGTH)
    assert np.all(beats[:3, -1] > 0)


def test_peaks_outside_the_signal_are_rejected():
    with pytest.raises(ValueError, match="R-peaks"):
        segment_beats(np.zeros(100), np.array([10, 5]))


def test_training_beats_come_from_the_shared_extraction(fixture_dir):
    record = wfdb.rdrecord(str(fixture_dir / "208"))
    annotation = wfdb.rdann(str(fixture_dir / "208"), "atr")
    samples = np.array([s for s, sym in zip(annotation.sample, annotation.symbol) if sym in AAMI_GROUPS])
    served = extract_beats(record.p_signal[:, 0], record.fs, samples)
    assert np.array_equal(served, record_beats(fixture_dir, "208").beats)


def test_a_strip_sampled_at_another_rate_gives_the_same_beats(fixture_dir):
    from scipy.signal import resample_poly

    record = wfdb.rdrecord(str(fixture_dir / "208"))
    annotation = wfdb.rdann(str(fixture_dir / "208"), "atr")
    samples = np.array([s for s, sym in zip(annotation.sample, annotation.symbol) if sym in AAMI_GROUPS])
    native = extract_beats(record.p_signal[:, 0], 360, samples)
    at_500 = extract_beats(resample_poly(record.p_signal[:, 0], 25, 18), 500, np.rint(samples * 500 / 360))
    assert np.median(np.abs(native - at_500)) < 0.01
    assert np.abs(native - at_500).mean(axis=1).max() < 0.05


def test_whole_database_counts_match_every_annotation_file(mitdb_dir):
    beats = load_records(mitdb_dir, RECORDS)
    assert len(beats) == 109_494
    assert beats.class_counts() == {"N": 90_631, "S": 2_781, "V": 7_236, "F": 803, "Q": 8_043}
    for record in RECORDS:
        mine = beats.subset(beats.records == record).class_counts()
        assert mine == aami_counts(mitdb_dir, record), record
