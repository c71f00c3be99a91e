"""``verify --repair``: the entry that re-publishes one published snapshot exactly, through the normal publish path.

Publishing a full-sha pin of a snapshot whose manifest exists leaves every object S3 still vouches for in place and
fetches, verifies and uploads the rest (publish.py), so the repair is the publish path itself, not a second one:
it re-sends exactly the broken files. The pin writes no ref, and the include list is the manifest's own paths, so
the snapshot comes back as it was published, no more files and no moved ref.
"""

from __future__ import annotations

from typing import Any

from hf_cache.modelsfile import ModelEntry


def _literal(path: str) -> str:
    """An fnmatch pattern that matches exactly ``path`` (``[``, ``*`` and ``?`` are legal in file names)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in path)


def repair_entry(manifest: dict[str, Any]) -> tuple[ModelEntry | None, str]:
    """The entry that re-publishes this manifest's snapshot from the Hub, or None and why it cannot be repaired."""
    source = str(manifest.get("source") or "")
    if source.startswith("/"):
        return None, (
            f"published from the local folder {source}; run `hf-cache refresh` where that folder is (it re-sends"
            " what S3 cannot vouch for)"
        )
    include = tuple(_literal(f["path"]) for f in manifest["files"])
    return ModelEntry(manifest["repo"], manifest["sha"], manifest["type"], include=include), ""
