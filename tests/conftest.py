"""Shared test fixtures: where the shared datasets are, the repository root."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def carb_dir() -> Path:
    path = SHARED_DATASETS / "carb"
    if not (path / "gold" / "test.tsv").is_file():
        pytest.skip(f"CaRB is not beside the checkout at {path}")
    return path


@pytest.fixture(scope="session")
def benchie_dir() -> Path:
    path = SHARED_DATASETS / "benchie"
    if not (path / "gold_en.txt").is_file():
        pytest.skip(f"BenchIE is not beside the checkout at {path}")
    return path
