"""Prefetch on first read(): when a reader read()s a large file the node cache does not hold, fill it at many
connections.

rclone serves a sequential read() with one downloader (one connection, ~90 MB/s from S3), and the flag that gives
it several (``--vfs-read-chunk-streams``) ruins mmap-style loads (docs/cold-path.md). So the mount keeps its flags,
and the supervisor watches opens (openwatch.py, fanotify): on the open of a file of at least ``--prefetch-min-size``
that rclone's cache does not hold whole, it arms a read watch on that file, and on its first read() the file is read
as contiguous segments, each by its own thread through the mount
(cache/transfer.py ``fill_segment``: 4 KiB touched per MiB, no copy, no hash), so rclone starts one downloader per
segment and its cache fills at N connections while the reader is served from it. mmap readers (safetensors
``safe_open``, transformers, vLLM) raise no read event and get no prefetch: measured over the S3-like link, a
prefetch made ``safe_open`` slower (0.81x of download + load, 1.19x without), its 16 streams competing with the
reader's scattered page faults. A file armed and not read within ``ARM_FOR`` is let go. After the first read() the
prefetcher watches rclone's cache file grow for ``FAST_WINDOW``: a reader whose own connection already fills it at
``--prefetch-fast-rate`` or more (loopback, a fast network) is left alone - extra streams there only cost CPU. rclone's
own downloader for the reader stops when it runs into data a segment already fetched, and a segment's downloader
stops where the reader's already fetched, so bytes cross the link about once: 4-7 MiB more per segment end, so
a file gets at most one segment end per ``transfer.PER_END`` (``plan``).

A prefetch only ever adds reads of the same file through the same mount: when it fails (S3 error, stall, rclone
restarted) it stops and is counted, and the reader's own reads go on as without it. Opens by this process (the
prefetch's own, the node tier's, the probes) never trigger it. One prefetch per file however many readers; a
node-wide stream budget shared by all files, first opened first served; never more in flight than half the cache
cap (rclone would evict what it just fetched).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from hf_cache.errors import MountError
from hf_cache.mount.markers import PREFETCH, Keeper
from hf_cache.mount.openwatch import Opened, OpenWatch
from hf_cache.mount.rclone import READ_CHUNK
from hf_cache.node import vfscache
from hf_cache.transfer import TOUCH, Segment, fd_reader, fill_segment, rclone_segments

log = logging.getLogger(__name__)

DONE_MEMORY = 120.0  # seconds a finished file is not prefetched again (rclone writes its cache record late)
FAST_WINDOW = 0.4  # seconds the reader's own fill rate is watched before deciding (adds this to a prefetch's start)
ARM_FOR = 30.0  # seconds an opened candidate waits for its first read() (we hold an open of it meanwhile)


@dataclass(frozen=True)
class Policy:
    streams: int  # node-wide budget of segment streams; 0 = off
    min_size: int
    cache_max_bytes: int
    fast_rate: int = 0  # bytes/s: a reader filling the cache this fast alone is left alone; 0 = never


def skip_reason(
    policy: Policy, size: int, cached: int, in_flight_bytes: int, busy: bool, recently_done: bool
) -> str | None:
    """Why an opened file is not prefetched, or None to prefetch it. Pure, unit-tested."""
    if policy.streams <= 0:
        return "off"
    if size < policy.min_size:
        return "small"
    if busy:
        return "in flight"
    if cached >= size:
        return "cached"
    if recently_done:
        return "done"
    if len(plan(size, policy.streams)) < 2:
        return "one segment"  # the reader's own downloader is that one stream
    if policy.cache_max_bytes and in_flight_bytes + size > policy.cache_max_bytes // 2:
        return "cache cap"
    return None


def fast_enough(policy: Policy, grown: int, seconds: float) -> bool:
    """Whether the reader's own downloader, having filled ``grown`` bytes in ``seconds``, needs no help. Pure."""
    return policy.fast_rate > 0 and seconds > 0 and grown / seconds >= policy.fast_rate


def plan(size: int, streams: int) -> list[Segment]:
    """The segments a file is prefetched as: the same cut as ``hf-cache warm`` (``transfer.rclone_segments``)."""
    return rclone_segments(size, streams, READ_CHUNK)


class PrefetchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.files = Counter("hfcache_prefetch_files", "Files prefetched on their first read() (finished)", registry=r)
        self.bytes = Counter("hfcache_prefetch_bytes", "Bytes of files filled by prefetch on first read()", registry=r)
        self.failed = Counter(
            "hfcache_prefetch_failed", "Prefetches stopped by an error (the reader's own reads go on)", registry=r
        )
        self.in_flight = Gauge("hfcache_prefetch_in_flight", "Files being prefetched now", registry=r)
        self.skipped = Counter(
            "hfcache_prefetch_skipped",
            "Opens of large files not prefetched (cached, in flight, cache cap, already waiting for a read)",
            registry=r,
        )
        self.read_events = Counter(
            "hfcache_prefetch_read_events", "read() events of armed files (each one a kernel open of it)", registry=r
        )
        self.fast = Counter(
            "hfcache_prefetch_fast", "Read files left alone: the reader's own connection filled fast enough", registry=r
        )
        self.unread = Counter(
            "hfcache_prefetch_unread", "Candidates not read() within the arm window (mmap loads)", registry=r
        )


@dataclass(frozen=True)
class _Armed:
    fd: int  # our open of the candidate: keeps its inode mark removable and becomes the job's
    at: float
    name: str


@dataclass
class _Job:
    key: tuple[int, int]
    fd: int
    size: int
    name: str
    segments: list[Segment]
    left: int = 0
    failed: BaseException | None = None
    done_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Prefetcher:
    """Owns the fanotify group, a dispatcher thread and ``streams`` segment threads (daemons: a segment read stuck
    in a hung mount must not hold up the supervisor's exit)."""

    def __init__(
        self,
        mountpoint: Path,
        cache_dir: Path,
        remote_path: str,
        policy: Policy,
        registry: CollectorRegistry,
        stop: threading.Event,
    ) -> None:
        self.mountpoint = mountpoint
        self.cache_dir = cache_dir
        self.remote_path = remote_path
        self.policy = policy
        self.metrics = PrefetchMetrics(registry)
        self.stop = stop
        self.pid = os.getpid()
        self.watch: OpenWatch | None = None
        self._work: queue.Queue[tuple[_Job, int]] = queue.Queue()
        self._events: queue.Queue[list[Opened] | None] = queue.Queue()  # None: the watch failed
        self._jobs: dict[tuple[int, int], _Job] = {}
        self._done: dict[tuple[int, int], float] = {}
        self._armed: dict[tuple[int, int], _Armed] = {}  # dispatcher thread only
        self._probing: set[tuple[int, int]] = set()  # first read seen, the reader's fill rate being watched
        self._lock = threading.Lock()
        self._marker = Keeper(mountpoint, PREFETCH, {"streams": policy.streams, "min_size": policy.min_size})

    def start(self) -> None:
        """Start the threads (no-op when off). Raises MountError if fanotify is not available."""
        if self.policy.streams <= 0:
            return
        self.watch = OpenWatch()
        threading.Thread(target=self._drain, name="prefetch-events", daemon=True).start()
        threading.Thread(target=self._dispatch, name="prefetch", daemon=True).start()
        for i in range(self.policy.streams):
            threading.Thread(target=self._segments, name=f"prefetch-{i}", daemon=True).start()

    def mounted(self) -> None:
        """rclone (re)mounted: watch the new mount's filesystem (the old mark went with the old superblock)."""
        if self.watch is None:
            return
        try:
            self.watch.mark(self.mountpoint)
        except MountError as exc:
            log.warning("prefetch-on-open is off for this mount: %s", exc)
            return
        self._marker.touch(force=True)

    def close(self) -> None:
        self._marker.remove()
        if self.watch is not None:
            self.watch.close()

    # -- dispatcher -------------------------------------------------------------------------------------------
    def _drain(self) -> None:
        """Take events off the fanotify queue as soon as they come, apart from deciding on them. Reading an event is
        what makes the kernel open the file for us, and an open on this FUSE mount drops every page of the file from
        the page cache (rclone sets no FOPEN_KEEP_CACHE), also pages a reader has already mmap-faulted in: each
        millisecond the open waits behind a busy dispatcher is re-read by that reader through rclone."""
        assert self.watch is not None
        while not self.stop.is_set():
            try:
                events = self.watch.events(0.5)
            except OSError as exc:
                log.warning("prefetch-on-open stopped watching opens: %s", exc)
                self._events.put(None)
                return
            if events:
                self._events.put(events)

    def _dispatch(self) -> None:
        while not self.stop.is_set():
            self._marker.touch()
            try:
                events = self._events.get(timeout=0.5)
            except queue.Empty:
                events = []
            if events is None:
                return
            for ev in events:
                try:
                    if ev.access:
                        self.metrics.read_events.inc()
                        self._first_read(ev)
                    else:
                        self._consider(ev)
                except Exception as exc:
                    log.warning("prefetch: ignoring an event: %s", exc)
                    with contextlib.suppress(OSError):
                        os.close(ev.fd)
            self._expire(time.monotonic())

    def _disarm(self, key: tuple[int, int]) -> _Armed | None:
        armed = self._armed.pop(key, None)
        if armed is not None and self.watch is not None:
            self.watch.disarm(armed.fd)
        return armed

    def _expire(self, now: float) -> None:
        """Let go of candidates nobody read() (mmap loads): close our open of them."""
        for key in [k for k, a in self._armed.items() if now - a.at >= ARM_FOR]:
            armed = self._disarm(key)
            if armed is not None:
                os.close(armed.fd)
                self.metrics.unread.inc()
                log.debug("prefetch: not %s (not read() within %.0fs: mmap)", armed.name, ARM_FOR)

    def _rel(self, fd: int, st: os.stat_result) -> str | None:
        """The opened file's path relative to the mount root: fanotify gives the opener's path (a pod's bind mount
        shows as the path from the mount root), so the longest suffix that is the same file under the mountpoint."""
        parts = Path(os.readlink(f"/proc/self/fd/{fd}")).parts[1:]
        for i in range(len(parts)):
            candidate = self.mountpoint.joinpath(*parts[i:])
            with contextlib.suppress(OSError):
                other = candidate.stat()
                if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                    return "/".join(parts[i:])
        return None

    def _reason(self, fd: int, st: os.stat_result) -> tuple[str | None, str | None]:
        """(skip reason or None, path relative to the mount) for the file open as ``fd``."""
        key = (st.st_dev, st.st_ino)
        rel = self._rel(fd, st)
        cached = 0
        if rel is not None:
            found = vfscache.state(self.cache_dir, self.remote_path, rel, st.st_size)
            cached = found.present if found is not None and found.complete else 0
        now = time.monotonic()
        with self._lock:
            self._done = {k: t for k, t in self._done.items() if now - t < DONE_MEMORY}
            reason = skip_reason(
                self.policy,
                st.st_size,
                cached,
                sum(j.size for j in self._jobs.values()),
                key in self._jobs or key in self._probing,
                key in self._done,
            )
        return reason, rel

    def _skip(self, fd: int, what: object, reason: str) -> None:
        """A file the policy turns down (on its open, or again on its first read): let go of its open."""
        os.close(fd)
        self.metrics.skipped.inc()
        log.debug("prefetch: not %s (%s)", what, reason)

    def _consider(self, ev: Opened) -> None:
        """An open: arm a read watch on a candidate; the prefetch waits for its first read()."""
        st = os.fstat(ev.fd)
        key = (st.st_dev, st.st_ino)
        if ev.pid == self.pid or not stat.S_ISREG(st.st_mode) or st.st_size < self.policy.min_size:
            os.close(ev.fd)
            return
        if key in self._armed:
            os.close(ev.fd)
            self.metrics.skipped.inc()
            return
        reason, rel = self._reason(ev.fd, st)
        if reason is not None:
            self._skip(ev.fd, rel or key, reason)
            return
        assert self.watch is not None
        try:
            self.watch.arm(ev.fd)
        except MountError:
            os.close(ev.fd)
            raise
        self._armed[key] = _Armed(ev.fd, time.monotonic(), rel or f"inode {st.st_ino}")

    def _first_read(self, ev: Opened) -> None:
        """A read() of an armed file: prefetch it (decided again: it may have been cached meanwhile)."""
        st = os.fstat(ev.fd)
        os.close(ev.fd)  # the armed open is the one the prefetch keeps
        key = (st.st_dev, st.st_ino)
        if ev.pid == self.pid:
            return
        armed = self._disarm(key)
        if armed is None:
            return  # queued before the disarm: the file is already decided
        reason, rel = self._reason(armed.fd, st)
        if reason is not None:
            self._skip(armed.fd, rel or key, reason)
            return
        with self._lock:
            self._probing.add(key)
        threading.Thread(target=self._probe, args=(armed, st, rel, ev.pid), name="prefetch-probe", daemon=True).start()

    def _filled(self, rel: str | None) -> int:
        """Bytes rclone's cache file of ``rel`` holds now (allocated blocks: rclone writes it sparse)."""
        data = None if rel is None else vfscache.data_file(self.cache_dir, self.remote_path, rel)
        with contextlib.suppress(OSError):
            return data.stat().st_blocks * 512 if data is not None else 0
        return 0

    def _probe(self, armed: _Armed, st: os.stat_result, rel: str | None, pid: int) -> None:
        """Watch the reader's own fill rate for a moment (off the dispatcher: other opens go on), then decide."""
        key = (st.st_dev, st.st_ino)
        if self.policy.fast_rate > 0 and rel is not None:
            before, started = self._filled(rel), time.monotonic()
            self.stop.wait(FAST_WINDOW)
            grown, took = self._filled(rel) - before, time.monotonic() - started
            if fast_enough(self.policy, grown, took):
                with self._lock:
                    self._probing.discard(key)
                    self._done[key] = time.monotonic()
                os.close(armed.fd)
                self.metrics.fast.inc()
                log.info("prefetch: not %s (its reader fills %.0f MB/s alone)", armed.name, grown / took / 1e6)
                return
        with self._lock:
            self._probing.discard(key)
            segments = plan(st.st_size, self.policy.streams)
            job = _Job(key, armed.fd, st.st_size, armed.name, segments, left=len(segments))
            self._jobs[key] = job
            self.metrics.in_flight.set(len(self._jobs))
        log.info("prefetch: %s (%d MiB) in %d segments, read by pid %d", job.name, st.st_size >> 20, job.left, pid)
        for i in range(len(segments)):
            self._work.put((job, i))

    # -- segment streams --------------------------------------------------------------------------------------
    def _segments(self) -> None:
        while not self.stop.is_set():
            try:
                job, i = self._work.get(timeout=0.5)
            except queue.Empty:
                continue
            filled = 0
            if job.failed is None:
                try:
                    fd = os.open(f"/proc/self/fd/{job.fd}", os.O_RDONLY)  # its own open: its own rclone handle
                    try:
                        seg = job.segments[i]
                        filled = fill_segment(fd_reader(fd), seg, TOUCH, stop=self.stop.is_set)
                        filled -= seg.offset
                    finally:
                        os.close(fd)
                except (OSError, EOFError) as exc:
                    job.failed = job.failed or exc
            self._finish(job, filled)

    def _finish(self, job: _Job, filled: int) -> None:
        with job.lock:
            job.left -= 1
            job.done_bytes += filled
            last = job.left == 0
        self.metrics.bytes.inc(filled)
        if not last:
            return
        with self._lock:
            self._jobs.pop(job.key, None)
            if job.failed is None:  # a failed one may be tried again by the next open
                self._done[job.key] = time.monotonic()
            self.metrics.in_flight.set(len(self._jobs))
        with contextlib.suppress(OSError):
            os.close(job.fd)
        if job.failed is not None:
            self.metrics.failed.inc()
            log.warning(
                "prefetch of %s stopped: %s (its readers are served by rclone's own reads)", job.name, job.failed
            )
        else:
            self.metrics.files.inc()
            log.info("prefetched %s (%d MiB)", job.name, job.size >> 20)
