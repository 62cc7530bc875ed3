"""Splits: inter-patient is record-disjoint, intra-patient is beat-disjoint and stratified."""

import numpy as np

from training.data import DS1, DS2, PACED, RECORDS, intra_patient_split, load_split, split_records


def test_de_chazal_sets_are_disjoint_and_exclude_paced_records():
    assert len(DS1) == len(DS2) == 22
    assert not set(DS1) & set(DS2)
    assert not (set(DS1) | set(DS2)) & set(PACED)
    assert set(DS1) | set(DS2) | set(PACED) == set(RECORDS)
    assert split_records("inter") == (DS1, DS2)


def test_intra_patient_split_is_disjoint_stratified_and_seeded(fixture_beats):
    train, test = intra_patient_split(fixture_beats.labels, seed=0)
    assert not set(train) & set(test)
    assert len(train) + len(test) == len(fixture_beats)
    assert abs(len(test) / len(fixture_beats) - 0.2) < 0.01
    for label in np.unique(fixture_beats.labels):
        share = np.mean(fixture_beats.labels[test] == label)
        assert abs(share - np.mean(fixture_beats.labels == label)) < 0.02
    again, _ = intra_patient_split(fixture_beats.labels, seed=0)
    other, _ = intra_patient_split(fixture_beats.labels, seed=1)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_full_splits_share_no_beat_and_no_patient(mitdb_dir):
    train, test = load_split(mitdb_dir, "intra", seed=0)
    train_keys = set(zip(train.records, train.samples))
    assert not train_keys & set(zip(test.records, test.samples))
    assert len(train) + len(test) == 109_494
    ds1, ds2 = load_split(mitdb_dir, "inter", seed=0)
    assert set(ds1.records) == set(DS1) and set(ds2.records) == set(DS2)
