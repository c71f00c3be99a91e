"""Pre-load snapshots into the node's cache by fetching every file once through the mount, verified.

The node cache is filled by reads, so warming is reading. Over a link like S3's one reader gets one connection's
worth (about 90 MB/s), so each file is fetched as several large contiguous segments at once, each by its own
stream through the mount (cache/transfer.py ``fill_segment``: rclone starts one downloader per read position and
they fill the same cache file). Every segment of every file is queued up front, so the node's streams stay busy
across file boundaries. Behind the fetch each file is hashed in order and checked against the sha256 in the
snapshot's manifest, so a corrupt object is reported, not silently served to every job; the hash reads rclone's
cache file directly where this process can see it (readers/nodecache.py), else through the mount.

Measured over the S3-like link (docs/cold-path.md): hashing in order through the mount while the mount's prefetch
filled the file (the previous design) trailed the fetch by 2.5-5 s for a 1 GB model on 2 cores, and the reader's own
downloader pulled 1.2x the bytes.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
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
from hf_cache.mount.markers import PREFETCH, READ_AHEAD, marker_live
from hf_cache.mount.rclone import READ_CHUNK
from hf_cache.progress import Progress
from hf_cache.readers import nodecache
from hf_cache.readers.nodecache import NodeCache, data_span
from hf_cache.reponame import format_repo
from hf_cache.transfer import TOUCH, MiB, ReadInto, Segment, check_sha256, fd_reader, fill_segment, rclone_segments

log = logging.getLogger(__name__)

# Segments are touched (transfer.TOUCH), not read: reading each in full as well as hashing it cost a second copy
# through FUSE on the node's CPU.

# Files hashed at once. Each waits for its fetch, so more hashers than files in flight only wait; reading rclone's
# cache file, one hasher keeps up with ~1 GB/s.
HASHERS = 4


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


def plan_file(size: int, streams: int) -> list[Segment]:
    """The segments warm fetches a file as: the same cut as the mount's prefetch (``transfer.rclone_segments``)."""
    return rclone_segments(size, streams, READ_CHUNK)


class _Fill:
    """How far each segment of one file has been fetched; its hasher waits on it."""

    def __init__(self, f: WarmFile, segments: list[Segment]) -> None:
        self.f = f
        self.segments = segments
        self.done = [s.offset for s in segments]
        self.failed: BaseException | None = None
        self.cond = threading.Condition()

    def advance(self, i: int, upto: int) -> None:
        with self.cond:
            self.done[i] = max(self.done[i], upto)
            self.cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self.cond:
            self.failed = self.failed or exc
            self.cond.notify_all()

    def ready(self, offset: int) -> int:
        """Block until the byte at ``offset`` has been fetched; returns where the fetched run there ends."""
        i = max(0, bisect.bisect_right([s.offset for s in self.segments], offset) - 1)
        with self.cond:
            while self.done[i] <= offset:
                if self.failed is not None:
                    raise self.failed
                self.cond.wait()
            return self.done[i]


def fill(job: _Fill, i: int) -> None:
    """Make rclone fetch segment ``i`` of a file: its own open (its own rclone downloader), 4 KiB touched per MiB."""
    f, seg = job.f, job.segments[i]

    def short(at: int) -> IntegrityError:
        return IntegrityError(f"{f.name}: ended at byte {at}, expected {f.size} bytes; run hf-cache verify")

    try:
        fd = os.open(f.path, os.O_RDONLY)
        try:
            fill_segment(fd_reader(fd), seg, TOUCH, lambda upto: job.advance(i, upto), short)
        finally:
            os.close(fd)
    except BaseException as exc:
        job.fail(exc)


class _Reader:
    """Reads a file being warmed for its hash: from rclone's cache file where it holds data (no FUSE round trip),
    else through the mount (which waits for, or fetches, what the cache file lacks)."""

    def __init__(self, f: WarmFile, cache: NodeCache | None) -> None:
        self.f = f
        self.cache = cache
        self.fd = os.open(f.path, os.O_RDONLY)
        self.cache_fd: int | None = None
        self.from_cache = 0

    def read_into(self, offset: int, buf: memoryview) -> int:
        if self.cache_fd is None and self.cache is not None:
            data = self.cache.data_file(self.f.path)
            if data is not None:
                with contextlib.suppress(OSError):
                    self.cache_fd = os.open(data, os.O_RDONLY)
        if self.cache_fd is not None:
            span = data_span(self.cache_fd, offset)
            if span > 0:
                n = os.preadv(self.cache_fd, [buf[: min(len(buf), span)]], offset)
                if n > 0:
                    self.from_cache += n
                    return n
        return os.preadv(self.fd, [buf], offset)

    def close(self) -> None:
        os.close(self.fd)
        if self.cache_fd is not None:
            os.close(self.cache_fd)


