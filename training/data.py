"""MIT-BIH records -> labelled beats, and the evaluation splits.

Beats come from `service.signal.beats` (187-sample beats) or `service.signal.context` (context beats), the code
the service runs on posted strips, so training and serving see identically prepared inputs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb
from sklearn.model_selection import train_test_split

from service.signal.beats import AAMI_GROUPS, CLASSES, extract_beats
from service.signal.context import context_beats, network_input, two_lead_input
from service.signal.rhythm import af_criteria
from training.augment import Augmentation, augmented_context, augmented_leads

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
SPLITS = ("intra", "inter", "all")
LEADS = (1, 2)  # context beats of MLII alone, or of MLII and the record's other lead (two_lead_input)
INPUTS = ("beat", "context")  # 187-sample beats (service.signal.beats) or context beats (service.signal.context)
INTRA_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class BeatSet:
    """Network inputs (n, d) float32, AAMI class indices, and where each beat came from.

    `views`, where present, holds (v, n, d) more inputs of the same beats from augmented
    recordings (training.augment); training draws one of the v + 1 versions of a beat each epoch.
    """

    beats: np.ndarray
    labels: np.ndarray
    records: np.ndarray
    samples: np.ndarray  # R-peak sample index in the 360 Hz record
    views: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.size)

    def subset(self, index: np.ndarray) -> "BeatSet":
        views = None if self.views is None else self.views[:, index]
        return BeatSet(self.beats[index], self.labels[index], self.records[index], self.samples[index], views)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(CLASSES))
        return {name: int(n) for name, n in zip(CLASSES, counts)}

    def without_views(self) -> "BeatSet":
        return BeatSet(self.beats, self.labels, self.records, self.samples)

    @classmethod
    def concatenate(cls, sets: list["BeatSet"]) -> "BeatSet":
        views = None if sets[0].views is None else np.concatenate([s.views for s in sets], axis=1)
        return cls(*(np.concatenate([getattr(s, f) for s in sets]) for f in ("beats", "labels", "records", "samples")),
                   views=views)


@dataclass(frozen=True)
class Recording:
    """One lead of a record (mV) with its annotated beats."""

    name: str
    signal: np.ndarray
    fs: float
    samples: np.ndarray  # annotated R-peaks, sample indices
    labels: np.ndarray  # AAMI class indices
    second: np.ndarray | None = None  # the other lead (mV), read with leads=2
    second_name: str | None = None  # its name in the header (V1 on most records; V2, V4 or V5)


def read_record(folder: str | Path, record: str, leads: int = 1) -> Recording:
    """The MLII lead (the first channel where MLII is absent) and every AAMI beat of a record;
    with leads=2 also the other lead (chosen by name: record 114 stores its leads swapped)."""
    if leads not in LEADS:
        raise ValueError(f"leads must be one of {LEADS}, not {leads!r}")
    path = str(Path(folder) / record)
    signal = wfdb.rdrecord(path)
    lead = signal.sig_name.index(LEAD) if LEAD in signal.sig_name else 0
    samples, labels = annotated_beats(path)
    second = second_name = None
    if leads == 2:
        others = [i for i in range(signal.p_signal.shape[1]) if i != lead]
        if others:
            second, second_name = signal.p_signal[:, others[0]], signal.sig_name[others[0]]
    return Recording(record, signal.p_signal[:, lead], float(signal.fs), samples, labels, second, second_name)


def annotated_beats(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The R-peak samples and AAMI class indices of a record's beat annotations (`path` without
    extension)."""
    annotation = wfdb.rdann(path, "atr")
    symbols = np.asarray(annotation.symbol)
    is_beat = np.isin(symbols, list(AAMI_GROUPS))
    samples = np.asarray(annotation.sample)[is_beat].astype(np.int64)
    labels = np.array([CLASSES.index(AAMI_GROUPS[s]) for s in symbols[is_beat]], dtype=np.int64)
    return samples, labels


def record_af_criteria(folder: str | Path, record: str) -> tuple[np.ndarray, np.ndarray]:
    """A record's annotated beats (R-peak samples) and each one's AF criteria flag
    (service.signal.rhythm) from the record's beat times, as the strip endpoints compute it from a
    strip's R-peaks."""
    path = str(Path(folder) / record)
    samples, _ = annotated_beats(path)
    return samples, af_criteria(samples / wfdb.rdheader(path).fs)


