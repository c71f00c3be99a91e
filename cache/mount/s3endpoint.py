"""The mount's S3 endpoint on 127.0.0.1: rclone talks to S3 through it, and sequential downloaders get read-ahead.

rclone reads a cold file with one connection at a time (docs/cold-path.md), which on a real S3 link (~90 MB/s per
connection) leaves a node's bandwidth unused, and its ``--vfs-read-chunk-streams`` ruins mmap loads. So the mount
points rclone's S3 remote here. Requests are signed again with the node's credentials (the AWS chain: IRSA's web
identity in a cluster, refreshed as it expires); a GET of an object is answered with a 307 to a presigned URL, so
rclone reads its bytes from S3 itself (a byte that crosses this process costs CPU and buys nothing), listings and
HEADs are passed through, and two kinds of plain ranged GET are answered here:

- one that continues where the previous GET of the same object ended (rclone's second request of a sequential
  downloader): from there the endpoint keeps ``depth`` ranged GETs of one part each in flight ahead of what rclone
  has consumed, across rclone's request boundaries, and answers from them in order;
- one larger than a part (rclone's first 16 MiB from any offset): its parts are fetched in parallel, within its
  range only, so nothing past what rclone asked for is fetched.

mount/readahead.py makes those decisions; parts are checked to be of one object version (ETag). Where S3 is next
door (its parts' first bytes come within ``near``: loopback, the same rack), one connection is not the limit and a
hop through here only costs CPU: continuations are sent to S3 too, and a large first GET gets parts only to measure
the link again now and then (readahead.Nearness).

What the mount guarantees holds through it:

- read-only: only GET and HEAD are passed on; anything else is refused with 405.
- bounded failure: each upstream try is bounded by rclone's own per-request timeout (``io_step``), a part is
  retried a few times from where it stopped, and a failure is passed to rclone the way S3 would show it (the
  upstream's own error answer, or a closed connection), so rclone's retries and ``--io-timeout`` bound apply.
- bounded memory: at most ``streams`` read-ahead streams of ``depth`` parts of ``PART`` bytes; beyond that,
  requests are passed through (one connection per downloader, as without the endpoint).
- only this pod reaches it: it listens on 127.0.0.1, in the DaemonSet pod's own network namespace; rclone signs
  with a placeholder key. A presigned URL it is sent to holds a signature for that one GET (and, with IRSA, the
  session token), valid ``PRESIGNED_FOR``; rclone's log lines that quote one are redacted (hf_cache.logs).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import boto3
import urllib3
from botocore.auth import UNSIGNED_PAYLOAD, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import get_cert_path
from prometheus_client import CollectorRegistry, Counter, Gauge

from hf_cache.mount import markers, readahead
from hf_cache.mount.readahead import Continuations, Ended
from hf_cache.units import MiB

log = logging.getLogger(__name__)
T = TypeVar("T")
Answer = tuple[tuple[str, str] | None, int, list[tuple[str, str]]]  # a part's validator, object size, headers

COPY = 1 * MiB  # bytes a stream's answer sends per call
# Bytes read from S3 per call, straight into their buffer: small enough that a first byte moves on soon after it
# arrives (mmap loads wait on first bytes; 9 ms at 15 MB/s), large enough to keep calls few (CPU: this box has 2 cores).
READ = 128 * 1024
# rclone stops reading a downloader's answer when the reader has what it wanted (mmap loads touch part of a file),
# and closes it later: what sits in the sockets' buffers by then was fetched for nothing. Directly from S3 that is
# rclone's receive buffer; through here our send buffer adds to it, so it is kept small (loopback needs no more):
# with the kernel's autotuned one, safe_open of a 1 GB model pulled 0.98 GB through here for 0.38 GB rclone read.
SEND_BUFFER = 256 * 1024  # the kernel doubles it
PART_TRIES = 3  # tries per part, each resuming where the last one stopped
POLL = 0.2  # seconds between looks at whether rclone is still there while a part is awaited
HANDOVER_WAIT = 3.0  # seconds a new request waits for the stream an abandoned request of rclone's still holds
RETRY_PAUSE = 0.2  # seconds before the 2nd try of a part; doubles
# Headers of rclone's request passed to S3: the ones that change the answer. Its signature headers are its own
# (a placeholder key), the SDK's bookkeeping headers mean nothing to S3.
FORWARDED = ("range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "user-agent")
UNSIGNED = {"x-amz-date", "x-amz-content-sha256", "x-amz-security-token"}
# Seconds a redirect's URL is valid. rclone follows it at once (a retry asks here again), but S3 checks it against
# its own clock: 15 minutes is the skew it tolerates for header-signed requests, so a node's clock off by that much
# fails the same way with or without the endpoint.
PRESIGNED_FOR = 900
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authenticate"}
OWN_HEADERS = {"content-range", "content-length", "date"}  # set per answer when a stream serves a continuation


class UpstreamError(Exception):
    """S3 did not give a part: its answer (``status``; 0: no answer) is the reason, for the log and the metrics."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class Upstream:
    """Signed requests to the real S3: the endpoint rclone would have used, with the node's credentials."""

    def __init__(self, endpoint_url: str | None, region: str | None, timeout: float, pool_size: int):
        session = boto3.session.Session(region_name=region or None)
        self.region = region or session.region_name or "us-east-1"
        self.credentials = session.get_credentials()  # refreshable (IRSA): frozen per request
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self.http = urllib3.PoolManager(
            num_pools=4,
            maxsize=pool_size,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            ca_certs=get_cert_path(True),
        )

    def url(self, path: str, query: str) -> str:
        """``path`` is ``/bucket/key`` decoded; S3 signs the path encoded once, the way ``quote`` does it here."""
        bucket, _, key = path.lstrip("/").partition("/")
        if self.endpoint_url:
            base, rest = self.endpoint_url, "/" + bucket + ("/" + key if key or path.endswith("/") else "")
        elif "." not in bucket and bucket == bucket.lower():
            base, rest = f"https://{bucket}.s3.{self.region}.amazonaws.com", "/" + key
        else:  # a dotted bucket name does not fit the wildcard certificate: path style
            base, rest = f"https://s3.{self.region}.amazonaws.com", "/" + bucket + "/" + key
        return base + quote(rest, safe="/~") + (f"?{query}" if query else "")

    def send(self, method: str, path: str, query: str, headers: dict[str, str]) -> urllib3.HTTPResponse:
        return self.request(method, *self.sign(method, path, query, headers))

    def sign(self, method: str, path: str, query: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
        """The request's URL and headers, signed with the node's credentials (none for an anonymous bucket)."""
        request = AWSRequest(method=method, url=self.url(path, query), headers=headers)
        if self.credentials is not None:
            S3SigV4Auth(self.credentials.get_frozen_credentials(), "s3", self.region).add_auth(request)
        return str(request.url), dict(request.headers.items())

    def request(self, method: str, url: str, headers: dict[str, str]) -> urllib3.HTTPResponse:
        response: urllib3.HTTPResponse = self.http.request(
            method, url, headers=headers, preload_content=False, decode_content=False, redirect=False
        )
        return response

    def presign(self, path: str, query: str, headers: dict[str, str]) -> str | None:
        """A URL that lets rclone GET ``path`` from S3 itself for ``PRESIGNED_FOR`` seconds, sending ``headers`` (its
        own ``x-amz-*`` headers, which S3 refuses unsigned); None without credentials (an anonymous bucket)."""
        if self.credentials is None:
            return None
        request = AWSRequest(method="GET", url=self.url(path, query), headers=headers)
        at = next((v for k, v in headers.items() if k.lower() == "x-amz-date" and _AMZ_DATE.fullmatch(v)), None)
        _Presigner(self.credentials.get_frozen_credentials(), self.region, at).add_auth(request)
        return str(request.url)


class _Presigner(S3SigV4QueryAuth):
    """botocore's presigned-URL signer, fitted to a request rclone already made: signed at rclone's own X-Amz-Date
    (the redirected request carries that header, and a server may take its date from it: ``rclone serve s3`` does),
    with the payload UNSIGNED-PAYLOAD, as for any query-signed request, although it carries X-Amz-Content-Sha256
    (botocore would put that header's value there)."""

    def __init__(self, credentials: Any, region: str, at: str | None):
        super().__init__(credentials, "s3", region, expires=PRESIGNED_FOR)
        self._at = at

    def _modify_request_before_signing(self, request: AWSRequest) -> None:
        if self._at is not None:
            request.context["timestamp"] = self._at
        super()._modify_request_before_signing(request)  # type: ignore[misc]

    def canonical_request(self, request: AWSRequest) -> str:
        lines = str(super().canonical_request(request)).split("\n")
        lines[-1] = UNSIGNED_PAYLOAD
        return "\n".join(lines)


def canonical_query(query: str) -> str:
    """The query as S3 signs it: parameters sorted, each encoded once (rclone's own encoding may differ)."""
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)


