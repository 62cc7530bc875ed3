"""Real noise for augmentation: the MIT-BIH Noise Stress Test Database's noise recordings.

`bw` (baseline wander), `em` (electrode motion) and `ma` (muscle artefact) were recorded from
active volunteers with the electrodes placed where no ECG shows (Moody, Muldrow and Mark 1984), at
360 Hz, two channels each, about 30 minutes. A varied recording (training.augment) gets them the way
the stress-test records were made (nstdbgen): in alternating two-minute stretches, clean and noisy,
the noise scaled to a signal-to-noise ratio drawn per stretch, where the signal power is that of a
sine wave with the recording's median QRS peak-to-peak amplitude (A^2 / 8) and the noise power is
the mean square of the noise segment. The stress-test records themselves (118e*, 119e*) are never
used for training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import wfdb

from service.signal.beats import resample

KINDS = ("bw", "em", "ma")
STRETCH_S = 120.0  # nstdbgen's alternating clean and noisy stretches
QRS_HALF_S = 0.05  # peak-to-peak amplitude measured over the 50 ms either side of each R-peak


class NoiseBank:
    """The three noise recordings (both channels, mV), drawn from at random."""

    def __init__(self, recordings: dict[str, np.ndarray], fs: float):
        self.recordings, self.fs = recordings, fs

    @classmethod
    def load(cls, folder: str | Path) -> "NoiseBank":
        recordings, rates = {}, set()
        for kind in KINDS:
            path = Path(folder) / kind
            if not path.with_suffix(".dat").is_file():
                raise FileNotFoundError(f"noise recording {path}.dat not found (the MIT-BIH Noise Stress Test "
                                        "Database: wfdb.dl_database('nstdb', DIR))")
            record = wfdb.rdrecord(str(path))
            recordings[kind] = np.nan_to_num(record.p_signal.T.astype(np.float64))
            rates.add(float(record.fs))
        if len(rates) != 1:
            raise ValueError(f"noise recordings at different rates: {sorted(rates)}")
        return cls(recordings, rates.pop())

    def segment(self, n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
        """n samples at `rate` of one noise kind and channel, from a random offset (wrapping round)."""
        noise = self.recordings[KINDS[rng.integers(len(KINDS))]]
        channel = noise[rng.integers(noise.shape[0])]
        need = int(np.ceil(n * self.fs / rate)) + 16
        start = int(rng.integers(channel.size))
        piece = np.take(channel, np.arange(start, start + need), mode="wrap")
        out = resample(piece - piece.mean(), self.fs, rate)
        return out[:n] if out.size >= n else np.resize(out, n)

    def add(self, signal: np.ndarray, rate: float, peaks: np.ndarray, snr_db: tuple[float, float],
            rng: np.random.Generator) -> np.ndarray:
        """`signal` with every other two-minute stretch (random phase) carrying real noise at an SNR
        drawn uniformly from `snr_db` for each stretch."""
        if peaks.size == 0:
            return signal
        half = max(1, int(round(QRS_HALF_S * rate)))
        amplitude = np.median([np.ptp(signal[max(p - half, 0):p + half + 1]) for p in peaks])
        signal_power = amplitude ** 2 / 8
        stretch = int(STRETCH_S * rate)
        out = signal.copy()
        first = int(rng.integers(2)) * stretch  # noisy stretches start at 0 or at 2 minutes
        for start in range(first, signal.size, 2 * stretch):
            stop = min(start + stretch, signal.size)
            noise = self.segment(stop - start, rate, rng)
            noise_power = float(np.mean(noise ** 2))
            if noise_power <= 0:
                continue
            snr = rng.uniform(*snr_db)
            out[start:stop] += noise * np.sqrt(signal_power / (noise_power * 10 ** (snr / 10)))
        return out