def af_criteria_of(data: BeatSet, folder: str | Path) -> np.ndarray:
    """The AF criteria flag of each beat of `data` (any subset of records' beats), each judged on
    its whole record's beat times."""
    flags = np.zeros(len(data), dtype=bool)
    for record in np.unique(data.records):
        index = np.flatnonzero(data.records == record)
        samples, record_flags = record_af_criteria(folder, record)
        position = np.searchsorted(samples, data.samples[index])
        if np.any(position >= samples.size) or np.any(samples[np.minimum(position, samples.size - 1)]
                                                       != data.samples[index]):
            raise ValueError(f"record {record}'s beats are not its annotated beats in {folder}")
        flags[index] = record_flags[position]
    return flags


def record_beats(folder: str | Path, record: str) -> BeatSet:
    """All AAMI beats of one record as 187-sample beats."""
    rec = read_record(folder, record)
    beats = extract_beats(rec.signal, rec.fs, rec.samples)
    return BeatSet(beats, rec.labels, np.full(rec.labels.size, record), rec.samples)


def record_context(folder: str | Path, record: str, variants: int = 0, augmentation: Augmentation | None = None,
                   seed: int = 0, leads: int = 1) -> BeatSet:
    """All AAMI beats of one record as context beats of the whole record, plus `variants` views
    from augmented recordings cut into strips (seeded by `seed` and the record). With leads=2 the
    inputs are two_lead_input (both leads of a view varied together, training.augment)."""
    rec = read_record(folder, record, leads)
    if leads == 1:
        beats = network_input(context_beats(rec.signal, rec.fs, rec.samples))
    else:
        second = None if rec.second is None else context_beats(rec.second, rec.fs, rec.samples)
        beats = two_lead_input(context_beats(rec.signal, rec.fs, rec.samples), second)
    views = None
    if variants:
        rng = np.random.default_rng([seed, int(record)])
        aug = augmentation or Augmentation()
        if leads == 1:
            views = np.stack([network_input(augmented_context(rec.signal, rec.fs, rec.samples, aug, rng))
                              for _ in range(variants)])
        else:
            signals = [rec.signal] if rec.second is None else [rec.signal, rec.second]
            views = np.stack([two_lead_input(*augmented_leads(signals, rec.fs, rec.samples, aug, rng))
                              for _ in range(variants)])
    return BeatSet(beats, rec.labels, np.full(rec.labels.size, record), rec.samples, views)


def load_records(folder: str | Path, records: tuple[str, ...] = RECORDS, progress: bool = False,
                 input: str = "beat", variants: int = 0, augmentation: Augmentation | None = None,
                 seed: int = 0, leads: int = 1) -> BeatSet:
    """Beats of several records, concatenated in the order given; `input` picks the format and
    `leads` how many leads context beats read (187-sample beats: MLII only)."""
    if input not in INPUTS:
        raise ValueError(f"unknown input {input!r}; choose from {INPUTS}")
    if progress:
        from tqdm import tqdm

        records = tqdm(records, desc="records", unit="rec", disable=None)
    if input == "beat":
        if leads != 1:
            raise ValueError("187-sample beats read one lead; leads=2 needs context beats")
        return BeatSet.concatenate([record_beats(folder, r) for r in records])
    return BeatSet.concatenate([record_context(folder, r, variants, augmentation, seed, leads) for r in records])


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
    """(training records, test records) of a split. "all" trains on the 44 non-paced records and
    holds none out: its figures on patients it never saw are those of its DS1-trained twin."""
    if split == "intra":
        return RECORDS, RECORDS
    if split == "inter":
        return DS1, DS2
    if split == "all":
        return tuple(sorted(DS1 + DS2)), ()
    raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")


def load_split(folder: str | Path, split: str, seed: int, progress: bool = False, input: str = "beat",
               variants: int = 0, augmentation: Augmentation | None = None,
               leads: int = 1) -> tuple[BeatSet, BeatSet | None]:
    """(train, test) beats of a split; `seed` fixes the intra-patient shuffle and the augmentation.
    Only the training beats get augmented views; the "all" split has no test beats (None)."""
    train_records, test_records = split_records(split)
    options = {"input": input, "augmentation": augmentation, "seed": seed, "leads": leads}
    if split == "intra":
        beats = load_records(folder, RECORDS, progress, variants=variants, **options)
        train, test = intra_patient_split(beats.labels, seed)
        return beats.subset(train), beats.subset(test).without_views()
    train = load_records(folder, train_records, progress, variants=variants, **options)
    test = load_records(folder, test_records, progress, **options) if test_records else None
    return train, test
