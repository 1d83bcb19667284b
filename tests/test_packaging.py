"""The capability folders ship as subpackages of `triplesmith`, in a wheel and an editable install."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_imports_subpackages_from_the_top_level_folders():
    import triplesmith.chains
    import triplesmith.evaluators
    import triplesmith.graph
    import triplesmith.training

    assert Path(triplesmith.graph.__file__).parent == ROOT / "graph"
    assert Path(triplesmith.evaluators.__file__).parent == ROOT / "evaluators"
    assert Path(triplesmith.chains.__file__).parent == ROOT / "chains"
    assert Path(triplesmith.training.__file__).parent == ROOT / "training"


@pytest.mark.slow
def test_wheel_contains_the_subpackages_and_the_sample(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
    )
    wheel = next(tmp_path.glob("triplesmith-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for sub in ("graph", "chains", "training", "evaluators", "cli", "data"):
        assert f"triplesmith/{sub}/__init__.py" in names
    assert "triplesmith/data/sample.jsonl" in names
    assert not any(name.startswith(("graph/", "chains/")) for name in names)


@pytest.mark.slow
def test_installed_wheel_imports_outside_the_checkout(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
    )
    wheel = next((tmp_path / "dist").glob("triplesmith-*.whl"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(tmp_path / "site"),
            str(wheel),
        ],
        check=True,
    )
    code = (
        "import triplesmith.graph, triplesmith.chains.prompt, triplesmith.evaluators, "
        "triplesmith.training; from triplesmith.data.registry import load_dataset; "
        "print(triplesmith.graph.__file__, len(load_dataset('sample')))"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {code}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert str(tmp_path / "site" / "triplesmith" / "graph") in result.stdout
    assert result.stdout.split()[-1] == "72"
