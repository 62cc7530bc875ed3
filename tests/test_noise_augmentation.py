"""Real noise in the augmented training views: NSTDB's noise recordings added as the stress-test
records were made (alternating two-minute stretches at a chosen SNR)."""

import numpy as np
import pytest
import wfdb

from training.augment import Augmentation, augmented_context
from training.noise import NoiseBank, STRETCH_S
from training.train import PRESETS, augmentation_of, override

from conftest import FIXTURES, ROOT

NSTDB = ROOT.parent / "shared" / "data" / "nstdb"


@pytest.fixture(scope="module")
def bank():
    if not (NSTDB / "em.dat").is_file():
        pytest.skip(f"NSTDB noise recordings not found at {NSTDB}")
    return NoiseBank.load(NSTDB)


@pytest.fixture(scope="module")
def record():
    signal = wfdb.rdrecord(str(FIXTURES / "100"), channel_names=["MLII"])
    return signal.p_signal[:, 0], float(signal.fs), wfdb.rdann(str(FIXTURES / "100"), "atr").sample[1:]


@pytest.mark.parametrize("snr", [24.0, 12.0, 0.0])
def test_noise_is_added_at_the_snr_asked_for_in_every_other_two_minute_stretch(bank, record, snr):
    signal, fs, peaks = record
    long = np.tile(signal, 3)  # six minutes, so there are clean and noisy stretches
    long_peaks = np.concatenate([peaks + k * signal.size for k in range(3)])
    noisy = bank.add(long, fs, long_peaks, (snr, snr), np.random.default_rng(0))
    added = noisy - long
    stretch = int(STRETCH_S * fs)
    touched = [bool(np.any(added[i:i + stretch])) for i in range(0, long.size, stretch)]
    assert touched in ([True, False, True], [False, True, False])
    amplitude = np.median([np.ptp(long[p - 18:p + 19]) for p in long_peaks])
    for i in np.flatnonzero(touched):
        part = added[i * stretch:(i + 1) * stretch]
        assert 10 * np.log10(amplitude ** 2 / 8 / np.mean(part ** 2)) == pytest.approx(snr, abs=0.01)


def test_the_views_of_a_recipe_without_real_noise_are_those_of_the_default_augmentation(record):
    """Real noise is off unless a recipe asks: the shipped recipes' training views are unchanged."""
    signal, fs, peaks = record
    assert augmentation_of(PRESETS["context"]) is None
    plain = augmented_context(signal, fs, peaks, Augmentation(), np.random.default_rng(3))
    again = augmented_context(signal, fs, peaks, Augmentation(real_noise_snr_db=(6, 24), noise=None),
                              np.random.default_rng(3))
    assert np.array_equal(plain.windows, again.windows)


def test_a_recipe_with_real_noise_trains_on_noisier_views(bank, record):
    signal, fs, peaks = record
    recipe = override(PRESETS["context"], ["real_noise=0:0"])
    aug = augmentation_of(recipe, NSTDB)
    assert aug.real_noise_snr_db == (0.0, 0.0) and "noise" not in aug.as_dict()
    clean = augmented_context(signal, fs, peaks, Augmentation(), np.random.default_rng(5))
    noisy = augmented_context(signal, fs, peaks, aug, np.random.default_rng(5))
    assert clean.windows.shape == noisy.windows.shape
    assert not np.allclose(clean.windows, noisy.windows)


def test_a_missing_noise_folder_says_which_database_is_needed(tmp_path):
    with pytest.raises(FileNotFoundError, match="Noise Stress Test Database"):
        NoiseBank.load(tmp_path)
