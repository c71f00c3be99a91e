"""Pre-load snapshots into the node's cache by reading every file once through the mount.

The node cache is filled by reads, so warming is reading: in parallel, in large blocks, discarding the data. After
it, a job's ``from_pretrained`` is served from node-local disk.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cache.layout import SHA_RE, repo_folder_name
from cache.progress import Progress

BLOCK = 16 * 1024 * 1024


@dataclass(frozen=True)
class Resolved:
    spec: str
    snapshot: Path | None
    problem: str | None = None


def resolve_snapshot(hub_dir: Path, repo_id: str, revision: str | None, repo_type: str = "model") -> Resolved:
    """Find ``<hub>/<repo folder>/snapshots/<sha>`` for a revision the way huggingface_hub does offline."""
    rev = revision or "main"
    spec = f"{repo_id}@{rev}"
    repo_dir = hub_dir / repo_folder_name(repo_id, repo_type)  # type: ignore[arg-type]
    if not repo_dir.is_dir():
        return Resolved(spec, None, f"{repo_id} is not published (no {repo_dir.name} under {hub_dir})")
    if SHA_RE.match(rev):
        sha = rev
    else:
        ref = repo_dir / "refs" / rev
        if not ref.is_file():
            return Resolved(
                spec,
                None,
                f"{repo_id} has no ref {rev!r} (published refs: "
                f"{', '.join(sorted(p.name for p in (repo_dir / 'refs').glob('*'))) or 'none'})",
            )
        sha = ref.read_text()
    snap = repo_dir / "snapshots" / sha
    if not snap.is_dir():
        return Resolved(spec, None, f"{spec} points at {sha[:12]}, whose snapshot folder is missing")
    return Resolved(spec, snap)


def snapshot_files(snapshot: Path) -> list[Path]:
    return sorted(p for p in snapshot.rglob("*") if p.is_file())


def read_file(path: Path) -> int:
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while chunk := os.read(fd, BLOCK):
            total += len(chunk)
    finally:
        os.close(fd)
    return total


def warm(snapshots: list[Path], workers: int = 8, progress: Progress | None = None) -> tuple[int, int]:
    """Read every file of ``snapshots``; returns (files, bytes)."""
    files = [f for s in snapshots for f in snapshot_files(s)]
    progress = progress or Progress("warm", tty=False)
    progress.add_total(sum(f.stat().st_size for f in files), len(files))

    def one(path: Path) -> int:
        n = read_file(path)
        progress.advance(n, 1)
        return n

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="warm") as pool:
        total = sum(pool.map(one, files))
    return len(files), total