class Part:
    """One ranged GET of a stream, filled by a fetch thread while the request handler sends what is there."""

    def __init__(self, offset: int, length: int):
        self.offset, self.length = offset, length
        self.buf = bytearray(length)
        self.filled = 0
        self.error: UpstreamError | None = None
        self.cancelled = False
        self.answer: tuple[tuple[str, str] | None, int, list[tuple[str, str]]] | None = (
            None  # validator, total, headers
        )
        self._cond = threading.Condition()

    def wait(self, rel: int, timeout: float) -> int:
        """Bytes filled once more than ``rel`` are (raises the fetch's error; 0 when ``timeout`` passed first)."""
        with self._cond:
            self._cond.wait_for(lambda: self.filled > rel or self.error is not None, timeout)
            if self.filled > rel:
                return self.filled
            if self.error is not None:
                raise self.error
            return 0

    def wait_answer(self, timeout: float) -> bool:
        """Whether S3 answered this part (headers) within ``timeout``; raises the fetch's error."""
        with self._cond:
            self._cond.wait_for(lambda: self.answer is not None or self.error is not None, timeout)
            if self.answer is not None:
                return True
            if self.error is not None:
                raise self.error
            return False

    def answered(self, answer: Answer) -> None:
        with self._cond:
            self.answer = answer
            self._cond.notify_all()

    def grew(self, n: int) -> None:
        """``n`` more bytes were read into ``buf`` at ``filled``."""
        with self._cond:
            self.filled += n
            self._cond.notify_all()

    def fail(self, error: UpstreamError) -> None:
        with self._cond:
            self.error = error
            self._cond.notify_all()


