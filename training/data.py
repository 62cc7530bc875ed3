"""MIT-BIH records -> labelled beats, and the two evaluation splits.

Beats come from `service.beats`, the code the service runs on posted strips, so training and
serving see identically prepared inputs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb
from sklearn.model_selection import train_test_split

from service.beats import AAMI_GROUPS, CLASSES, extract_beats

RECORDS = (
    "100", "101", "102", "103", "104", "105", "106", "107", "108", "109", "111", "112",
    "113", "114", "115", "116", "117", "118", "119", "121", "122", "123", "124", "200",
    "201", "202", "203", "205", "207", "208", "209", "210", "212", "213", "214", "215",
    "217", "219", "220", "221", "222", "223", "228", "230", "231", "232", "233", "234",
)
# de Chazal P, O'Dwyer M, Reilly RB. Automatic classification of heartbeats using ECG morphology
# and heartbeat interval features. IEEE Trans Biomed Eng 51(7):1196-1206, 2004. Paced records
# 102, 104, 107 and 217 are in neither set (AAMI EC57 recommends excluding them).
DS1 = (
    "101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124",
    "201", "203", "205", "207", "208", "209", "215", "220", "223", "230",
)
DS2 = (
    "100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212",
    "213", "214", "219", "221", "222", "228", "231", "232", "233", "234",
)
PACED = ("102", "104", "107", "217")
LEAD = "MLII"
SPLITS = ("intra", "inter")
INTRA_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class BeatSet:
    """Beats (n, 187) float32, AAMI class indices, and where each beat came from."""

    beats: np.ndarray
    labels: np.ndarray
    records: np.ndarray
    samples: np.ndarray  # R-peak sample index in the 360 Hz record

    def __len__(self) -> int:
        return int(self.labels.size)

    def subset(self, index: np.ndarray) -> "BeatSet":
        return BeatSet(self.beats[index], self.labels[index], self.records[index], self.samples[index])

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(CLASSES))
        return {name: int(n) for name, n in zip(CLASSES, counts)}


def record_beats(folder: str | Path, record: str) -> BeatSet:
    """All AAMI beats of one record, cut from its MLII lead (the first channel where MLII is absent)."""
    path = str(Path(folder) / record)
    signal = wfdb.rdrecord(path)
    annotation = wfdb.rdann(path, "atr")
    lead = signal.sig_name.index(LEAD) if LEAD in signal.sig_name else 0
    symbols = np.asarray(annotation.symbol)
    is_beat = np.isin(symbols, list(AAMI_GROUPS))
    samples = np.asarray(annotation.sample)[is_beat]
    labels = np.array([CLASSES.index(AAMI_GROUPS[s]) for s in symbols[is_beat]], dtype=np.int64)
    beats = extract_beats(signal.p_signal[:, lead], signal.fs, samples)
    return BeatSet(beats, labels, np.full(labels.size, record), samples.astype(np.int64))


def load_records(folder: str | Path, records: tuple[str, ...] = RECORDS, progress: bool = False) -> BeatSet:
    """Beats of several records, concatenated in the order given."""
    if progress:
        from tqdm import tqdm

        records = tqdm(records, desc="records", unit="rec", disable=None)
    sets = [record_beats(folder, r) for r in records]
    return BeatSet(*(np.concatenate([getattr(s, f) for s in sets]) for f in ("beats", "labels", "records", "samples")))


def data_files(folder: str | Path, records: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every file a split was built from, so a card names its exact data."""
    digests = {}
    for record in records:
        for suffix in ("hea", "dat", "atr"):
            path = Path(folder) / f"{record}.{suffix}"
            digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def intra_patient_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random 80/20 split of beat indices, as in the public heartbeat CSVs (beats of one
    patient fall on both sides: optimistic, but comparable with the published figures)."""
    index = np.arange(labels.size)
    train, test = train_test_split(index, test_size=INTRA_TEST_FRACTION, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def split_records(split: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training records, test records) of a split."""
    if split == "intra":
        return RECORDS, RECORDS
    if split == "inter":
        return DS1, DS2
    raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")


def load_split(folder: str | Path, split: str, seed: int, progress: bool = False) -> tuple[BeatSet, BeatSet]:
    """(train, test) beats of a split; `seed` fixes the intra-patient shuffle."""
    train_records, test_records = split_records(split)
    if split == "intra":
        beats = load_records(folder, RECORDS, progress)
        train, test = intra_patient_split(beats.labels, seed)
        return beats.subset(train), beats.subset(test)
    return load_records(folder, train_records, progress), load_records(folder, test_records, progress)
