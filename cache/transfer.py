"""Fetch one file with many reads in flight, verified against its sha256.

Over a link like S3's (about 90 MB/s and tens of milliseconds per connection), one sequential reader gets one
connection's worth; fast clients keep many ranged reads in flight. This fetcher cuts a file into large contiguous
segments, reads ``streams`` of them at once from a positional source (a file on the mount, ranged GETs), hands the
bytes to an optional sink (a destination file), and meanwhile hashes the file in order from a verify source (the
destination, or the mount once a region is cached), following each segment's progress.

Why contiguous segments and not many small parts: each new read position costs the source a new stream (a new
rclone downloader, a new GET), and abandoning a stream wastes what was in flight on it - measured through the mount
over the S3-like link, 16-32 MiB parts fetched 1.45-1.96x the file; 112 MiB segments ending where rclone's own
requests end (``aligned_segment``) fetched 1.05x.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hf_cache.errors import IntegrityError
from hf_cache.units import MiB

ReadInto = Callable[[int, memoryview], int]  # (offset, buffer) -> bytes read; 0 only at end of file
WriteAt = Callable[[int, memoryview], None]

# A segment's stream (the mount's prefetch, hf-cache warm) reads 4 KiB every TOUCH bytes: rclone's downloader fetches
# everything up to each read and is reused while the next read is within its window (--buffer-size, 1 MiB at least),
# so one downloader fetches the segment whole and no byte is copied out (warm's hash pass reads each byte once).
TOUCH = 1 * MiB


def fd_reader(fd: int) -> ReadInto:
    """A ReadInto over one open file (pread: threads share the fd without seeking)."""
    return lambda offset, buf: os.preadv(fd, [buf], offset)


@dataclass(frozen=True)
class Segment:
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


def aligned_segment(total: int, streams: int, first_chunk: int, floor: int) -> int:
    """The segment size that ends each segment where the source's own request ends.

    rclone's downloader fetches from any offset in requests of ``first_chunk``, doubling (16, 32, 64 MiB...), so
    it has requested exactly ``first_chunk * (2**k - 1)`` bytes at those points. A segment of that size ends with
    a request, not inside one: stopping there abandons only what was read ahead (measured: ~6 MB per segment vs
    ~13-23 MB for other sizes). Picks the largest such size that still gives every stream a segment of ``total``,
    but not below ``floor`` (over-fetch ~6-9 MB per segment boundary).
    """
    sizes: list[int] = [first_chunk * (2**k - 1) for k in range(1, 16)]
    fitting = [s for s in sizes if s >= floor and s * streams <= max(total, 1)]
    return max(fitting) if fitting else min(s for s in sizes if s >= floor)


def plan_segments(size: int, segment: int) -> list[Segment]:
    """Contiguous segments of ``segment`` bytes covering ``[0, size)``, in order. A remainder under half a segment
    joins the last one: a segment that ends at end of file abandons nothing, so it may be longer for free."""
    if segment <= 0:
        raise ValueError("segment size must be positive")
    starts = list(range(0, size, segment))
    if len(starts) > 1 and size - starts[-1] < segment // 2:
        starts.pop()
    return [Segment(off, (starts[i + 1] if i + 1 < len(starts) else size) - off) for i, off in enumerate(starts)]


MIN_SEGMENT = 48 * MiB  # smaller segments abandon more read-ahead per end
PER_END = 100 * MiB  # at most one segment end per this much of a file (rclone_segments: speed vs bytes)


def rclone_segments(size: int, streams: int, first_chunk: int) -> list[Segment]:
    """The segments a file is fetched as through rclone (the mount's prefetch and ``hf-cache warm`` alike): one per
    stream (``aligned_segment``), but no more than one segment end per ``PER_END`` of the file. Pure.

    Why: a segment's rclone downloader cannot stop at the segment's end. Its read-ahead buffer holds the segment's
    last 4 KiB together with the next MiB, so it has already opened a ranged GET into the next segment (which
    another stream fetched), and it stops only after writing 2 MiB more that are already cached; with what its
    buffers and socket held meanwhile, 4-7 MB cross the link for nothing at each end (measured per ranged GET over
    the S3-like link, with --buffer-size 4M; about half that with the mount's 1M). 48 MiB segments cost a 210 MiB
    file 1.07-1.09x (4M); one end per 50 MiB cost a 1 GB file read by 4 readers 1.06x (1M), one per 100 MiB a 2 GB
    file 1.03-1.06x (1M). Fewer ends cost speed where each connection is the limit (real S3: ~90 MB/s each): one end
    per 200 MiB gave a 1 GB file 4 streams and read() 0.39x of boto3 at 15 MB/s per connection (docs/cold-path.md,
    "Where each connection is the limit"). When that bound binds, the segments are the aligned size whose longest
    segment is shortest (the last one, ending at end of file, may be any length: it abandons nothing).
    """
    segments = plan_segments(size, aligned_segment(size, max(1, streams), first_chunk, MIN_SEGMENT))
    most = 1 + size // PER_END
    if len(segments) <= most:
        return segments
    best = [Segment(0, size)]
    seg = aligned_segment(0, 1, first_chunk, MIN_SEGMENT)  # the smallest aligned size >= MIN_SEGMENT
    while seg < size:
        found = plan_segments(size, seg)
        if len(found) > most:  # those past the most-th join it: it then runs to end of file
            found = [*found[: most - 1], Segment(found[most - 1].offset, size - found[most - 1].offset)]
        if max(x.size for x in found) < max(x.size for x in best):
            best = found
        seg = 2 * seg + first_chunk  # the next size ending where rclone's doubling requests end
    return best


def fill_segment(
    read_into: ReadInto,
    seg: Segment,
    touch: int,
    advance: Callable[[int], None] | None = None,
    short: Callable[[int], BaseException] | None = None,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Make the source fetch ``seg`` whole by reading 4 KiB every ``touch`` bytes, in order; returns how far it got.

    A source that fetches contiguously up to each read (rclone's downloader, reused while the next read is within
    --buffer-size) fills the segment without the bytes being copied out. ``advance(upto)`` after each read: the
    source holds ``[seg.offset, upto)``. ``stop()`` true ends early (the prefetcher's shutdown); a read of 0 bytes
    raises ``short(at)`` (EOFError by default).
    """
    buf = memoryview(bytearray(4096))
    pos = seg.offset
    while stop is None or not stop():
        at = min(pos, max(seg.offset, seg.end - len(buf)))
        want = min(len(buf), seg.end - at)
        got = 0
        while got < want:
            n = read_into(at + got, buf[got:want])
            if n <= 0:
                raise short(at + got) if short else EOFError(f"ended at byte {at + got}")
            got += n
        if advance is not None:
            advance(at + want)
        if at + want >= seg.end:
            return seg.end
        pos += touch
    return min(pos, seg.end)


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str


class _Progress:
    """How far each segment has been read from its start; the hasher waits on it."""

    def __init__(self, segments: list[Segment]) -> None:
        self.cond = threading.Condition()
        self.done = [s.offset for s in segments]
        self.failed: BaseException | None = None

    def advance(self, i: int, upto: int) -> None:
        with self.cond:
            self.done[i] = upto
            self.cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self.cond:
            self.failed = self.failed or exc
            self.cond.notify_all()

    def wait(self, i: int, upto: int) -> int:
        """Block until segment ``i`` is read past ``upto`` (or finished); returns how far it is."""
        with self.cond:
            while self.done[i] <= upto:
                if self.failed is not None:
                    raise self.failed
                self.cond.wait()
            return self.done[i]


def fetch(
    name: str,
    size: int,
    read_into: ReadInto,
    *,
    verify_read_into: ReadInto | None = None,
    sink: WriteAt | None = None,
    sha256: str | None = None,
    streams: int = 16,
    segment: int = 112 * MiB,
    block: int = 4 * MiB,
    touch: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Fetched:
    """Read ``size`` bytes of ``name`` in segments, ``streams`` of them in flight; verify ``sha256`` if given.

    ``verify_read_into`` re-reads finished regions for hashing (the sink's file, or the now-cached source); without
    it the source is re-read. With ``touch`` (and no sink) a segment's stream reads only 4 KiB every ``touch`` bytes:
    enough for a source that fetches contiguously up to each read (rclone's downloader, while ``touch`` is inside
    its reuse window, --buffer-size) to fetch the whole segment, without copying it out; the hash pass then reads
    each byte once. Raises IntegrityError naming the file when bytes are short or the sha256 differs.
    """
    segments = plan_segments(size, segment)
    state = _Progress(segments)
    verify = verify_read_into or read_into

    def short(at: int) -> IntegrityError:
        return IntegrityError(
            f"{name}: ended at byte {at}, expected {size} bytes; the object is truncated - run hf-cache verify"
        )

    def touch_one(i: int, seg: Segment) -> None:
        try:
            fill_segment(read_into, seg, touch, lambda upto: state.advance(i, upto), short)
        except BaseException as exc:
            state.fail(exc)

    def one(i: int, seg: Segment) -> None:
        try:
            buf = memoryview(bytearray(min(block, seg.size)))
            pos = seg.offset
            while pos < seg.end:
                n = read_into(pos, buf[: min(len(buf), seg.end - pos)])
                if n <= 0:
                    raise short(pos)
                if sink is not None:
                    sink(pos, buf[:n])
                pos += n
                state.advance(i, pos)
        except BaseException as exc:
            state.fail(exc)

    digest = hashlib.sha256()
    hbuf = memoryview(bytearray(min(block, max(size, 1))))
    with ThreadPoolExecutor(max(1, min(streams, len(segments))), thread_name_prefix="fetch") as pool:
        for i, seg in enumerate(segments):
            pool.submit(touch_one if touch and sink is None else one, i, seg)
        try:
            for i, seg in enumerate(segments):
                pos = seg.offset
                while pos < seg.end:
                    ready = state.wait(i, pos)
                    while pos < ready:
                        n = verify(pos, hbuf[: min(len(hbuf), ready - pos)])
                        if n <= 0:
                            raise short(pos)
                        digest.update(hbuf[:n])  # hashlib drops the GIL for large buffers
                        pos += n
                        if progress is not None:
                            progress(n)
        except BaseException as exc:
            state.fail(exc)
            raise
    got = digest.hexdigest()
    check_sha256(name, got, sha256)
    return Fetched(size, got)


def check_sha256(name: str, got: str, want: str | None) -> None:
    """IntegrityError naming the file and what to do when ``got`` is not the published ``want`` (None: unchecked)."""
    if want is not None and got != want:
        raise IntegrityError(
            f"{name}: sha256 {got[:16]}... does not match the published {want[:16]}...; the object in S3 is "
            "corrupt - run hf-cache verify, then hf-cache refresh to publish it again"
        )