class Stream:
    """Parts of one object in flight from ``pos`` up to ``limit``, consumed in order.

    A stream starts for a large ranged GET (its parts cover that range only, fetched in parallel) or for a
    continuation (``extend``: from then on parts run ahead to the object's end, ``depth`` at a time). Until the
    first answer is known, ``condition`` is None and each part's answer is checked against the first one's
    validator instead."""

    def __init__(
        self, endpoint: S3Endpoint, path: str, query: str, condition: tuple[str, str] | None, start: int, limit: int
    ):
        self.endpoint, self.path, self.query, self.condition = endpoint, path, query, condition
        self.pos = self.first = start
        self._next = start  # the next part's offset
        self.limit = limit
        self._parts: deque[Part] = deque()
        self._done: Part | None = None  # the last part consumed: rclone may not have read its end (see rewind)
        self.serving = False  # a request is answering from it (guarded by the endpoint's lock)
        self.yield_at: int | None = None  # a new request of rclone's wants it from here: let go
        self.conn: socket.socket | None = None  # rclone's connection it is answering on, while serving
        self.reads_on = False  # a continuation's that does not know the object yet: past rclone's range once it does
        self.asked_end: int | None = None  # the end of the range rclone asked for last (exclusive)
        self._top_up()

    def extend(self, limit: int) -> None:
        self.limit = limit
        self._top_up()

    def _top_up(self) -> None:
        """Keep ``depth`` parts in flight, up to where rclone already asked for bytes (with the endpoint's lock)."""
        room = max(0, self.endpoint.depth - len(self._parts))
        barrier = self.endpoint._asked.barrier(self.path, self.pos)
        limit = self._plan_end()  # a median of the link's samples: asked once
        if barrier is not None:
            limit = min(limit, barrier)
        for offset, length in itertools.islice(readahead.parts(self._next, limit), room):
            part = Part(offset, length)
            self._next = offset + length
            self._parts.append(part)
            self.endpoint.pool.submit(self.endpoint.fetch, self, part)

    def first_answer(self, wait: float) -> Answer | None:
        """The first part's validator, object size and headers once it answered (None: not within ``wait``)."""
        part = self._parts[0]
        return part.answer if part.wait_answer(wait) else None

    def _plan_end(self) -> int:
        """Where parts stop: the stream's limit; where S3 turned out near, the end of rclone's request (its bytes are
        owed; past it, rclone is sent to S3 itself)."""
        if self.asked_end is not None and self.endpoint.link.is_near():
            return min(self.limit, self.asked_end)
        return self.limit

    def exhausted(self) -> bool:
        """Nothing in flight or planned past ``pos``: parked, it would hold a slot for nothing."""
        return not self._parts and self._next >= self._plan_end()

    def next_bytes(self, limit: int, wait: float) -> memoryview | None:
        """Up to ``limit`` bytes from ``pos`` (None: none arrived within ``wait``); raises the part's error."""
        part = self._parts[0]
        rel = self.pos - part.offset
        filled = part.wait(rel, wait)
        if filled == 0:
            return None
        if part.answer is not None and part.answer[0] != self.condition:
            raise UpstreamError(f"{self.path} changed while it was read (validator {part.answer[0]})")
        return memoryview(part.buf)[rel : min(filled, rel + limit)]

    def advance(self, sent: int) -> None:
        with self.endpoint._lock:
            self.pos += sent
            part = self._parts[0]
            if self.pos >= part.offset + part.length:
                self._done = self._parts.popleft()
                self._top_up()

    def trim(self, at: int) -> None:
        """Stop reading ahead at ``at``, where another downloader of rclone's starts (with the endpoint's lock):
        rclone stops this one when it gets there, so parts from there on would be fetched for nothing."""
        while len(self._parts) > 1 and self._parts[-1].offset >= at:
            part = self._parts.pop()
            part.cancelled = True
            self._next = part.offset

    def covers(self, start: int) -> bool:
        """Whether the stream can answer from ``start``, within the part being sent or the one before it (with the
        endpoint's lock). rclone gives up on a slow answer and asks again from the byte it got to: behind ``pos``
        when bytes sent sat unread in the sockets' buffers, ahead of it when it gave up while a chunk was being
        written (``pos`` moves once a write returns)."""
        if start == self.pos:
            return True
        held = [p for p in (self._done, self._parts[0] if self._parts else None) if p is not None]
        return any(p.offset <= start < p.offset + p.length for p in held)

    def rewind(self, start: int) -> None:
        """Answer from ``start`` on (``covers(start)`` must hold)."""
        if self._parts and self._parts[0].offset <= start:
            self.pos = start
            return
        if self._done is not None and start != self.pos:
            self._parts.appendleft(self._done)
            self._done = None
        self.pos = start

    def unsent(self) -> int:
        """Bytes fetched ahead that rclone was not sent (yet): wasted if the stream is dropped now."""
        return sum(p.filled for p in self._parts) - (self.pos - self._parts[0].offset if self._parts else 0)

    def close(self) -> None:
        for part in self._parts:
            part.cancelled = True
        self._parts.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as rclone expects of S3
    timeout = 300  # seconds an idle keep-alive connection keeps its thread (rclone closes idle ones after 90 s)
    server: _Server

    def setup(self) -> None:
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        # headers and body go out as separate writes: with Nagle on, the body waited for rclone's delayed ACK
        # (measured: +40 ms per request, a listing plus a HEAD took 124 ms through here vs 83 ms direct)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def do_GET(self) -> None:
        self.server.endpoint.handle(self, "GET")

    def do_HEAD(self) -> None:
        self.server.endpoint.handle(self, "HEAD")

    def _refuse(self) -> None:
        self.server.endpoint.refuse(self, 405, "MethodNotAllowed", "the mount is read-only")

    do_PUT = do_POST = do_DELETE = do_PATCH = _refuse

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("s3 endpoint: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    endpoint: S3Endpoint

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection cut by either side is how failures travel here (the stdlib would print a traceback)."""
        log.debug("s3 endpoint: connection ended", exc_info=True)


class S3Endpoint:
    """The HTTP server rclone's S3 remote points at; ``url`` once started."""

    def __init__(
        self,
        endpoint_url: str | None,
        region: str | None,
        io_step: float,
        depth: int,
        streams: int,
        registry: CollectorRegistry | None = None,
        mountpoint: Path | None = None,
        near: float = 0.0,
    ):
        """``mountpoint``: where to keep the marker that tells ``hf-cache warm`` this mount reads ahead. ``near``:
        seconds to a part's first byte under which S3 is next door and rclone is sent to it (readahead.Nearness);
        0: always read ahead."""
        self.depth, self.streams, self.io_step = depth, streams, io_step
        self.link = readahead.Nearness(near)
        self._marker = (
            markers.Keeper(mountpoint, markers.READ_AHEAD, {"parts": depth, "streams": streams})
            if mountpoint is not None
            else None
        )
        self.upstream = Upstream(endpoint_url, region, io_step, pool_size=max(16, depth * streams + 16))
        self.pool = ThreadPoolExecutor(max(1, depth * streams), thread_name_prefix="s3-readahead")
        self._lock = threading.Lock()
        self._live = 0  # streams serving or parked (each holds at most depth parts)
        self._handed = threading.Condition(self._lock)  # a serving stream was let go
        self._by_path: dict[str, set[Stream]] = {}  # live streams by object
        self._ends: Continuations[Stream] = Continuations(self._drop)
        self._asked = readahead.Asked()
        r = registry if registry is not None else CollectorRegistry()
        self.m_streams = Counter("hfcache_readahead_streams", "Sequential downloaders given read-ahead", registry=r)
        self.m_live = Gauge("hfcache_readahead_streams_live", "Read-ahead streams serving or parked", registry=r)
        self.m_bytes = Counter("hfcache_readahead_fetched_bytes", "Bytes read-ahead parts fetched from S3", registry=r)
        self.m_passed = Counter(
            "hfcache_s3_passed_bytes", "Bytes of S3 answers passed through as they came", registry=r
        )
        self.m_unsent = Counter(
            "hfcache_readahead_unsent_bytes", "Bytes read-ahead fetched that rclone never asked for", registry=r
        )
        self.m_redirected = Counter(
            "hfcache_s3_redirected_requests", "GETs rclone was sent to S3 for itself (no read-ahead)", registry=r
        )
        self.m_latency = Gauge(
            "hfcache_readahead_first_byte_seconds", "Seconds S3 took to answer a part's request lately", registry=r
        )
        self.m_retries = Counter("hfcache_readahead_part_retries", "Part fetches tried again", registry=r)
        self.m_failed = Counter("hfcache_readahead_failed_streams", "Streams dropped on an S3 failure", registry=r)
        self._server: _Server | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self, port: int = 0) -> str:
        """Listen on ``port`` (0: any free one; OSError when it is taken) and serve."""
        server = _Server(("127.0.0.1", port), _Handler)
        server.endpoint = self
        self._server = server
        threading.Thread(target=server.serve_forever, name="s3-endpoint", daemon=True).start()
        threading.Thread(target=self._expire_loop, name="s3-endpoint-expiry", daemon=True).start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        log.info("S3 endpoint for rclone at %s (read-ahead: %d streams x %d parts)", self.url, self.streams, self.depth)
        return self.url

    def close(self) -> None:
        if self._marker is not None:
            self._marker.remove()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            self._ends.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _expire_loop(self) -> None:
        while self._server is not None:
            if self._marker is not None:
                self._marker.touch()
            time.sleep(1.0)
            with self._lock:
                self._ends.expire()
                self._asked.expire()

    def _drop(self, stream: Stream) -> None:
        """Called with ``_lock`` held."""
        unsent = stream.unsent()
        self.m_unsent.inc(unsent)
        log.debug(
            "read-ahead stream of %s dropped: from %d, rclone got to %d, planned to %d, %d bytes unsent",
            stream.path,
            stream.first,
            stream.pos,
            stream._next,
            unsent,
        )
        stream.close()
        self._by_path.get(stream.path, set()).discard(stream)
        if not self._by_path.get(stream.path, True):
            del self._by_path[stream.path]
        self._live -= 1
        self.m_live.set(self._live)

    def _new_stream(
        self, path: str, query: str, condition: tuple[str, str] | None, start: int, limit: int
    ) -> Stream | None:
        """A stream if a slot is free (with ``_lock`` held)."""
        if not self._slot():
            return None
        stream = Stream(self, path, query, condition, start, limit)
        self._by_path.setdefault(path, set()).add(stream)
        return stream

    def _claim(self, path: str, start: int) -> tuple[Ended[Stream] | None, Stream | None]:
        """The parked stream rclone's request at ``start`` continues, or only where a GET ended (with ``_lock``)."""
        ended = self._ends.take(path, start)
        if ended is not None:
            if ended.stream is not None and ended.total is not None:
                ended.stream.extend(ended.total)
            return ended, ended.stream
        for stream in list(self._by_path.get(path, ())):  # parked a little past or short of where rclone is
            if not stream.serving and stream.pos != start and stream.covers(start):
                parked = self._ends.take(path, stream.pos)
                if parked is not None and parked.stream is stream and parked.total is not None:
                    stream.rewind(start)
                    stream.extend(parked.total)
                    return parked, stream
                if parked is not None:
                    self._ends.remember(path, parked)
        return None, None

    # -- requests --------------------------------------------------------------------------------------------
    def handle(self, h: _Handler, method: str) -> None:
        split = urlsplit(h.path)
        path, query = unquote(split.path), canonical_query(split.query)
        params = {k for k, _ in parse_qsl(split.query, keep_blank_values=True)}
        wanted = readahead.parse_range(h.headers.get("Range")) if method == "GET" else None
        if wanted is not None:
            with self._lock:
                self._asked.add(path, wanted[0], wanted[0] + 1 if wanted[1] is None else wanted[1] + 1)
                for other in self._by_path.get(path, ()):
                    if other.pos < wanted[0] and not _asked_again(other, wanted[0]):
                        other.trim(wanted[0])
        if wanted is not None and params <= readahead.PLAIN_GET_PARAMS and h.headers.get("If-Match") is None:
            start, end = wanted
            with self._lock:
                ended, stream = self._claim(path, start)
                if ended is None:
                    # rclone gave up on a slow answer and asks again: the stream still serving that answer is
                    # handed over instead of a second one fetching the same parts
                    busy = next((s for s in self._by_path.get(path, ()) if s.serving and _asked_again(s, start)), None)
                    if busy is not None:
                        busy.yield_at = start
                        self._handed.wait_for(lambda: not busy.serving, timeout=min(HANDOVER_WAIT, self.io_step / 2))
                        ended, stream = self._claim(path, start)
                if stream is None and ended is not None and not self.link.is_near():  # a continuation: read ahead
                    if ended.total is not None:
                        stream = self._new_stream(path, query, ended.condition, start, ended.total)
                    else:  # it continues a redirected GET: the first part says what the object is
                        stream = self._new_stream(
                            path, query, None, start, start + readahead.PART if end is None else end + 1
                        )
                        ended = None
                        if stream is not None:
                            stream.reads_on = True
                elif (
                    stream is None
                    and ended is None
                    and end is not None
                    and end + 1 - start > readahead.PART
                    and self.link.probe()
                ):
                    stream = self._new_stream(path, query, None, start, end + 1)  # parts in parallel
                if stream is not None:
                    stream.serving, stream.yield_at, stream.conn = True, None, h.connection
            if stream is not None:
                self._serve(h, path, wanted, ended, stream)
                return
        if method == "GET" and params <= readahead.PLAIN_GET_PARAMS and self._redirect(h, path, query, wanted):
            return
        self._pass(h, method, path, query)

    def _redirect(self, h: _Handler, path: str, query: str, wanted: tuple[int, int | None] | None) -> bool:
        """Send rclone to S3 for this GET itself (a presigned URL), so its bytes do not cross this process: what it
        passes through only costs CPU (measured: 0.84-0.93x of rclone alone on loopback). False: no credentials to
        presign with (an anonymous bucket): pass it."""
        url = self.upstream.presign(path, query, {k: v for k, v in h.headers.items() if k.lower().startswith("x-amz-")})
        if url is None:
            return False
        h.send_response_only(307)
        h.send_header("Location", url)
        h.send_header("Content-Length", "0")
        h.end_headers()
        self.m_redirected.inc()
        if wanted is not None and wanted[1] is not None:  # its end, to know rclone's next GET as a continuation
            with self._lock:
                self._ends.remember(path, Ended(None, wanted[1] + 1, None, []))
        return True

    def _slot(self) -> bool:
        """Take a stream slot if one is free (with ``_lock`` held)."""
        if self._live >= self.streams:
            return False
        self._live += 1
        self.m_live.set(self._live)
        self.m_streams.inc()
        return True

    def refuse(self, h: _Handler, status: int, code: str, message: str) -> None:
        body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
        h.close_connection = True  # its body, if any, is left unread
        h.send_response_only(status)
        h.send_header("Content-Type", "application/xml")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _pass(self, h: _Handler, method: str, path: str, query: str) -> None:
        """Ask S3 and answer with what it said; a GET's end is remembered for a continuation."""
        headers = {k: v for k, v in h.headers.items() if k.lower() in FORWARDED}
        headers.update(
            (k, v) for k, v in h.headers.items() if k.lower().startswith("x-amz-") and k.lower() not in UNSIGNED
        )
        try:
            response = self.upstream.send(method, path, query, headers)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            log.info("S3 did not answer %s %s: %s", method, path, exc)
            h.close_connection = True  # no answer: rclone sees what it would have seen from S3 itself
            return
        complete = False
        try:
            length = response.headers.get("Content-Length")
            body = b""
            if method == "HEAD" or response.status in (204, 304):
                length = length if method == "HEAD" else None
            elif length is None:  # a listing sent chunked: read it whole, answer with a length
                body = response.read()
                length = str(len(body))
            h.send_response_only(response.status)
            for name, value in response.headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    h.send_header(name, value)
            if length is not None:
                h.send_header("Content-Length", length)
            h.end_headers()
            if body:
                h.wfile.write(body)
            elif method == "GET" and length is not None:
                self._copy(h, response, int(length))
                got = readahead.parse_content_range(response.headers.get("Content-Range"))
                condition = readahead.validator(response.headers.get("ETag"), response.headers.get("Last-Modified"))
                if response.status in (200, 206) and got is not None and condition is not None:
                    kept = [(k, v) for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP | OWN_HEADERS]
                    with self._lock:
                        self._ends.remember(path, Ended(condition, got[1] + 1, got[2], kept))
            complete = True
        finally:
            _finish(response, complete)

    def _copy(self, h: _Handler, response: urllib3.HTTPResponse, length: int) -> None:
        buf = memoryview(bytearray(min(READ, length)))
        left = length
        while left > 0:
            try:
                n = _read_into(response, buf[: min(READ, left)])
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                n = 0
                log.info("S3 answer broke off: %s", exc)
            if not n:  # short: closing tells rclone, which retries the rest
                h.close_connection = True
                raise ConnectionAbortedError("S3 answer ended early")
            h.connection.sendall(buf[:n])
            self.m_passed.inc(n)
            left -= n

    def _serve(
        self, h: _Handler, path: str, wanted: tuple[int, int | None], ended: Ended[Stream] | None, s: Stream
    ) -> None:
        """Answer from the stream's parts, then park it for rclone's next request. Whatever happens the stream ends
        up parked or dropped (it holds a slot and up to ``depth`` parts); if it failed before answering, S3 answers
        the request itself (its own error, or a failure the way rclone would have seen it)."""
        failure: BaseException | None = None
        started, gone = False, False
        last: int | None = None
        try:
            if ended is None:  # the first part's answer says what the object is
                answer = self._wait(h, s, lambda: s.first_answer(POLL))
                if answer is None:
                    gone = True
                    return
                condition, total, headers = answer
                if condition is None:
                    failure = UpstreamError("no ETag or Last-Modified to keep parts on one version")
                    return
                s.condition = condition
                ended = Ended(condition, wanted[0], total, headers)
                if s.reads_on:
                    with self._lock:
                        s.extend(total)
            assert ended.total is not None  # (known from the first answer, or remembered with it)
            last = readahead.clamp(wanted[0], wanted[1], ended.total)
            if last is None:  # past the end: S3's own 416
                failure = UpstreamError("range past the end")
                return
            with self._lock:
                s.asked_end = last + 1
                s.extend(s.limit)  # parts up to it, if S3 turned out near since they were planned
            chunk = self._wait(h, s, lambda: s.next_bytes(min(COPY, last + 1 - s.pos), POLL))
            if chunk is None:
                gone = True
                return
            started = True
            h.send_response_only(206)
            for name, value in ended.headers:
                h.send_header(name, value)
            h.send_header("Content-Range", f"bytes {wanted[0]}-{last}/{ended.total}")
            h.send_header("Content-Length", str(last + 1 - wanted[0]))
            h.end_headers()
            while chunk is not None:
                h.wfile.write(chunk)
                s.advance(len(chunk))
                if s.pos > last:
                    return
                chunk = self._wait(h, s, lambda: s.next_bytes(min(COPY, last + 1 - s.pos), POLL))
            gone = True
        except OSError:  # rclone hung up (its read timeout, or it moved on): it may come back for the rest
            gone = True
        except UpstreamError as exc:  # a part failed for good
            failure = exc
        finally:
            if gone or (started and failure is not None):
                h.close_connection = True  # rclone sees a cut answer, as from S3, and asks again
            with self._lock:
                s.serving, s.conn = False, None
                if failure is None and ended is not None:
                    keep = None if s.exhausted() else s
                    self._ends.remember(path, Ended(ended.condition, s.pos, ended.total, ended.headers, keep))
                    if keep is None:
                        self._drop(s)
                else:
                    self._drop(s)
                self._handed.notify_all()
            if failure is not None and started:
                log.info("read-ahead of %s stopped at byte %d: %s", s.path, s.pos, failure)
                self.m_failed.inc()
        if failure is not None and not started:
            self.m_failed.inc()
            self._pass(h, "GET", path, s.query)

    def _wait(self, h: _Handler, s: Stream, ready: Callable[[], T | None]) -> T | None:
        """``ready()``'s answer, asked again as long as rclone stays connected and no newer request of rclone's
        wants the stream (None then)."""
        while True:
            if s.yield_at is not None:
                return None
            got = ready()
            if got is not None:
                return got
            if _gone(h.connection):
                return None

    # -- parts -----------------------------------------------------------------------------------------------
    def fetch(self, s: Stream, part: Part) -> None:
        """Fill ``part``, trying again from where a try stopped; runs on the pool."""
        pause = RETRY_PAUSE
        for attempt in range(PART_TRIES):
            if part.cancelled:
                return
            if attempt:
                self.m_retries.inc()
                time.sleep(pause)
                pause *= 2
            start, last = part.offset + part.filled, part.offset + part.length - 1
            headers = {"Range": f"bytes={start}-{last}"}
            if s.condition is not None:
                headers[s.condition[0]] = s.condition[1]
            try:
                signed = self.upstream.sign("GET", s.path, s.query, headers)
                asked = time.monotonic()
                response = self.upstream.request("GET", *signed)
                if attempt == 0 and response.status in (200, 206):
                    with self._lock:
                        self.link.record(time.monotonic() - asked)
                        self.m_latency.set(self.link.latency or 0.0)
                complete = False
                try:
                    got = readahead.parse_content_range(response.headers.get("Content-Range"))
                    if response.status not in (200, 206) or got is None or got[0] != start:
                        error = UpstreamError(
                            f"S3 answered {response.status} for bytes {start}-{last}", response.status
                        )
                        if 400 <= response.status < 500 and response.status not in (408, 429):
                            part.fail(error)  # the object changed or went away: trying again cannot help
                            return
                        raise error
                    validator = readahead.validator(response.headers.get("ETag"), response.headers.get("Last-Modified"))
                    kept = [(k, v) for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP | OWN_HEADERS]
                    part.length = min(part.length, got[2] - part.offset)  # planned before the size was known
                    part.answered((validator, got[2], kept))
                    view = memoryview(part.buf)
                    while part.filled < part.length and not part.cancelled:
                        n = _read_into(response, view[part.filled : min(part.length, part.filled + READ)])
                        if not n:
                            raise UpstreamError("S3 answer ended early")
                        self.m_bytes.inc(n)  # counted before the reader can see the bytes
                        part.grew(n)
                    complete = part.filled == part.length
                finally:
                    _finish(response, complete)
                return
            except (UpstreamError, urllib3.exceptions.HTTPError, OSError) as exc:
                if attempt == PART_TRIES - 1:
                    part.fail(exc if isinstance(exc, UpstreamError) else UpstreamError(f"S3 did not answer: {exc}"))


