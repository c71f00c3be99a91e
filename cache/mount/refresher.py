"""Keep the mount's directory listings fresh from the supervisor, so that S3 being down never blocks a cached read.

rclone re-lists a folder from S3 when its listing is older than ``--dir-cache-time``; during an outage that re-list
fails after rclone's retries, and so does the open, even of a file whose bytes are all in the node cache. So rclone
runs with listings that never expire by themselves, and the supervisor asks it (rc ``vfs/refresh``) to re-list the
folders that can change when status.json (one GET, 304 while unchanged) says a refresh published something new: the
root, ``hf-cache/``, ``hub/``, and each repo's own folder, ``refs/``, ``snapshots/`` and ``trees/``. Snapshot folders
are immutable and never re-listed; each new one is listed once, recursively, by the supervisor right after it appears
(prelist.py), so that a job's first open of a file in it does not depend on S3 answering at that moment.

Re-lists are asked for only right after S3 answered the GET of status.json, because a failed non-recursive
``vfs/refresh`` marks the folder's listing stale in rclone (vfs/dir.go readDir): its next lookup goes to S3, and
during an outage fails with EIO. Between re-lists, refs keep their last known value and cached bytes stay readable
for as long as S3 is away.
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


def is_repo_folder(name: str) -> bool:
    """hub/ holds repo folders (type--org--name) only; anything else is not ours."""
    return "--" in name


def repo_folders(repo_dirs: Iterable[str]) -> list[str]:
    """Per repo, the folders a refresh can change: the repo's own, its refs, snapshots and trees."""
    dirs: list[str] = []
    for name in sorted(repo_dirs):
        if not is_repo_folder(name):
            continue
        base = layout.join(HUB_DIR, name)
        dirs += [base, *(layout.join(base, d) for d in (layout.REFS_DIR, layout.SNAPSHOTS_DIR, layout.TREES_DIR))]
    return dirs


def vfs_refresh(rc_port: int, dirs: list[str], timeout: float, recursive: bool = False) -> dict[str, str]:
    """rclone rc ``vfs/refresh`` of ``dirs``: each maps to "OK" or rclone's error for it.

    Non-recursive (a re-list) marks the folder's listing stale before asking S3, so a failure leaves it to be listed
    again by the next lookup; recursive (prelist.py) lists first and keeps the old listing when that fails."""
    params: dict[str, Any] = {"recursive": "true" if recursive else "false"}
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
