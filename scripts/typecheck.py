"""Run mypy over the package as `hf_cache`, the name it is imported by.

The code lives in cache/ and setuptools maps it to `hf_cache` (an editable install does that with an import hook,
which mypy cannot follow). Checking the folder as `cache` would leave every `from hf_cache...` import unresolved, so
this links build/mypy/hf_cache -> cache/ (build/ is git-ignored) and mypy finds the package there through `mypy_path`
in pyproject.toml. Paths in the output are written back as cache/... so an editor can jump to them.

    python3 scripts/typecheck.py            # what the test suite runs (tests/test_lint.py)
    python3 scripts/typecheck.py -- ARGS    # extra mypy arguments
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK_DIR = ROOT / "build" / "mypy"
LINK = LINK_DIR / "hf_cache"
SHOWN_PREFIX = "build/mypy/hf_cache/"


def ensure_link() -> None:
    """Point build/mypy/hf_cache at cache/, replacing a stale link; races with a parallel run are harmless."""
    LINK_DIR.mkdir(parents=True, exist_ok=True)
    target = Path("..") / ".." / "cache"
    if LINK.is_symlink() and os.readlink(LINK) == str(target):
        return
    tmp = LINK_DIR / f".hf_cache.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, LINK)


def main(argv: list[str]) -> int:
    ensure_link()
    extra = argv[1:] if argv[:1] == ["--"] else argv
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    sys.stdout.write(run.stdout.replace(SHOWN_PREFIX, "cache/"))
    sys.stderr.write(run.stderr.replace(SHOWN_PREFIX, "cache/"))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
