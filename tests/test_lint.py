"""The code stays ruff-clean (lint and format), checked by the one test command like everything else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_check_and_format() -> None:
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout


def test_mypy_clean_over_the_package_as_hf_cache() -> None:
    """mypy (pyproject's [tool.mypy]) over every module of cache/, checked under its import name: any error fails.

    The count guards the check itself: were the hf_cache link or the package list wrong, mypy would check nothing
    (or only cache/__init__.py) and still say "Success".
    """
    run = subprocess.run(
        [sys.executable, "scripts/typecheck.py"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr
    modules = len(list((ROOT / "cache").rglob("*.py")))
    assert f"Success: no issues found in {modules} source files" in run.stdout, run.stdout + run.stderr


def test_s3_stubs_are_for_mypy_only() -> None:
    """boto3-stubs is a test extra: a node image without it must import every module (S3Client is imported under
    TYPE_CHECKING only)."""
    code = """
import importlib, pkgutil, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mypy_boto3_s3", "types_boto3_s3", "botocore_stubs", "mypy"):
            raise ImportError(f"{name} is imported at runtime")

sys.meta_path.insert(0, Refuse())
import hf_cache

for m in pkgutil.walk_packages(hf_cache.__path__, "hf_cache."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_wheel_ships_py_typed(tmp_path: Path) -> None:
    """py.typed (PEP 561) in the wheel tells type checkers of code that imports hf_cache to use our annotations."""
    import shutil
    import zipfile

    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "cache", tmp_path / "cache", ignore=shutil.ignore_patterns("__pycache__"))
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert "hf_cache/py.typed" in zipfile.ZipFile(wheel).namelist()
