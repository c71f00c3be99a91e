"""What rclone's VFS cache holds of a file: its data file, and whether every byte of it is there.

rclone keeps each cached file's bytes at ``<cache-dir>/vfs/<remote>/<path>`` (sparse) and, at the same path under
``vfsMeta/``, a JSON record whose ``Rs`` lists the byte ranges present. ``<remote>`` is the remote's name with a
suffix rclone derives from its settings (``hfcache{tTX0l}``), so it is found by listing, not computed. A file whose
ranges cover it whole can be copied from disk without a FUSE round trip per read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hf_cache.mount.rclone import REMOTE


@dataclass(frozen=True)
class CacheState:
    data: Path
    present: int  # bytes rclone says it holds
    complete: bool


def covered(ranges: list[dict[str, int]], size: int) -> int:
    """Bytes of ``[0, size)`` covered by rclone's ranges (``{"Pos": p, "Size": n}``), overlaps counted once."""
    spans = sorted((int(r.get("Pos", 0)), int(r.get("Pos", 0)) + int(r.get("Size", 0))) for r in ranges)
    total, end = 0, 0
    for start, stop in spans:
        start, stop = max(start, end, 0), min(stop, size)
        if stop > start:
            total += stop - start
            end = stop
    return total


def remote_dirs(cache_dir: Path) -> list[str]:
    """rclone's folders for our remote (``hfcache`` or ``hfcache{suffix}``), newest first."""
    try:
        found = [p for p in (cache_dir / "vfsMeta").iterdir() if p.name == REMOTE or p.name.startswith(REMOTE + "{")]
    except OSError:
        return []
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def cache_paths(cache_dir: Path, remote_dir: str, remote_path: str, rel: str) -> tuple[Path, Path]:
    """(data file, meta file) of the mount path ``rel`` (relative to the mount root)."""
    base = f"{remote_dir}/{remote_path.strip('/')}/{rel}"
    return cache_dir / "vfs" / base, cache_dir / "vfsMeta" / base


def data_file(cache_dir: Path, remote_path: str, rel: str) -> Path | None:
    """rclone's data file of the mount path ``rel``, if it exists yet (rclone writes it sparse, as bytes arrive)."""
    for remote_dir in remote_dirs(cache_dir):
        data, _ = cache_paths(cache_dir, remote_dir, remote_path, rel)
        if data.is_file():
            return data
    return None


def state(cache_dir: Path, remote_path: str, rel: str, size: int) -> CacheState | None:
    """None when rclone holds nothing of the file (or its record is unreadable)."""
    for remote_dir in remote_dirs(cache_dir):
        data, meta = cache_paths(cache_dir, remote_dir, remote_path, rel)
        try:
            info = json.loads(meta.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict) or int(info.get("Size", -1)) != size or info.get("Dirty"):
            continue
        present = covered(info.get("Rs") or [], size)
        if present == 0 and size > 0:
            continue
        return CacheState(data, present, present == size and data.is_file())
    return None


def _epoch(stamp: str) -> float | None:
    """rclone's RFC 3339 time with nanoseconds ("2026-11-27T09:25:12.63241421Z") as epoch seconds."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", stamp)
    if not m:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    base = datetime.fromisoformat(m.group(1) + zone).timestamp()
    return base + (float("0." + m.group(2)) if m.group(2) else 0.0)


def read_by_node(cache_dir: Path, remote_path: str, rel: str) -> tuple[bool, float | None]:
    """(rclone holds bytes of ``rel``, when rclone last saw it accessed).

    The data file appears (and grows) as soon as a reader starts; the vfsMeta record with the access time rclone
    keeps for its own LRU is written only when rclone releases the handle (``--vfs-handle-caching``, 5 s), so a new
    read of a file shows up there about 5 s after its close.
    """
    for remote_dir in remote_dirs(cache_dir):
        data, meta = cache_paths(cache_dir, remote_dir, remote_path, rel)
        try:
            info = json.loads(meta.read_bytes())
            ranges, atime = info.get("Rs") or [], _epoch(str(info.get("ATime", "")))
        except (OSError, ValueError, AttributeError):
            ranges, atime = [], None
        try:
            st = data.stat()
            has_data = st.st_blocks > 0 or st.st_size == 0
        except OSError:
            has_data = False
        if has_data or ranges:  # rclone may drop a data file and keep its record (seen with large files)
            return True, atime
    return False, None
