"""Shared test data: the bundled MIT-BIH excerpts always, the full database where it is present."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "mitdb"
FULL_DATABASE = Path(os.environ.get("MITDB_DIR", ROOT.parent / "shared" / "data" / "mitdb"))
MODELS = ROOT / "models"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def mitdb_dir() -> Path:
    """The complete database; tests that need it are skipped where it is absent."""
    if not (FULL_DATABASE / "100.dat").is_file():
        pytest.skip(f"full MIT-BIH database not found at {FULL_DATABASE} (set MITDB_DIR)")
    return FULL_DATABASE


@pytest.fixture(scope="session")
def fixture_beats(fixture_dir):
    from training.data import load_records

    return load_records(fixture_dir, ("100", "208", "232"))
