"""An analysis as a WFDB annotation file, so it opens in PhysioNet's tools (WAVE, LightWAVE,
wfdb.rdann, rdann of the WFDB Software Package) and is scored beat by beat against reference
annotations with wfdb.processing.compare_annotations (or bxb).

One beat annotation per R-peak, in MIT beat codes: the AAMI class N as 'N' (normal), S as 'S'
(supraventricular premature or ectopic), V as 'V' (premature ventricular contraction), F as 'F'
(fusion of ventricular and normal) and Q as 'Q' (unclassifiable). The model that labelled them is
recorded in a comment annotation ('"') at sample 1, whose aux_note reads
"ecg-odenet model=<name> version=<version>" (at sample 1, not 0: wfdb.rdann takes every note at
sample 0 for a file definition, like the time resolution, and drops it). A beat the model flagged
for review carries the aux_note "review" (service.models.decision). The file is written by
wfdb.wrann itself.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import wfdb

MIT_CODES = {"N": "N", "S": "S", "V": "V", "F": "F", "Q": "Q"}
EXTENSION = "ecg"  # not "atr", so a downloaded file never overwrites a record's reference annotations
COMMENT = '"'
NOTE_SAMPLE = 1
MEDIA_TYPE = "application/octet-stream"


def model_note(model: str, version: str) -> str:
    return f"ecg-odenet model={model} version={version}"


def record_name_of(name: str | None, default: str = "strip") -> str:
    """A WFDB record name (letters, digits, '_', '-', '.') for the file, from whatever names the input."""
    cleaned = re.sub(r"[^\w.-]", "_", Path(name or "").name).strip("._")
    return cleaned or default


REVIEW_NOTE = "review"


def write_annotations(folder: str | Path, record: str, samples: Sequence[int], labels: Sequence[str], fs: float,
                      model: str, version: str, extension: str = EXTENSION,
                      review: Sequence[bool] | None = None) -> Path:
    """Write `record`.`extension` in `folder`: one MIT beat code per R-peak `samples` (ascending),
    the note "review" on beats flagged for review, and a comment annotation naming the model.
    Returns the file's path."""
    unknown = set(labels) - set(MIT_CODES)
    if unknown:
        raise ValueError(f"no MIT beat code for labels {sorted(unknown)}")
    if len(samples) != len(labels):
        raise ValueError(f"{len(samples)} R-peaks but {len(labels)} labels")
    peaks = np.asarray(samples, dtype=np.int64)
    if peaks.size and (peaks[0] < 0 or np.any(np.diff(peaks) < 0)):
        raise ValueError("R-peak samples must be non-negative and ascending")
    sample = np.concatenate([[NOTE_SAMPLE], peaks])
    order = np.argsort(sample, kind="stable")  # the note first among annotations at its sample
    symbols = np.array([COMMENT] + [MIT_CODES[label] for label in labels], dtype=object)[order]
    if review is not None and len(review) != len(labels):
        raise ValueError(f"{len(review)} review flags but {len(labels)} labels")
    beat_notes = [REVIEW_NOTE if flag else "" for flag in review] if review is not None else [""] * len(labels)
    notes = np.array([model_note(model, version)] + beat_notes, dtype=object)[order]
    wfdb.wrann(record, extension, sample[order], symbol=list(symbols), aux_note=list(notes), fs=fs,
               write_dir=str(folder))
    return Path(folder) / f"{record}.{extension}"


def annotation_bytes(record: str, samples: Sequence[int], labels: Sequence[str], fs: float, model: str,
                     version: str, extension: str = EXTENSION, review: Sequence[bool] | None = None) -> bytes:
    """The annotation file's content, for a download (written by wfdb.wrann in a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="ecg-annotations-") as folder:
        return write_annotations(folder, record, samples, labels, fs, model, version, extension,
                                 review).read_bytes()
