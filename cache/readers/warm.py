"""Pre-load snapshots into the node's cache by reading every file once through the mount, verified.

The node cache is filled by reads, so warming is reading. Over a link like S3's one reader gets one connection's
worth (about 90 MB/s), so each file is read as several large contiguous segments at once (cache/transfer.py):
rclone starts one download stream per read position, and the streams fill the same cache file. While they run,
the file is hashed in order from what is already cached and checked against the sha256 in the snapshot's
manifest, so a corrupt object is reported, not silently served to every job.

When the mount prefetches on open (cache/mount/prefetch.py; its supervisor keeps a marker beside the mountpoint,
``marker_live``), warm only opens each file and hashes it in order: the open makes the supervisor fetch the file in
parallel segments, the same way, and a second segmented fetch from warm would only compete with it for the node's
streams. Without a live marker (prefetch off, or a mount whose parent folder is not writable) warm fetches the
segments itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_cache.errors import HfCacheError, IntegrityError
from hf_cache.layout import (
    META_DIR,
    REFS_DIR,
    SHA_RE,
    RepoType,
    manifest_path,
    ref_path,
    repo_folder_name,
    snapshot_path,
)
from hf_cache.mount.prefetch import marker_live
from hf_cache.mount.rclone import READ_CHUNK
from hf_cache.progress import Progress
from hf_cache.reponame import format_repo
from hf_cache.transfer import MiB, aligned_segment, check_sha256, fetch, plan_segments

# A segment's stream only touches 4 KiB every TOUCH bytes: rclone's downloader fetches everything up to each read
# (it is reused while the next read is within --buffer-size, 4 MiB, of it), and the hash pass copies every byte
# out once; reading each segment in full as well cost a second copy through FUSE on the node's CPU.
TOUCH = 1 * MiB

# Smaller segments mean more streams for small files but more abandoned read-ahead (~6-9 MB per segment end):
# 48 MiB split a 100 MB shard in two (2 streams), at ~10% extra S3 bytes; a 2 GB file gets 112 MiB segments.
MIN_SEGMENT = 48 * MiB


@dataclass(frozen=True)
class Resolved:
    spec: str
    snapshot: Path | None
    problem: str | None = None
    manifest: Path | None = None


def resolve_snapshot(hub_dir: Path, repo_id: str, revision: str | None, repo_type: RepoType = "model") -> Resolved:
    """Find ``<hub>/<repo folder>/snapshots/<sha>`` for a revision the way huggingface_hub does offline."""
    rev = revision or "main"
    spec = format_repo(repo_id, repo_type, rev)  # the grammar every command prints and takes
    repo_dir = hub_dir / repo_folder_name(repo_id, repo_type)
    if not repo_dir.is_dir():
        shown = format_repo(repo_id, repo_type)
        return Resolved(spec, None, f"{shown} is not published (no {repo_dir.name} under {hub_dir})")
    if SHA_RE.match(rev):
        sha = rev
    else:
        ref = repo_dir / ref_path(rev)
        if not ref.is_file():
            return Resolved(
                spec,
                None,
                f"{format_repo(repo_id, repo_type)} has no ref {rev!r} (published refs: "
                f"{', '.join(sorted(p.name for p in (repo_dir / REFS_DIR).glob('*'))) or 'none'})",
            )
        sha = ref.read_text()
    snap = repo_dir / snapshot_path(sha)
    if not snap.is_dir():
        return Resolved(spec, None, f"{spec} points at {sha[:12]}, whose snapshot folder is missing")
    manifest = hub_dir.parent / META_DIR / manifest_path(repo_dir.name, sha)
    return Resolved(spec, snap, manifest=manifest)


def snapshot_files(snapshot: Path) -> list[Path]:
    return sorted(p for p in snapshot.rglob("*") if p.is_file())


@dataclass(frozen=True)
class WarmFile:
    path: Path
    name: str  # repo path, for messages
    size: int
    sha256: str | None


def expected_files(snapshot: Path, manifest: Path | None) -> tuple[list[WarmFile], list[str]]:
    """The snapshot's files with the sha256 each must have, and the problems found (no manifest, size mismatch)."""
    checksums: dict[str, tuple[int, str]] = {}
    problems: list[str] = []
    try:
        data = json.loads(manifest.read_text()) if manifest else None
        checksums = {f["path"]: (int(f["size"]), str(f["sha256"])) for f in data["files"]} if data else {}
    except (OSError, ValueError, KeyError, TypeError):
        problems.append(
            f"{snapshot.parent.parent.name}@{snapshot.name[:12]}: no readable manifest ({manifest}); its files were "
            "warmed but not verified - publish it again with hf-cache refresh"
        )
    files = []
    for path in snapshot_files(snapshot):
        rel = path.relative_to(snapshot).as_posix()
        size = path.stat().st_size
        want = checksums.get(rel)
        if checksums and want is None:
            problems.append(f"{rel}: not in the snapshot's manifest; it was warmed but not verified")
        elif want is not None and want[0] != size:
            problems.append(f"{rel}: {size} bytes on the mount, {want[0]} in the manifest - run hf-cache verify")
            continue
        files.append(WarmFile(path, rel, size, want[1] if want else None))
    return files, problems


