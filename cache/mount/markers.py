"""Files beside the mountpoint that say what a live supervisor does for this mount, for ``hf-cache warm``.

warm is given only the mountpoint (maybe through a pod's bind mount of the node folder) and must fetch differently
when the mount prefetches on first read() (mount/prefetch.py) or reads ahead through its S3 endpoint
(mount/s3endpoint.py). The supervisor touches each marker every ``EVERY`` seconds while the feature runs; one not
touched for ``6 x EVERY`` is a dead supervisor's and is ignored.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

EVERY = 10.0  # seconds between touches
PREFETCH = "prefetch"
READ_AHEAD = "read-ahead"


def marker_path(mountpoint: Path, kind: str = PREFETCH) -> Path:
    """Beside the mountpoint, like its lock file: ``.<name>.hf-cache-<kind>.json``."""
    return mountpoint.parent / f".{mountpoint.name}.hf-cache-{kind}.json"


def marker_live(mountpoint: Path, now: float | None = None, kind: str = PREFETCH) -> dict[str, Any] | None:
    """The settings a live supervisor wrote for ``kind`` on this mount (touched recently), else None."""
    path = marker_path(mountpoint, kind)
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and age < 6 * EVERY else None


def write_marker(mountpoint: Path, kind: str, data: dict[str, Any]) -> None:
    """Atomically (a reader never sees half a file); a node folder that refuses writes only costs warm the hint."""
    with contextlib.suppress(OSError):
        path = marker_path(mountpoint, kind)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


def remove_marker(mountpoint: Path, kind: str) -> None:
    with contextlib.suppress(OSError):
        marker_path(mountpoint, kind).unlink()


class Keeper:
    """One feature's marker, kept while the feature runs: ``touch`` rewrites it at most every ``EVERY`` seconds
    (``force``: now, e.g. after rclone remounted), ``remove`` when the feature stops."""

    def __init__(self, mountpoint: Path, kind: str, data: dict[str, Any]):
        self.mountpoint, self.kind, self.data = mountpoint, kind, data
        self._at: float | None = None  # monotonic time of the last touch

    def touch(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self._at is not None and now - self._at < EVERY:
            return
        self._at = now
        write_marker(self.mountpoint, self.kind, self.data)

    def remove(self) -> None:
        remove_marker(self.mountpoint, self.kind)