def _read_into(response: urllib3.HTTPResponse, view: memoryview) -> int:
    """Fill ``view`` from the answer's body (fewer bytes only at its end), with no copy on the way: bodies are read
    undecoded, so http.client's ``readinto`` under urllib3's response gives the same bytes as ``read``."""
    fp = getattr(response, "_fp", None)
    if fp is not None and hasattr(fp, "readinto"):
        n: int = fp.readinto(view)
        return n
    data: bytes = response.read(len(view))
    view[: len(data)] = data
    return len(data)


def _finish(response: urllib3.HTTPResponse, complete: bool) -> None:
    """Back to the pool when its body was read to the end; a connection with unread bytes is closed instead."""
    if not complete:
        response.close()
    response.release_conn()


def _asked_again(s: Stream, start: int) -> bool:
    """Whether a GET from ``start`` is rclone asking again for what ``s`` serves it (with the endpoint's lock): it
    starts where ``s`` can answer from, and the request ``s`` was answering was given up (its connection closed).
    A downloader that only paused (the reader moved elsewhere: mmap loads) keeps its connection open: a GET inside
    its part is then another downloader's, not to wait for (measured: rclone timed out twice waiting, 5 s a load)."""
    return s.covers(start) and (s.conn is None or _gone(s.conn))


def _gone(sock: socket.socket) -> bool:
    """Whether the client closed its side (readable with nothing to read); a request it pipelined counts as there."""
    with contextlib.suppress(OSError, ValueError):
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    return True
