"""The snapshot manifest, ``hf-cache/manifests/<repo folder>/<sha>.json``: what publish vouched for, per file.

Publish writes it after every file is in S3 and checked, and before the ref; the next run reads it back to leave
intact files in place and to copy files a new commit shares with an old one; the node tier reads it to verify what
it promotes; ``ls``/``verify`` list and check it. A manifest that is not complete or lacks a field publish reads is
treated as absent (and replaced), never trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

from hf_cache import layout
from hf_cache.refresh.source import LFS_THRESHOLD, RepoFile, lfs_blob_id
from hf_cache.treelisting import TreeEntry


@dataclass(frozen=True)
class PublishedFile:
    """One file of a published snapshot: its line in the manifest and in the tree listing."""

    path: str
    size: int
    sha256: str
    blob_id: str
    lfs: bool
    s3_checksum: str | None

    @staticmethod
    def of(file: RepoFile, size: int, sha256: str, blob_id: str, s3_checksum: str | None) -> PublishedFile:
        """The line for ``file`` once its bytes (``size``, ``sha256``) are in S3.

        LFS-ness comes from the source (``RepoFile.lfs``: the Hub says which files are LFS); where the source does
        not say, files count as LFS from LFS_THRESHOLD up, as a git-lfs repo would store them. An LFS file's blob
        id is that of its LFS pointer: the source's when it gave one, else computed.
        """
        lfs = file.lfs if file.lfs is not None else size >= LFS_THRESHOLD
        if lfs:
            blob_id = file.blob_id or lfs_blob_id(sha256, size)
        return PublishedFile(file.path, size, sha256, blob_id, lfs, s3_checksum)

    @staticmethod
    def from_manifest(f: dict[str, Any]) -> PublishedFile:
        """A line of a manifest that ``valid_manifest`` accepted (manifests do not record LFS-ness: by size)."""
        return PublishedFile(
            f["path"], f["size"], f["sha256"], f["blob_id"], f["size"] >= LFS_THRESHOLD, f.get("s3_checksum")
        )

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256, "blob_id": self.blob_id}
        if self.s3_checksum is not None:
            out["s3_checksum"] = self.s3_checksum
        return out

    def tree_entry(self) -> TreeEntry:
        return TreeEntry(self.size, self.blob_id, self.sha256 if self.lfs else None)


def valid_manifest(m: Any) -> TypeGuard[dict[str, Any]]:
    """A manifest publish can rely on: complete, with every field it reads (a garbage one is treated as absent)."""
    try:
        return (
            isinstance(m, dict)
            and m.get("complete") is True
            and isinstance(m["repo"], str)
            and isinstance(m["sha"], str)
            and layout.SHA_RE.match(m["sha"]) is not None
            and all(
                isinstance(f["path"], str)
                and isinstance(f["size"], int)
                and isinstance(f["sha256"], str)
                and isinstance(f["blob_id"], str)
                for f in m["files"]
            )
        )
    except (KeyError, TypeError):
        return False


def published_files(m: Any) -> dict[str, PublishedFile] | None:
    """path -> file of a manifest as read from S3; None when it is not a valid manifest."""
    if not valid_manifest(m):
        return None
    return {f["path"]: PublishedFile.from_manifest(f) for f in m["files"]}
