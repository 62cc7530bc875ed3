"""Context beats (service.signal.context): the input of the models that generalise across patients."""

import numpy as np
import pytest
import wfdb

from service.signal.context import (
    CONTEXT_INPUT, RR_FEATURES, RR_FIELDS, WINDOW_BEFORE, WINDOW_LENGTH, context_beats, network_input, rr_features,
    rr_intervals,
)
from training.data import read_record, record_context


def test_rr_table_of_known_peaks_is_the_hand_computed_one():
    # Beats at 0, 1, 2, 2.5, 3.5, 4.5, 5.5 s: a premature beat at 2.5 s, then regular again.
    table = rr_intervals(np.array([0.0, 1.0, 2.0, 2.5, 3.5, 4.5, 5.5]))
    column = {name: table[:, i] for i, name in enumerate(RR_FIELDS)}
    nan = np.nan
    np.testing.assert_allclose(column["pre_rr"], [nan, 1, 1, 0.5, 1, 1, 1])
    np.testing.assert_allclose(column["post_rr"], [1, 1, 0.5, 1, 1, 1, nan])
    np.testing.assert_allclose(column["prev_rr"], [nan, nan, 1, 1, 0.5, 1, 1])
    # Means of the intervals ending at or before each beat; the first beat borrows its post-RR.
    np.testing.assert_allclose(column["local_rr"], [1, 1, 1, 2.5 / 3, 3.5 / 4, 4.5 / 5, 5.5 / 6])
    np.testing.assert_allclose(column["long_rr"], column["local_rr"])
    jump = np.log(2)  # |log(0.5 / 1)| and |log(1 / 0.5)|
    np.testing.assert_allclose(column["irregularity"], [0, 0, 0, jump / 2, 2 * jump / 3, 2 * jump / 4, 2 * jump / 5])


def test_rr_features_of_the_premature_beat_and_the_strip_edges():
    features = rr_features(rr_intervals(np.array([0.0, 1.0, 2.0, 2.5, 3.5, 4.5, 5.5])))
    f = {name: features[:, i] for i, name in enumerate(RR_FEATURES)}
    assert f["log_pre_local"][3] == pytest.approx(np.log(0.5 / (2.5 / 3)), abs=1e-6)
    assert f["log_pre_prev"][3] == pytest.approx(np.log(0.5), abs=1e-6)
    assert f["log_post_local"][2] == pytest.approx(np.log(0.5), abs=1e-6)
    assert f["has_pre"][0] == 0 and f["has_pre"][1] == 1 and f["has_post"][-1] == 0 and f["has_post"][-2] == 1
    assert f["log_pre_local"][0] == 0 and f["log_post_local"][-1] == 0  # unknown: taken as the local mean


def test_long_mean_covers_the_last_five_minutes_only():
    times = np.concatenate([np.arange(0, 600, 0.5), 600 + np.arange(1, 400)])  # 120 bpm for 10 min, then 60
    table = rr_intervals(times)
    last = table[-1]
    assert last[RR_FIELDS.index("long_rr")] == pytest.approx(1.0)  # only 60 bpm beats in its last 300 s
    assert last[RR_FIELDS.index("local_rr")] == pytest.approx(1.0)


def test_single_beat_and_empty_strips():
    assert rr_intervals(np.array([3.0]))[0, RR_FIELDS.index("local_rr")] == 1.0
    empty = context_beats(np.zeros(2000), 250, np.array([], dtype=int))
    assert network_input(empty).shape == (0, CONTEXT_INPUT)


@pytest.fixture(scope="module")
def record_208(fixture_dir):
    return read_record(fixture_dir, "208")


def test_windows_are_centred_on_the_r_peak_and_scaled_by_the_running_qrs(record_208):
    beats = context_beats(record_208.signal, record_208.fs, record_208.samples)
    assert beats.windows.shape == beats.templates.shape == (len(record_208.samples), WINDOW_LENGTH)
    normal = beats.windows[record_208.labels == 0]
    peak = np.abs(normal).argmax(axis=1)
    assert np.median(np.abs(peak - WINDOW_BEFORE)) <= 1  # the QRS extremum sits at the R-peak
    assert 0.3 < np.median(np.ptp(normal, axis=1)) < 3  # amplitude in units of the running QRS


def test_gain_and_offset_do_not_change_the_input(record_208):
    plain = network_input(context_beats(record_208.signal, record_208.fs, record_208.samples))
    scaled = network_input(context_beats(3.0 * record_208.signal + 0.7, record_208.fs, record_208.samples))
    np.testing.assert_allclose(plain, scaled, atol=1e-4)


def test_a_beats_input_does_not_depend_on_the_minutes_after_it(record_208):
    """Causal: cutting the strip 10 s after a beat leaves its input as it was (bar the band-pass
    filter's edge), so a strip's answer for a beat does not wait for, or change with, later data."""
    fs, peaks = record_208.fs, record_208.samples
    whole = network_input(context_beats(record_208.signal, fs, peaks))
    stop = int(60 * fs)
    kept = peaks[peaks < stop]
    cut = network_input(context_beats(record_208.signal[:stop], fs, kept))
    early = kept < stop - 10 * fs
    np.testing.assert_allclose(cut[early], whole[:len(kept)][early], atol=1e-3)


def test_training_reads_the_same_inputs_as_the_service(fixture_dir):
    record = wfdb.rdrecord(str(fixture_dir / "100"))
    annotation = wfdb.rdann(str(fixture_dir / "100"), "atr")
    data = record_context(fixture_dir, "100")
    served = network_input(context_beats(record.p_signal[:, 0], record.fs, data.samples))
    assert np.array_equal(data.beats, served)
    assert len(data) == sum(s in "NA" for s in annotation.symbol)
