"""Make a snapshot entry hot: verified bytes into ``blobs/<sha256>``, then swap its symlink to the blob.

The blob is written under a temp name, hashed in the same pass, checked against the manifest's sha256 and size,
fsynced, made read-only, and only then renamed into ``blobs/``; the symlinks of every snapshot entry with those
bytes are swapped after that. A reader therefore never sees a partial or unverified blob, and bytes that do not
match the manifest (a corrupt object in S3, a damaged cache block) are never promoted: IntegrityError, and the
entry stays cold.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from hf_cache.errors import IntegrityError
from hf_cache.node.tree import Entry, Tier, swap_link
from hf_cache.transfer import MiB, fd_reader, fetch

BLOCK = 8 * MiB


def _mismatch(e: Entry, got: str, size: int, where: str) -> IntegrityError:
    return IntegrityError(
        f"{e.repo}/{e.path}@{e.sha[:12]}: {where} has sha256 {got[:16]}... ({size} bytes), the manifest says "
        f"{e.sha256[:16]}... ({e.size} bytes); not promoted - run hf-cache verify"
    )


def _install(tier: Tier, e: Entry, tmp: Path, entries: list[Entry]) -> None:
    blob = tier.blob(e.repo, e.sha256)
    blob.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o444)
    os.replace(tmp, blob)
    for other in entries:
        if other.repo == e.repo and other.sha256 == e.sha256:
            swap_link(tier, tier.link(other), tier.hot_target(other))


def promote_from_file(tier: Tier, e: Entry, source: Path, entries: list[Entry]) -> int:
    """Copy and hash ``source`` (rclone's complete cache file) into the blob; returns bytes written."""
    tmp = tier.tmp_name()
    digest = hashlib.sha256()
    size = 0
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            buf = memoryview(bytearray(BLOCK))
            while n := src.readinto(buf):
                digest.update(buf[:n])
                dst.write(buf[:n])
                size += n
            dst.flush()
            os.fsync(dst.fileno())
        if size != e.size or digest.hexdigest() != e.sha256:
            raise _mismatch(e, digest.hexdigest(), size, "rclone's cache file")
        _install(tier, e, tmp, entries)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return size


def promote_by_fetch(tier: Tier, e: Entry, entries: list[Entry], streams: int = 4) -> int:
    """Read the file through the mount with cache/transfer.py's parallel segments (cached ranges come from disk,
    the rest from S3), into the blob, hashed from the written file; returns bytes written."""
    tmp = tier.tmp_name()
    src = os.open(tier.mount_file(e), os.O_RDONLY)
    try:
        dst = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(dst, e.size)

            def sink(off: int, buf: memoryview) -> None:
                while buf:
                    n = os.pwritev(dst, [buf], off)
                    buf, off = buf[n:], off + n

            try:
                fetch(
                    f"{e.repo}/{e.path}@{e.sha[:12]}",
                    e.size,
                    fd_reader(src),
                    verify_read_into=fd_reader(dst),
                    sink=sink,
                    sha256=e.sha256,
                    streams=streams,
                    segment=max(64 * MiB, -(-e.size // streams)),
                )
            except IntegrityError as exc:
                raise IntegrityError(f"{exc}; not promoted") from exc
            os.fsync(dst)
        finally:
            os.close(dst)
        _install(tier, e, tmp, entries)
    finally:
        os.close(src)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return e.size
