"""Read-ahead decisions for the mount's S3 endpoint (mount/s3endpoint.py): which GET is a sequential downloader,
and which parts to keep in flight for it. Pure: no sockets, no threads, unit-tested on their own.

rclone's VFS downloader reads a cold file with one connection: 16 MiB from where the reader starts, then the next
32, 64... MiB, each request waiting for the previous one (docs/cold-path.md). So its second request starts exactly
where its first one ended, on the same object: that marks it sequential, and from there the endpoint keeps
``depth`` ranged GETs of one part each in flight ahead of what rclone has consumed, across rclone's request
boundaries, the way boto3's transfer manager does. mmap loads' page-fault regions mostly stay inside their first
request, so they are passed through untouched.
"""

from __future__ import annotations

import bisect
import re
import statistics
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Generic, TypeVar

from hf_cache.units import MiB

PART = 8 * MiB  # one ranged GET of a stream: boto3's part size (its transfer manager measured fast on a real link)
REMEMBERED = 4096  # ends of recent GETs kept to recognise a continuation (an entry is ~300 bytes)
REMEMBER_FOR = 10.0  # seconds: rclone asks its next range as soon as it has consumed the previous one; a parked
# stream (up to depth x PART bytes of memory) is dropped after this

ASKED_FOR = 600.0  # seconds the ranges rclone asked for are remembered (see Asked)
PROBE_EVERY = 10.0  # seconds without a measured part before a large first GET gets parts on a near link (Nearness)

_RANGE_RE = re.compile(r"bytes=(\d+)-(\d*)")
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
# Query parameters an SDK adds to a plain GetObject (aws-sdk-go-v2, which rclone uses, adds x-id): anything else
# (versionId, partNumber, a listing's list-type) is not a plain ranged read and is passed through.
PLAIN_GET_PARAMS = frozenset({"x-id"})


def parse_range(header: str | None) -> tuple[int, int | None] | None:
    """``bytes=a-b`` -> (a, b), ``bytes=a-`` -> (a, None); anything else (suffix or multiple ranges) -> None."""
    if not header:
        return None
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None:
        return None
    start, end = int(match.group(1)), (int(match.group(2)) if match.group(2) else None)
    if end is not None and end < start:
        return None
    return start, end


def parse_content_range(header: str | None) -> tuple[int, int, int] | None:
    """``bytes a-b/total`` -> (a, b, total); an unknown total (``*``) or anything else -> None."""
    match = _CONTENT_RANGE_RE.fullmatch((header or "").strip())
    if match is None:
        return None
    start, end, total = (int(g) for g in match.groups())
    return (start, end, total) if start <= end < total else None


def clamp(start: int, end: int | None, total: int) -> int | None:
    """The last byte a range request gets from an object of ``total`` bytes; None when it starts past the end (S3
    answers 416 then: that answer is left to S3)."""
    if start >= total:
        return None
    return total - 1 if end is None else min(end, total - 1)


def parts(start: int, total: int, part: int = PART) -> Iterator[tuple[int, int]]:
    """The stream's parts from ``start``: (offset, length), aligned to ``start`` (rclone's own request boundary)."""
    offset = start
    while offset < total:
        length = min(part, total - offset)
        yield offset, length
        offset += length


def validator(etag: str | None, last_modified: str | None) -> tuple[str, str] | None:
    """The condition that keeps a stream's parts on the object version rclone started reading: ``If-Match`` its
    ETag (real S3 always has one), else ``If-Unmodified-Since`` its Last-Modified (a store that sends an empty ETag);
    None: no way to tell versions apart, so no read-ahead."""
    if etag and etag.strip('"'):
        return "If-Match", etag
    if last_modified:
        return "If-Unmodified-Since", last_modified
    return None


S = TypeVar("S")


@dataclass
class Ended(Generic[S]):
    """Where a GET of one object version ended, with what a continuation needs to answer without asking S3 first.

    A GET rclone was sent to S3 for (redirected) leaves only its end: ``total`` is None, and a stream for its
    continuation learns the object from its first part, as one for a large first GET does."""

    condition: tuple[str, str] | None  # header and value every part sends (``validator``)
    end: int  # exclusive: the first byte the next sequential request asks for
    total: int | None
    headers: list[tuple[str, str]]  # the object's headers, as S3 sent them on that GET (no Content-Range/Length)
    stream: S | None = None  # the read-ahead already running from ``end``, parked between rclone's requests
    at: float = field(default_factory=time.monotonic)


