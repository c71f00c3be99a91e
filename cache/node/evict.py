"""One size cap for the node: hot blobs plus rclone's VFS cache, least recently used blobs evicted first.

rclone bounds its own cache (it gets a share of the node cap, see agent.py); the tier keeps
``hot blobs + rclone's cache + the blob being promoted <= cap`` by evicting blobs before it writes one and on every
tick. Eviction swaps every symlink of a blob back into the mount BEFORE the blob is deleted, so a reader opening
a snapshot entry finds the blob or the mount, never a dangling link (one that has the blob open keeps reading it).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from hf_cache import layout
from hf_cache.node.tree import Entry, Tier, swap_link


@dataclass(frozen=True)
class Blob:
    repo: str
    sha256: str
    bytes: int  # on disk
    last_used: float  # atime (relatime: the first read after promotion, then at most daily) or promotion time


def plan(blobs: list[Blob], other_bytes: int, cap: int, incoming: int = 0) -> tuple[list[Blob], bool]:
    """Blobs to evict, least recently used first, so that ``blobs + other + incoming <= cap``; and whether that
    is reachable at all (False: ``incoming`` does not fit even with every blob gone - do not promote it)."""
    used = sum(b.bytes for b in blobs) + other_bytes + incoming
    out: list[Blob] = []
    for b in sorted(blobs, key=lambda b: (b.last_used, b.repo, b.sha256)):
        if used <= cap:
            break
        out.append(b)
        used -= b.bytes
    return out, used <= cap


def blobs_on_disk(tier: Tier) -> list[Blob]:
    out: list[Blob] = []
    if not tier.hub.is_dir():
        return out
    for repo_dir in tier.hub.iterdir():
        bdir = repo_dir / layout.BLOBS_DIR
        if not bdir.is_dir():
            continue
        for p in bdir.iterdir():
            with contextlib.suppress(OSError):
                st = p.stat()
                out.append(Blob(repo_dir.name, p.name, st.st_blocks * 512, max(st.st_atime, st.st_mtime)))
    return out


def usage(path: Path) -> int:
    """Bytes on disk under ``path`` (sparse files count what they hold)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def evict(tier: Tier, blob: Blob, entries: list[Entry]) -> None:
    """Links back to the mount first, then the blob goes."""
    for e in entries:
        if e.repo == blob.repo and e.sha256 == blob.sha256 and tier.is_hot(e):
            swap_link(tier, tier.link(e), tier.cold_target(e))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tier.blob(blob.repo, blob.sha256))
