"""Shared test fixtures: where the shared datasets are, the repository root; the CPU engine's
precision pinned."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"

# The tests' answers of the real model are fp32's on every CPU: the default (auto) would run bf16
# where the CPU has bf16 instructions, so the same test could see other answers on another
# machine. tests/test_cpu_precision.py sets the switch itself where bf16 is the point.
os.environ["TRIPLESMITH_CPU_PRECISION"] = "fp32"


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
