"""An S3-like network link on loopback: a TCP proxy in front of an S3 server.

Loopback S3 carries gigabytes per second on one connection and answers instantly, so it hides what makes real S3
slow for a naive reader: each connection gives roughly 90 MB/s and each request waits tens of milliseconds for
its first byte. Readers that are fast against S3 keep many ranged GETs in flight; on loopback that difference is
invisible. This proxy puts it back, per connection, and can inject the faults real S3 shows (503 SlowDown, 500,
connection resets, stalls) at a rate, so tests and benchmarks see the behaviour a node sees.

Latency is added to every HTTP request on a keep-alive connection (the request is held before it is forwarded,
so its first response byte comes ``latency_s`` later), not only to the TCP connect. The proxy counts the bytes it
carries in each direction, which is what a node pays for.

    python3 -m hf_cache.lab.s3link --upstream http://127.0.0.1:9000 [--rate-mb 90] [--latency-ms 30]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

CHUNK = 256 * 1024
SEND_BUFFER = 256 * 1024  # the kernel doubles it
MAX_HEADER = 64 * 1024


@dataclass(frozen=True)
class LinkParams:
    """What the link does to each connection. Defaults are close to one connection to real S3 in-region."""

    rate_mb: float = 90.0  # MB/s (1e6 bytes) per connection and direction; 0 = uncapped
    latency_s: float = 0.030  # added before each request is forwarded (time to first byte)
    error_rate: float = 0.0  # share of requests answered 503 SlowDown / 500 InternalError (then closed)
    reset_rate: float = 0.0  # share of requests answered with a TCP reset
    stall_rate: float = 0.0  # share of requests held for stall_s before being forwarded
    stall_s: float = 30.0
    seed: int | None = None

    def describe(self) -> str:
        rate = "uncapped" if self.rate_mb <= 0 else f"{self.rate_mb:g} MB/s per connection"
        faults = (
            f"faults: {self.error_rate:.1%} 5xx, {self.reset_rate:.1%} resets, "
            f"{self.stall_rate:.1%} stalls of {self.stall_s:g}s"
            if self.error_rate or self.reset_rate or self.stall_rate
            else "no faults"
        )
        return f"S3-like link: {rate}, +{self.latency_s * 1000:g} ms per request, {faults}"


@dataclass
class LinkStats:
    connections: int = 0
    open: int = 0  # client connections open now
    peak_open: int = 0  # most client connections open at once: how many streams a client kept in flight
    requests: int = 0
    bytes_down: int = 0  # server -> client, headers included
    bytes_up: int = 0  # client -> server
    errors: int = 0
    resets: int = 0
    stalls: int = 0
    range_starts: list[int] = field(default_factory=list)  # first byte of each ranged GET, in arrival order
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def opened(self, n: int) -> None:
        with self.lock:
            self.open += n
            self.peak_open = max(self.peak_open, self.open)

    def ranged(self, start: int) -> None:
        with self.lock:
            self.range_starts.append(start)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {k: v for k, v in vars(self).items() if isinstance(v, int)}


class Throttle:
    """A per-connection pacing clock: bytes go out no faster than ``rate`` bytes/s, with no credit saved while idle."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.next_at = 0.0

    def pace(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        if self.next_at > now:
            time.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = now + n / self.rate


class S3Link:
    """A running link: ``endpoint`` is the URL clients use instead of the upstream's."""

    def __init__(self, upstream: str, params: LinkParams | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.params = params or LinkParams()
        self.stats = LinkStats()
        self._rng = random.Random(self.params.seed)
        self._rng_lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.listen(256)
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._closing = threading.Event()
        self._socks: set[socket.socket] = set()
        self._socks_lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="s3link-accept", daemon=True)
        self._thread.start()

    def __enter__(self) -> S3Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_stats(self) -> None:
        self.stats = LinkStats()

    def stop(self) -> None:
        self._closing.set()
        _close(self._listener)  # shutdown() wakes the blocked accept(); close() alone does not
        with self._socks_lock:
            socks = list(self._socks)
        for s in socks:
            _close(s)
        self._thread.join(timeout=5)

    def _track(self, s: socket.socket) -> None:
        with self._socks_lock:
            self._socks.add(s)

    def _untrack(self, s: socket.socket) -> None:
        with self._socks_lock:
            self._socks.discard(s)
        _close(s)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.stats.add(connections=1)
            threading.Thread(target=self._serve, args=(client,), name="s3link-conn", daemon=True).start()

    def _fault(self) -> str | None:
        p = self.params
        with self._rng_lock:
            x = self._rng.random()
        if x < p.error_rate:
            return "error"
        if x < p.error_rate + p.reset_rate:
            return "reset"
        if x < p.error_rate + p.reset_rate + p.stall_rate:
            return "stall"
        return None

    def _serve(self, client: socket.socket) -> None:
        """Carry one client connection: requests up (parsed, delayed, maybe faulted), responses down (paced)."""
        self._track(client)
        stats = self.stats
        stats.opened(1)
        upstream: socket.socket | None = None
        try:
            upstream = socket.create_connection(self.upstream)
            self._track(upstream)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # bytes_down counts what enters the client's socket: keep our side's send queue small (as on a real
            # path, where it is about one bandwidth-delay product), so bytes the client never reads are not counted
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            down = threading.Thread(target=self._pump_down, args=(upstream, client), name="s3link-down", daemon=True)
            down.start()
            # with a buffer size, makefile("rb") is a BufferedReader; typeshed only says so for a literal size
            reader = cast(io.BufferedReader, client.makefile("rb", buffering=CHUNK))
            up = Throttle(self.params.rate_mb * 1e6)
            while not self._closing.is_set():
                head = _read_head(reader)
                if head is None:
                    return
                self.stats.add(requests=1)
                rng = _header(head, b"range")
                if rng and rng.startswith(b"bytes=") and rng[6:].split(b"-")[0].isdigit():
                    self.stats.ranged(int(rng[6:].split(b"-")[0]))
                fault = self._fault()
                if fault == "reset":
                    self.stats.add(resets=1)
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if fault == "error":
                    self.stats.add(errors=1)
                    with contextlib.suppress(OSError):
                        client.sendall(_error_response(self._rng.random() < 0.5))
                    return
                if fault == "stall":
                    self.stats.add(stalls=1)
                    if self._closing.wait(self.params.stall_s):
                        return
                time.sleep(self.params.latency_s)
                _send_paced(upstream, head, up)
                self.stats.add(bytes_up=len(head))
                for piece in _body(reader, head):
                    _send_paced(upstream, piece, up)
                    self.stats.add(bytes_up=len(piece))
        except OSError:
            return
        finally:
            stats.opened(-1)
            self._untrack(client)
            if upstream is not None:
                self._untrack(upstream)

    def _pump_down(self, upstream: socket.socket, client: socket.socket) -> None:
        """Copy responses to the client at the capped rate; splice(2) keeps the bytes out of Python."""
        pace = Throttle(self.params.rate_mb * 1e6)
        try:
            r, w = os.pipe()
        except OSError:
            return
        try:
            while True:
                n = os.splice(upstream.fileno(), w, CHUNK)
                if n == 0:
                    break
                pace.pace(n)
                left = n
                while left:
                    left -= os.splice(r, client.fileno(), left)
                self.stats.add(bytes_down=n)
        except OSError:
            pass
        finally:
            os.close(r)
            os.close(w)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()


def _send_paced(s: socket.socket, data: bytes, pace: Throttle) -> None:
    for i in range(0, len(data), CHUNK):
        piece = data[i : i + CHUNK]
        pace.pace(len(piece))
        s.sendall(piece)


def _read_head(reader: io.BufferedReader) -> bytes | None:
    """One request's header block, or None when the client closed the connection between requests."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = reader.readline(MAX_HEADER)
        if not line:
            return None if not lines else b"".join(lines)
        if not lines and line in (b"\r\n", b"\n"):
            continue  # stray CRLF between requests
        lines.append(line)
        size += len(line)
        if line in (b"\r\n", b"\n") or size > MAX_HEADER:
            return b"".join(lines)


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _body(reader: io.BufferedReader, head: bytes) -> Iterator[bytes]:
    """The request body as it arrives: Content-Length bytes, or a chunked body up to its last chunk."""
    if (_header(head, b"transfer-encoding") or b"").lower() == b"chunked":
        while True:
            line = reader.readline(MAX_HEADER)
            if not line:
                return
            yield line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (trailer := reader.readline(MAX_HEADER)) not in (b"\r\n", b"\n", b""):
                    yield trailer
                yield b"\r\n"
                return
            yield from _exact(reader, size + 2)
        return
    yield from _exact(reader, int(_header(head, b"content-length") or b"0"))


def _exact(reader: io.BufferedReader, n: int) -> Iterator[bytes]:
    while n > 0:
        piece = reader.read1(min(n, CHUNK))
        if not piece:
            return
        n -= len(piece)
        yield piece


def _error_response(slow_down: bool) -> bytes:
    status, code = ("503 Slow Down", "SlowDown") if slow_down else ("500 Internal Server Error", "InternalError")
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>injected by the S3-like link</Message><RequestId>s3link</RequestId></Error>"
    ).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
        f"x-amz-request-id: s3link\r\nConnection: close\r\n\r\n"
    ).encode() + body


def add_link_args(ap: argparse.ArgumentParser) -> None:
    """The link's flags, shared by every benchmark."""
    d = LinkParams()
    ap.add_argument("--link", choices=["s3", "loopback"], default="s3", help="S3-like link (default) or plain loopback")
    ap.add_argument("--link-rate-mb", type=float, default=d.rate_mb, help="MB/s per connection (0: uncapped)")
    ap.add_argument("--link-latency-ms", type=float, default=d.latency_s * 1000, help="added to every request")
    ap.add_argument("--link-error-rate", type=float, default=0.0, help="share of requests answered 5xx")
    ap.add_argument("--link-reset-rate", type=float, default=0.0, help="share of requests reset")
    ap.add_argument("--link-stall-rate", type=float, default=0.0, help="share of requests stalled")


def link_params(args: argparse.Namespace) -> LinkParams:
    return LinkParams(
        rate_mb=args.link_rate_mb,
        latency_s=args.link_latency_ms / 1000,
        error_rate=args.link_error_rate,
        reset_rate=args.link_reset_rate,
        stall_rate=args.link_stall_rate,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True)
    add_link_args(ap)
    args = ap.parse_args()
    with S3Link(args.upstream, link_params(args)) as link:
        print(f"{link.params.describe()}: {link.endpoint} -> {args.upstream}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
