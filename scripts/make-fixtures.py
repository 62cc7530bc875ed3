"""Writes the short MIT-BIH excerpts in tests/fixtures/mitdb from the full database.

Each excerpt keeps the first two minutes of a record, both leads, digital samples and the
reference annotations unchanged (format 212, 360 Hz), so tests and the demo run without the
database. Usage: python scripts/make-fixtures.py [DATA_DIR]
"""

import sys
from pathlib import Path

import wfdb

RECORDS = ("100", "208", "232")  # N with a few S; many V and F; long runs of S
SECONDS = 120
source = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mitdb")
target = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mitdb"
target.mkdir(parents=True, exist_ok=True)
for name in RECORDS:
    stop = SECONDS * 360
    record = wfdb.rdrecord(str(source / name), sampto=stop, physical=False)
    record.wrsamp(write_dir=str(target))
    annotation = wfdb.rdann(str(source / name), "atr", sampto=stop)
    annotation.wrann(write_dir=str(target))
    print(name, record.sig_len, "samples,", len(annotation.sample), "annotations")