class Continuations(Generic[S]):
    """The ends of recent GETs by object path, so that a GET starting at one of them is known to be sequential.

    Bounded (oldest dropped) and short-lived; ``take`` removes what it returns, so a parked stream is handed to
    exactly one request. ``on_drop`` is called for a parked stream that is forgotten (expired or pushed out)."""

    def __init__(
        self,
        on_drop: Callable[[S], None],
        limit: int = REMEMBERED,
        ttl: float = REMEMBER_FOR,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._ends: OrderedDict[tuple[str, int], Ended[S]] = OrderedDict()
        self._on_drop = on_drop
        self._limit = limit
        self._ttl = ttl
        self._clock = clock

    def remember(self, path: str, ended: Ended[S]) -> None:
        ended.at = self._clock()
        key = (path, ended.end)
        old = self._ends.pop(key, None)
        if old is not None and old.stream is not None and old.stream is not ended.stream:
            self._on_drop(old.stream)
        self._ends[key] = ended
        while len(self._ends) > self._limit:
            self._forget(next(iter(self._ends)))

    def take(self, path: str, start: int) -> Ended[S] | None:
        """The GET of ``path`` that ended at ``start`` (None: not a continuation), removed from the table."""
        self.expire()
        return self._ends.pop((path, start), None) if start > 0 else None

    def expire(self) -> None:
        now = self._clock()
        while self._ends:
            key, oldest = next(iter(self._ends.items()))
            if now - oldest.at < self._ttl:
                return
            self._forget(key)

    def clear(self) -> None:
        while self._ends:
            self._forget(next(iter(self._ends)))

    def _forget(self, key: tuple[str, int]) -> None:
        ended = self._ends.pop(key)
        if ended.stream is not None:
            self._on_drop(ended.stream)


class Asked:
    """The ranges of each object rclone asked for lately, merged, so that a stream does not read ahead into bytes
    rclone already has or is fetching with another downloader.

    rclone stops a downloader that runs into bytes already in its cache (it skips 1 MiB, then stops: vfscache's
    ``maxSkipBytes``), so parts fetched past the start of such a range are never asked for. Bounded: at most
    ``limit`` objects (least recently asked dropped) of at most ``per_object`` ranges each; forgotten after ``ttl``
    (rclone's cache may have evicted them since: a stale range costs a paused read-ahead, not a wrong byte)."""

    def __init__(
        self,
        limit: int = REMEMBERED,
        per_object: int = 256,
        ttl: float = ASKED_FOR,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._ranges: OrderedDict[str, tuple[float, list[list[int]]]] = OrderedDict()
        self._limit, self._per_object, self._ttl, self._clock = limit, per_object, ttl, clock

    def add(self, path: str, start: int, end: int) -> None:
        """rclone asked for ``[start, end)`` of ``path``."""
        if end <= start:
            return
        _, ranges = self._ranges.pop(path, (0.0, []))
        i = bisect.bisect_left(ranges, start, key=itemgetter(0))
        if i and ranges[i - 1][1] >= start:  # touches the range before it
            i -= 1
        new, j = [start, end], i
        while j < len(ranges) and ranges[j][0] <= new[1]:  # swallow the ranges it touches
            new = [min(new[0], ranges[j][0]), max(new[1], ranges[j][1])]
            j += 1
        ranges[i:j] = [new]
        if len(ranges) > self._per_object:
            del ranges[0]
        self._ranges[path] = (self._clock(), ranges)
        while len(self._ranges) > self._limit:
            self._ranges.popitem(last=False)

    def barrier(self, path: str, pos: int) -> int | None:
        """The first byte past ``pos`` where a range rclone asked for starts: read-ahead from ``pos`` stops there
        (None: nothing asked for ahead)."""
        at, ranges = self._ranges.get(path, (0.0, []))
        if not ranges or self._clock() - at >= self._ttl:
            return None
        i = bisect.bisect_right(ranges, pos, key=itemgetter(0))
        return ranges[i][0] if i < len(ranges) else None

    def expire(self) -> None:
        now = self._clock()
        while self._ranges:
            path, (at, _) = next(iter(self._ranges.items()))
            if now - at < self._ttl:
                return
            del self._ranges[path]


class Nearness:
    """Whether S3 is next door lately (it answers a part's request fast), so that parts are fetched here only where
    that pays: the endpoint's bytes cross one more TCP hop, through Python, which costs CPU (measured on this
    project's 2-core runner: 0.8 CPU-s per GB, and a loopback read() 0.72-0.85x of rclone alone; docs/cold-path.md).

    A connection's rate cannot tell a near S3 from a far one here: parts in flight share the node's CPU with rclone
    and the reader, so on loopback a part came at 100-400 MB/s idle and 43-55 MB/s during a load (stop 23), as on a
    real link. The time to a part's first byte can: real S3 takes tens of ms (the lab's link: 30 ms), an S3 on the
    same host or rack well under ``near`` seconds, and at such a round trip one TCP connection is not what limits a
    node. Near: rclone is sent to S3 itself, and a large first GET still gets parts when no part was measured for
    ``probe_every`` seconds, so that a link that got slow is seen. A sample is one part's first try, from asking to
    its answer's headers; the latency is the median of the last ``keep`` (parts asked at once wait on each other on
    2 cores: medians of 2.2-8.4 ms on loopback), so that one fast answer from a far S3 does not end its read-ahead."""

    def __init__(
        self, near: float, probe_every: float = PROBE_EVERY, keep: int = 8, clock: Callable[[], float] = time.monotonic
    ):
        self.near, self._probe_every, self._clock = near, probe_every, clock
        self._samples: deque[float] = deque(maxlen=keep)
        self._probed = float("-inf")

    def record(self, seconds: float) -> None:
        """A part's request took ``seconds`` to its answer's headers; the next probe is due ``probe_every`` from now."""
        self._samples.append(seconds)
        self._probed = self._clock()

    @property
    def latency(self) -> float | None:
        """Seconds to first byte lately (None: not measured yet)."""
        return statistics.median(self._samples) if self._samples else None

    def is_near(self) -> bool:
        latency = self.latency
        return self.near > 0 and latency is not None and latency < self.near

    def probe(self) -> bool:
        """Whether a large first GET gets parts now: always where S3 is not known to be near, else when no part was
        measured for ``probe_every`` seconds (its parts measure the link again)."""
        if not self.is_near():
            return True
        now = self._clock()
        if now - self._probed < self._probe_every:
            return False
        self._probed = now
        return True