def hash_file(
    f: WarmFile,
    read_into: ReadInto,
    ready: Callable[[int], int] | None = None,
    progress: Callable[[int], None] | None = None,
    block: int = 4 * MiB,
) -> str:
    """The sha256 of ``f``, read in order from ``read_into``; with ``ready``, each read waits until the fetch has
    passed it (``ready(offset)`` returns where the fetched run at ``offset`` ends). IntegrityError if short."""
    digest = hashlib.sha256()
    buf = memoryview(bytearray(min(block, max(f.size, 1))))
    pos = 0
    while pos < f.size:
        upto = min(f.size, ready(pos)) if ready is not None else f.size
        while pos < upto:
            n = read_into(pos, buf[: min(len(buf), upto - pos)])
            if n <= 0:
                raise IntegrityError(f"{f.name}: ended at byte {pos}, expected {f.size} bytes; run hf-cache verify")
            digest.update(buf[:n])  # hashlib drops the GIL for large buffers
            pos += n
            if progress is not None:
                progress(n)
    return digest.hexdigest()


def verify(job: _Fill, cache: NodeCache | None, progress: Progress) -> int:
    """Hash one file behind its fetch and check it against the manifest; returns the bytes read from rclone's cache
    file. A mismatch seen through the cache file is checked again through the mount before the object is called
    corrupt: the mount is what jobs read, and a cache file that is not what we think (a filesystem without
    SEEK_HOLE, a stale record) must not fail a good object."""
    f = job.f
    reader = _Reader(f, cache)
    try:
        got = hash_file(f, reader.read_into, job.ready, progress.advance)
        if f.sha256 is not None and got != f.sha256 and reader.from_cache:
            log.warning("%s: sha256 differs as read from rclone's cache file; checking it through the mount", f.name)
            got = hash_file(f, fd_reader(reader.fd))
    finally:
        reader.close()
    check_sha256(f.name, got, f.sha256)
    progress.advance(0, 1)
    return reader.from_cache


def mountpoint_of(snapshot: Path) -> Path | None:
    """The mount root of ``<mount>/hub/<repo>/snapshots/<sha>``."""
    return snapshot.parents[2].parent if len(snapshot.parents) > 3 else None


def prefetching_mount(snapshot: Path) -> dict[str, Any] | None:
    """The prefetcher's settings when the mount holding ``snapshot`` prefetches on first read(), else None (logged
    by warm: its streams and the prefetcher's meet in the same rclone downloaders)."""
    mount = mountpoint_of(snapshot)
    return marker_live(mount, kind=PREFETCH) if mount is not None else None


def warm(
    snapshots: list[Path] | list[tuple[Path, Path | None]], workers: int = 16, progress: Progress | None = None
) -> tuple[int, int]:
    """Fetch and verify every file of ``snapshots`` (paths, or (path, manifest) pairs) with ``workers`` streams in
    flight in all; returns (files, bytes). Raises HfCacheError listing every file that failed verification.

    Every segment of every file is queued up front, file by file (largest first), so the streams stay busy across
    file boundaries instead of one file at a time; a few hashers follow the files in the same order, each reading
    a file behind its fetch. When the mount prefetches on first read() (cache/mount/prefetch.py) it sees warm's own
    streams fill the file and either leaves it alone or reads the same segments, which rclone serves from the same
    downloaders: bytes cross the link once either way."""
    files: list[WarmFile] = []
    problems: list[str] = []
    for item in snapshots:
        snap, manifest = item if isinstance(item, tuple) else (item, None)
        found, issues = expected_files(snap, manifest)
        files += found
        problems += issues if isinstance(item, tuple) else []
    progress = progress or Progress("warm", tty=False, interval=0)  # no heartbeat: nothing would stop it
    total = sum(f.size for f in files)
    progress.add_total(total, len(files))
    if not files:
        if problems:
            raise HfCacheError("warm found problems: " + "; ".join(problems))
        return 0, 0
    files.sort(key=lambda f: -f.size)  # big files first: the small ones fill the gaps at the end
    mount = mountpoint_of(files[0].path.parent)
    # a mount reading ahead through its S3 endpoint (mount/s3endpoint.py) fetches each file in parallel for one
    # sequential reader; warm's segments would each become a stream reading parts past the segment's end (2.94 GB at
    # the link for 2.07 GB at 15 MB/s)
    whole = mount is not None and marker_live(mount, kind=READ_AHEAD) is not None
    jobs = [_Fill(f, ([Segment(0, f.size)] if whole else plan_file(f.size, workers)) or [Segment(0, 0)]) for f in files]
    cache = nodecache.find(mount) if mount is not None else None
    from_cache = 0
    lock = threading.Lock()

    def check(job: _Fill) -> str | None:
        nonlocal from_cache
        try:
            n = verify(job, cache, progress)
        except (IntegrityError, OSError, EOFError) as exc:
            return str(exc)
        with lock:
            from_cache += n
        return None

    with (
        ThreadPoolExecutor(max(1, workers), thread_name_prefix="warm-fill") as fills,
        ThreadPoolExecutor(min(len(jobs), HASHERS), thread_name_prefix="warm-hash") as hashers,
    ):
        for job in jobs:
            for i, seg in enumerate(job.segments):
                if seg.size:
                    fills.submit(fill, job, i)
        problems += [p for p in hashers.map(check, jobs) if p]
    log.info(
        "warm: verified %d MiB, %d MiB of it read from rclone's cache file%s; the mount's prefetch is %s, its "
        "read-ahead %s",
        total >> 20,
        from_cache >> 20,
        "" if cache else " (not visible from here: read through the mount)",
        "on" if prefetching_mount(files[0].path.parent) else "off",
        "on (one reader per file)" if whole else "off",
    )
    if problems:
        raise HfCacheError("warm found problems: " + "; ".join(problems))
    return len(files), total
