"""The tree listing, ``trees/<sha>.json``: huggingface_hub's record of which files a commit has.

huggingface_hub >= 2 (``_tree_cache.py``) reads it in offline mode to tell a complete snapshot from a partial one:
with it, ``snapshot_download`` of an incomplete snapshot raises instead of returning a partial folder. Refresh writes
it into the bucket for every snapshot it publishes, the node tier copies it next to its own snapshot folders, and
``doctor`` reads it to name missing files. This module owns its version and fields (its name is
``layout.tree_path``), so the three cannot drift from each other or from huggingface_hub's reader.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = 1  # huggingface_hub ignores a listing of any other version (TREE_CACHE_FORMAT_VERSION)


@dataclass(frozen=True)
class TreeEntry:
    """One file as the Hub's ``/tree`` endpoint describes it; LFS files carry their sha256 and size."""

    size: int
    blob_id: str
    lfs_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        info: dict[str, Any] = {"size": self.size, "blob_id": self.blob_id}
        if self.lfs_sha256 is not None:
            info["lfs_sha256"] = self.lfs_sha256
            info["lfs_size"] = self.size
        return info


def encode(files: Iterable[tuple[str, TreeEntry]]) -> dict[str, Any]:
    """The listing as a JSON object, paths sorted (a later file of the same path wins, as a dict update does)."""
    entries = dict(files)
    return {"format_version": FORMAT_VERSION, "files": {p: entries[p].to_json() for p in sorted(entries)}}


def decode(raw: bytes | str) -> Mapping[str, Any] | None:
    """The ``files`` of a listing (path -> fields), or None when it is not a listing of our version.

    None rather than an error: a missing or foreign listing means "not published by hf-cache", which callers report
    in their own words.
    """
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        return None
    files = data.get("files")
    return files if isinstance(files, dict) else None