class _Streams:
    """A budget of concurrent read streams shared by all files being warmed."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self.cond = threading.Condition()

    def acquire(self, n: int) -> int:
        n = min(n, self.total)
        with self.cond:
            while self.free < n:
                self.cond.wait()
            self.free -= n
        return n

    def release(self, n: int) -> None:
        with self.cond:
            self.free += n
            self.cond.notify_all()


def warm_file(f: WarmFile, streams: int, segment: int, progress: Progress) -> None:
    """Read ``f`` as ``streams`` segments at once through the mount and check its sha256 (IntegrityError if not)."""
    fd = os.open(f.path, os.O_RDONLY)
    vfd = os.open(f.path, os.O_RDONLY)
    try:
        fetch(
            f.name,
            f.size,
            lambda off, buf: os.preadv(fd, [buf], off),
            verify_read_into=lambda off, buf: os.preadv(vfd, [buf], off),
            sha256=f.sha256,
            streams=streams,
            segment=segment,
            touch=TOUCH,
            progress=lambda n: progress.advance(n),
        )
    finally:
        os.close(fd)
        os.close(vfd)
    progress.advance(0, 1)


def hash_in_order(f: WarmFile, progress: Progress, block: int = 4 * MiB) -> None:
    """Read ``f`` once from start to end and check its sha256: the mount's prefetch (started by this open) fills
    rclone's cache ahead of the read at many connections; where the read gets ahead, rclone's own downloader serves
    it, and the prefetch's stream stops when it meets those bytes, so nothing crosses the link twice."""
    digest = hashlib.sha256()
    buf = memoryview(bytearray(block))
    done = 0
    with open(f.path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(buf[:n])  # hashlib drops the GIL for large buffers
            done += n
            progress.advance(n)
    if done != f.size:
        raise IntegrityError(f"{f.name}: ended at byte {done}, expected {f.size} bytes; run hf-cache verify")
    check_sha256(f.name, digest.hexdigest(), f.sha256)
    progress.advance(0, 1)


def prefetching_mount(snapshot: Path) -> dict[str, Any] | None:
    """The prefetcher's settings when the mount holding ``snapshot`` (``<mount>/hub/<repo>/snapshots/<sha>``)
    prefetches on open, else None."""
    return marker_live(snapshot.parents[2].parent) if len(snapshot.parents) > 3 else None


def warm(
    snapshots: list[Path] | list[tuple[Path, Path | None]], workers: int = 16, progress: Progress | None = None
) -> tuple[int, int]:
    """Read and verify every file of ``snapshots`` (paths, or (path, manifest) pairs) with ``workers`` streams in
    flight in all; returns (files, bytes). Raises HfCacheError listing every file that failed verification."""
    files: list[WarmFile] = []
    problems: list[str] = []
    for item in snapshots:
        snap, manifest = item if isinstance(item, tuple) else (item, None)
        found, issues = expected_files(snap, manifest)
        files += found
        problems += issues if isinstance(item, tuple) else []
    progress = progress or Progress("warm", tty=False)
    total = sum(f.size for f in files)
    progress.add_total(total, len(files))
    segment = aligned_segment(total, workers, READ_CHUNK, MIN_SEGMENT)
    budget = _Streams(max(1, workers))
    prefetch = prefetching_mount(files[0].path.parent) if files else None

    def one(f: WarmFile) -> str | None:
        if prefetch is not None:
            try:
                hash_in_order(f, progress)
                return None
            except (IntegrityError, OSError) as exc:
                return str(exc)
        n = budget.acquire(max(1, len(plan_segments(f.size, segment))))
        try:
            warm_file(f, n, segment, progress)
            return None
        except (IntegrityError, OSError) as exc:
            return str(exc)
        finally:
            budget.release(n)

    files.sort(key=lambda f: -f.size)  # big files first: the small ones fill the gaps at the end
    with ThreadPoolExecutor(max(1, min(workers, len(files))), thread_name_prefix="warm") as pool:
        problems += [p for p in pool.map(one, files) if p]
    if problems:
        raise HfCacheError("warm found problems: " + "; ".join(problems))
    return len(files), total
