"""Keep the mount's directory listings fresh from the supervisor, so that S3 being down never blocks a cached read.

rclone re-lists a folder from S3 when its listing is older than ``--dir-cache-time``; during an outage that re-list
fails after rclone's retries, and so does the open, even of a file whose bytes are all in the node cache. So rclone
runs with listings that never expire by themselves, and the supervisor asks it (rc ``vfs/refresh``) to re-list the
folders that can change when status.json (one GET, 304 while unchanged) says a refresh published something new: the
root, ``hf-cache/``, ``hub/``, and each repo's own folder, ``refs/``, ``snapshots/`` and ``trees/``. Snapshot folders
are immutable and never re-listed. A failed re-list keeps the last known listing: refs keep their last known value
and cached bytes stay readable for as long as S3 is away.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterable
from typing import Any

from hf_cache import layout
from hf_cache.layout import HUB_DIR, META_DIR


def top_level() -> list[list[str]]:
    """Re-listed first, in this order: the root (a first publish adds hub/ and hf-cache/), then those two."""
    return [[""], [META_DIR, HUB_DIR]]


def repo_folders(repo_dirs: Iterable[str]) -> list[str]:
    """Per repo, the folders a refresh can change: the repo's own, its refs, snapshots and trees."""
    dirs: list[str] = []
    for name in sorted(repo_dirs):
        if "--" not in name:  # hub/ holds repo folders (type--org--name) only; anything else is not ours
            continue
        base = layout.join(HUB_DIR, name)
        dirs += [base, *(layout.join(base, d) for d in (layout.REFS_DIR, layout.SNAPSHOTS_DIR, layout.TREES_DIR))]
    return dirs


def vfs_refresh(rc_port: int, dirs: list[str], timeout: float) -> dict[str, str]:
    """rclone rc ``vfs/refresh`` (non-recursive) of ``dirs``: each maps to "OK" or rclone's error for it."""
    params: dict[str, Any] = {"recursive": "false"}
    for i, d in enumerate(dirs):
        params["dir" if i == 0 else f"dir{i + 1}"] = d
    req = urllib.request.Request(
        f"http://127.0.0.1:{rc_port}/vfs/refresh",
        data=json.dumps(params).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = json.loads(resp.read())
    return {str(k): str(v) for k, v in (body.get("result") or {}).items()}


def failed(result: dict[str, str]) -> dict[str, str]:
    """Folders whose re-list failed. One that does not exist (a repo without trees/) has nothing to re-list."""
    return {d: v for d, v in result.items() if v != "OK" and "file does not exist" not in v}
