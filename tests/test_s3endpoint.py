"""The mount's S3 endpoint (cache/mount/s3endpoint.py) on its own: a real S3 server behind it, boto3 or raw HTTP in
front of it, asking what rclone asks. The decisions (cache/mount/readahead.py) are unit-tested at the bottom.

Through a real mount and rclone: tests/test_readahead_mount.py.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import boto3
import pytest
import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from hf_cache.lab.s3link import LinkParams, S3Link
from hf_cache.lab.s3server import S3Server, start_rclone_s3
from hf_cache.mount import readahead
from hf_cache.mount.config import MountConfig
from hf_cache.mount.rclone import LOCAL_KEY, REMOTE, rclone_env
from hf_cache.mount.readahead import Asked, Continuations, Ended, Nearness
from hf_cache.mount.s3endpoint import S3Endpoint, Stream
from hf_cache.units import MiB

HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=10, read=15))
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # rclone's GETs carry it
BIG = 16 * MiB  # rclone's first GET of a downloader: two parts
FIRST = 4 * MiB  # what a reader's first request asks (rclone: 16 MiB; smaller here, same logic)


def start_endpoint(upstream: str, depth: int = 4, streams: int = 4) -> S3Endpoint:
    endpoint = S3Endpoint(upstream, None, io_step=2.5, depth=depth, streams=streams)
    endpoint.start()
    return endpoint


@pytest.fixture
def endpoint(s3_server: S3Server, s3_env: dict[str, str]) -> Iterator[S3Endpoint]:
    running = start_endpoint(s3_server.endpoint)
    try:
        yield running
    finally:
        running.close()


def client_of(endpoint: S3Endpoint):  # type: ignore[no-untyped-def]
    """A client that signs with the placeholder key, as rclone does: the endpoint signs again with the real one."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=LOCAL_KEY,
        aws_secret_access_key=LOCAL_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 0}, read_timeout=15),
    )


def get(client, bucket: str, key: str, start: int, end: int | None) -> bytes:  # type: ignore[no-untyped-def]
    """A ranged GET as rclone makes it: signed with the placeholder key, and when the endpoint sends it to S3 (a 307
    to a presigned URL), asked there with the same headers but Authorization (rclone drops it when the host
    changes). Raises on an error answer or a body cut short, as rclone's SDK does."""
    url = f"{client.meta.endpoint_url}/{bucket}/{quote(key, safe='/~')}?x-id=GetObject"
    headers = {"Range": f"bytes={start}-" + ("" if end is None else str(end)), "X-Amz-Content-Sha256": EMPTY_SHA256}
    request = AWSRequest(method="GET", url=url, headers=headers)
    S3SigV4Auth(Credentials(LOCAL_KEY, LOCAL_KEY), "s3", "us-east-1").add_auth(request)
    sent = dict(request.headers.items())
    answer = HTTP.request("GET", url, headers=sent, redirect=False, preload_content=False)
    if answer.status == 307:
        answer.drain_conn()
        sent.pop("Authorization")
        answer = HTTP.request("GET", answer.headers["Location"], headers=sent, redirect=False, preload_content=False)
    body = answer.read()
    if answer.status not in (200, 206) or len(body) != int(answer.headers["Content-Length"]):
        raise OSError(f"answer {answer.status}, {len(body)} of {answer.headers.get('Content-Length')} bytes")
    return body


def metric(endpoint: S3Endpoint, name: str) -> float:
    return getattr(endpoint, name)._value.get()  # type: ignore[no-any-return]


def test_a_continuation_is_served_from_read_ahead_byte_exact(s3_server: S3Server, bucket: str, endpoint: S3Endpoint):
    data = os.urandom(45 * MiB + 123)
    s3_server.client().put_object(Bucket=bucket, Key="dir/model.bin", Body=data)
    c = client_of(endpoint)
    assert get(c, bucket, "dir/model.bin", 0, FIRST - 1) == data[:FIRST]  # passed through
    assert metric(endpoint, "m_streams") == 0
    # rclone's next request starts where the last ended: from here parts are in flight ahead of it
    assert get(c, bucket, "dir/model.bin", FIRST, 3 * FIRST - 1) == data[FIRST : 3 * FIRST]
    assert metric(endpoint, "m_streams") == 1
    assert get(c, bucket, "dir/model.bin", 3 * FIRST, 30 * MiB) == data[3 * FIRST : 30 * MiB + 1]
    assert get(c, bucket, "dir/model.bin", 30 * MiB + 1, None) == data[30 * MiB + 1 :]  # open-ended, to the end
    assert metric(endpoint, "m_streams") == 1  # the same stream, parked between requests
    fetched = metric(endpoint, "m_bytes")
    assert fetched == len(data) - FIRST, fetched  # every byte once: parts end at the object's end
    assert metric(endpoint, "m_failed") == 0
    # a GET elsewhere in the object (a seek) is not a continuation
    assert get(c, bucket, "dir/model.bin", 7, 99) == data[7:100]
    assert metric(endpoint, "m_streams") == 1


@pytest.mark.parametrize(
    ("rate_mb", "got_to"),
    [(0, 3 * MiB), (6, 3 * MiB), (0, 3 * MiB + 64 * 1024)],
    ids=["parked-when-asked-again", "still-waiting-on-a-part", "mid-chunk"],
)
def test_a_request_rclone_gave_up_on_hands_its_stream_to_the_next(
    s3_server: S3Server, bucket: str, s3_env: dict[str, str], rate_mb: int, got_to: int
) -> None:
    """rclone gives up on an answer that is too slow (its --timeout) and asks again from the byte it got to: bytes
    the endpoint had sent were still in the sockets' buffers. The new request takes over the same stream, rewound to
    where rclone is, instead of a second stream fetching the same parts (measured before: 1.30x the bytes on a loaded
    machine). On a slow link the old request is still waiting on a part when the new one comes: it is told to let
    go; on a fast one it has already parked the stream, a little ahead of rclone. Mid-chunk: rclone gave up in the
    middle of a chunk whose write had not returned, so it asks again from a byte past the stream's position (CI
    caught this one: not handed over, the stream's parts from there were cancelled as another downloader's)."""
    data = os.urandom(40 * MiB)
    s3_server.client().put_object(Bucket=bucket, Key="k", Body=data)
    with S3Link(s3_server.endpoint, LinkParams(rate_mb=rate_mb, latency_s=0)) as link:
        endpoint = start_endpoint(link.endpoint)
        try:
            _give_up_and_ask_again(endpoint, bucket, data, got_to)
        finally:
            endpoint.close()


def _give_up_and_ask_again(endpoint: S3Endpoint, bucket: str, data: bytes, got_to: int) -> None:
    c = client_of(endpoint)
    assert get(c, bucket, "k", 0, FIRST - 1) == data[:FIRST]
    port = int(endpoint.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.sock = socket.socket()
    # small, so that the endpoint's write of the chunk rclone stopped in cannot return (the kernel doubles it)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    conn.sock.settimeout(15)
    conn.sock.connect(("127.0.0.1", port))
    conn.request("GET", f"/{bucket}/k?x-id=GetObject", headers={"Range": f"bytes={FIRST}-{len(data) - 1}"})
    answer = conn.getresponse()
    assert answer.status == 206
    got = answer.read(got_to)  # what rclone had read when it gave up
    assert got == data[FIRST : FIRST + got_to]
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    at = FIRST + got_to
    assert get(c, bucket, "k", at, None) == data[at:]  # asked again at once, from where it is
    assert metric(endpoint, "m_streams") == 1, "a second stream fetched what the first had in flight"
    # every byte once, by one stream (a part may still be on its way when the answer ends)
    deadline = time.monotonic() + 5
    while metric(endpoint, "m_bytes") < len(data) - FIRST and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(endpoint, "m_bytes") == len(data) - FIRST


def test_a_downloader_that_only_paused_is_not_waited_for(
    s3_server: S3Server, bucket: str, s3_env: dict[str, str]
) -> None:
    """An mmap load's downloader stops reading when the reader moves on, but keeps its connection: a GET inside the
    part its stream is sending is another downloader's, answered at once. (Taken for rclone asking again, it waited
    for the paused one to let go, past rclone's own timeout: twice, 5 s per safe_open load on loopback.)"""
    data = os.urandom(40 * MiB)
    s3_server.client().put_object(Bucket=bucket, Key="k", Body=data)
    endpoint = S3Endpoint(s3_server.endpoint, None, io_step=10.0, depth=4, streams=4)  # hand-over wait: 3 s
    endpoint.start()
    try:
        c = client_of(endpoint)
        port = int(endpoint.url.rsplit(":", 1)[1])
        paused = socket.create_connection(("127.0.0.1", port), timeout=15)
        paused.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # set before it fills: the stream blocks
        paused.sendall(
            f"GET /{bucket}/k?x-id=GetObject HTTP/1.1\r\nHost: x\r\nRange: bytes=0-{BIG - 1}\r\n\r\n".encode()
        )
        assert b" 206 " in paused.recv(64 * 1024)  # the stream is answering; then the reader moves elsewhere
        time.sleep(0.5)
        started = time.monotonic()
        assert get(c, bucket, "k", 5 * MiB, 6 * MiB - 1) == data[5 * MiB : 6 * MiB]  # inside the part being sent
        took = time.monotonic() - started
        assert took < 2.0, f"waited {took:.2f}s for a downloader that was still connected"
        paused.close()
    finally:
        endpoint.close()


def test_streams_beyond_the_limit_are_passed_through(s3_server: S3Server, bucket: str, s3_env: dict[str, str]) -> None:
    endpoint = start_endpoint(s3_server.endpoint, depth=2, streams=1)
    try:
        files = {f"f{i}": os.urandom(20 * MiB) for i in range(2)}
        for key, data in files.items():
            s3_server.client().put_object(Bucket=bucket, Key=key, Body=data)
        c = client_of(endpoint)
        for key, data in files.items():
            assert get(c, bucket, key, 0, FIRST - 1) == data[:FIRST]
        f0, f1 = files["f0"], files["f1"]
        assert get(c, bucket, "f0", FIRST, 2 * FIRST - 1) == f0[FIRST : 2 * FIRST]  # a stream, parked reading ahead
        assert metric(endpoint, "m_live") == 1
        assert get(c, bucket, "f1", FIRST, None) == f1[FIRST:]  # no slot left: passed through
        assert metric(endpoint, "m_streams") == 1  # memory stays bounded
        assert get(c, bucket, "f0", 2 * FIRST, None) == f0[2 * FIRST :]  # the parked stream, to the end
        assert metric(endpoint, "m_streams") == 1
        assert metric(endpoint, "m_live") == 0  # a stream with nothing left ahead gives its slot back
    finally:
        endpoint.close()


def test_what_is_not_read_ahead_rclone_gets_from_s3_itself(
    s3_server: S3Server, bucket: str, s3_env: dict[str, str]
) -> None:
    """A byte that crosses the endpoint costs a hop through Python and buys nothing unless it was read ahead: every
    other GET of an object is a 307 to a presigned URL, so its bytes go from S3 to rclone directly (listings and
    HEADs are still passed). rclone's next GET from where a redirected one ended still gets read-ahead, learning
    the object from its first part."""
    data = os.urandom(60 * MiB)
    s3_server.client().put_object(Bucket=bucket, Key="k", Body=data)
    endpoint = start_endpoint(s3_server.endpoint, depth=4, streams=1)
    try:
        c = client_of(endpoint)
        assert get(c, bucket, "k", 0, FIRST - 1) == data[:FIRST]  # small: S3 answers rclone itself
        assert metric(endpoint, "m_redirected") == 1 and metric(endpoint, "m_passed") == 0
        assert get(c, bucket, "k", FIRST, 3 * FIRST - 1) == data[FIRST : 3 * FIRST]  # its continuation: a stream
        assert metric(endpoint, "m_streams") == 1 and metric(endpoint, "m_live") == 1  # parked, reading ahead
        assert get(c, bucket, "k", 40 * MiB, 40 * MiB + BIG - 1) == data[40 * MiB : 40 * MiB + BIG]  # no slot
        assert metric(endpoint, "m_redirected") == 2 and metric(endpoint, "m_streams") == 1
        assert get(c, bucket, "k", 3 * FIRST, None) == data[3 * FIRST :]  # the parked stream, to the end
        assert metric(endpoint, "m_passed") == 0 and metric(endpoint, "m_bytes") == len(data) - FIRST
        assert c.head_object(Bucket=bucket, Key="k")["ContentLength"] == len(data)  # passed: no body
    finally:
        endpoint.close()


@pytest.mark.parametrize("latency_s", [0.0, 0.15], ids=["next-door", "far"])
def test_an_s3_next_door_sends_rclone_to_it_and_a_far_one_gets_read_ahead(
    tmp_path: Path, s3_env: dict[str, str], latency_s: float
) -> None:
    """Bytes that cross the endpoint cost a hop through Python: on 2 cores, a loopback read() through it was
    0.72-0.85x of rclone alone. So where S3 answers parts within ``near`` (here ``rclone serve s3`` on loopback, as
    an S3 in the same rack), rclone's first 16 MiB still gets its two parts, which measure the link, and from there
    rclone is sent to S3 itself; a far S3 (the same server behind the lab's link, 150 ms to first byte) gets
    read-ahead as before. The threshold is 50 ms here, not the mount's 10 ms: the test is of what follows from the
    measure, on a runner whose loopback answers in 4-16 ms. (moto is far by this measure, ~100 ms: it slices a ranged
    GET out of the whole object.)"""
    data = os.urandom(60 * MiB)
    (tmp_path / "bk").mkdir()
    (tmp_path / "bk" / "k").write_bytes(data)
    server = start_rclone_s3(tmp_path)
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        upstream = server.endpoint
        if latency_s:
            upstream = stack.enter_context(S3Link(server.endpoint, LinkParams(rate_mb=0, latency_s=latency_s))).endpoint
        endpoint = S3Endpoint(upstream, None, io_step=2.5, depth=4, streams=4, near=0.050)
        endpoint.start()
        stack.callback(endpoint.close)
        c = client_of(endpoint)
        assert get(c, "bk", "k", 0, BIG - 1) == data[:BIG]  # rclone's first GET: two parts
        assert get(c, "bk", "k", BIG, 2 * BIG - 1) == data[BIG : 2 * BIG]  # its continuations
        assert get(c, "bk", "k", 2 * BIG, None) == data[2 * BIG :]
        latency = metric(endpoint, "m_latency")
        if latency_s:
            assert latency >= latency_s
            assert metric(endpoint, "m_streams") == 2 and metric(endpoint, "m_redirected") == 0
            assert metric(endpoint, "m_bytes") == len(data)
        else:
            assert latency < 0.050
            assert metric(endpoint, "m_streams") == 1 and metric(endpoint, "m_redirected") == 2
            assert metric(endpoint, "m_bytes") == BIG  # the first GET's parts only
            assert get(c, "bk", "k", 30 * MiB, 30 * MiB + BIG - 1) == data[30 * MiB : 30 * MiB + BIG]
            assert metric(endpoint, "m_redirected") == 3  # a large first GET too, until the next probe
        assert metric(endpoint, "m_passed") == 0 and metric(endpoint, "m_failed") == 0


def test_a_stream_finds_s3_near_and_still_answers_all_rclone_asked(
    s3_server: S3Server, bucket: str, s3_env: dict[str, str]
) -> None:
    """A stream started while S3 looked far (or unmeasured) owes rclone the rest of the range it asked for: once S3
    is found near, it fetches up to that end and no further, and rclone's next GET is sent to S3."""
    data = os.urandom(60 * MiB)
    s3_server.client().put_object(Bucket=bucket, Key="k", Body=data)
    endpoint = S3Endpoint(s3_server.endpoint, None, io_step=2.5, depth=2, streams=4, near=0.0)  # far: read ahead
    endpoint.start()
    try:
        c = client_of(endpoint)
        assert get(c, bucket, "k", 0, FIRST - 1) == data[:FIRST]  # small: redirected
        port = int(endpoint.url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        conn.request("GET", f"/{bucket}/k?x-id=GetObject", headers={"Range": f"bytes={FIRST}-{40 * MiB - 1}"})
        answer = conn.getresponse()
        assert answer.status == 206
        got = answer.read(MiB)  # two parts planned: [4, 20) MiB; then S3 turns out near (its first part measured)
        with endpoint._lock:
            endpoint.link.near = 60.0
        got += answer.read()
        conn.close()
        assert got == data[FIRST : 40 * MiB]  # all of rclone's range
        assert get(c, bucket, "k", 40 * MiB, None) == data[40 * MiB :]
        assert metric(endpoint, "m_streams") == 1 and metric(endpoint, "m_redirected") == 2
        assert wait_for_quiet(endpoint) == 40 * MiB - FIRST  # nothing fetched past what rclone asked for
    finally:
        endpoint.close()


def test_read_ahead_stops_where_another_downloader_of_the_object_starts(
    s3_server: S3Server, bucket: str, s3_env: dict[str, str]
) -> None:
    """rclone stops a downloader that runs into bytes it already has or is fetching with another downloader (mmap
    loads start one per region they touch), so parts past such a start would be fetched for nothing (measured: mmap
    loads fetched 1.27-1.78 GB per 1 GB through the endpoint before this, 0.97-1.14 GB without it). A stream plans
    no part past a range rclone asked for, and cancels its parts past a range asked for while they are in flight;
    rclone's own requests still get every byte, past that point too. Each request on the link takes 1.5 s to its
    first byte, so parts cancelled within that time fetch nothing and the counts are exact."""
    first, second = os.urandom(96 * MiB), os.urandom(96 * MiB)
    s3_server.client().put_object(Bucket=bucket, Key="first", Body=first)
    s3_server.client().put_object(Bucket=bucket, Key="second", Body=second)
    with S3Link(s3_server.endpoint, LinkParams(rate_mb=0, latency_s=1.5)) as link:
        endpoint = start_endpoint(link.endpoint, depth=8)
        try:
            c = client_of(endpoint)
            # rclone's first GET of 16 MiB gets two parts; asked for before its continuation's stream starts, 40
            # MiB on stops that stream's parts there (8 parts would reach 80 MiB)
            assert get(c, bucket, "first", 40 * MiB, 40 * MiB + FIRST - 1) == first[40 * MiB : 40 * MiB + FIRST]
            assert get(c, bucket, "first", 0, BIG - 1) == first[:BIG]
            assert get(c, bucket, "first", BIG, BIG + MiB - 1) == first[BIG : BIG + MiB]
            assert wait_for_quiet(endpoint) == BIG + 24 * MiB  # [0, 16) and [16, 40) MiB

            # asked for while the parts are on their way: those from 40 MiB on are cancelled ([16, 40) MiB kept)
            assert get(c, bucket, "second", 0, BIG - 1) == second[:BIG]
            other = threading.Timer(0.3, get, (c, bucket, "second", 40 * MiB, 40 * MiB + FIRST - 1))
            other.start()
            assert get(c, bucket, "second", BIG, BIG + MiB - 1) == second[BIG : BIG + MiB]
            other.join()
            assert wait_for_quiet(endpoint) == 2 * (BIG + 24 * MiB)

            # rclone goes on reading past where it asked before: every byte, parts planned on from there
            assert get(c, bucket, "second", BIG + MiB, 70 * MiB - 1) == second[BIG + MiB : 70 * MiB]
            assert metric(endpoint, "m_streams") == 4 and metric(endpoint, "m_failed") == 0  # 2 per object
            endpoint.close()  # drops the parked streams: what they fetched and never sent is counted
            assert metric(endpoint, "m_unsent") >= 23 * MiB  # the first object's [17, 40) MiB
        finally:
            endpoint.close()


def wait_for_quiet(endpoint: S3Endpoint) -> float:
    """The parts' byte count once it stopped growing for a second."""
    fetched, deadline = -1.0, time.monotonic() + 30
    while time.monotonic() < deadline and fetched != metric(endpoint, "m_bytes"):
        fetched = metric(endpoint, "m_bytes")
        time.sleep(1.0)
    return fetched


def test_read_ahead_parts_ask_for_the_version_the_reader_started(
    s3_server: S3Server, bucket: str, endpoint: S3Endpoint
) -> None:
    """An object replaced between two requests: the stream's parts, conditioned on the first answer's ETag, are
    refused, and the request is answered by S3 itself (what rclone would have got without the endpoint). (A first
    GET the endpoint sent rclone to S3 for leaves no ETag: a continuation's stream then takes its first part's.)"""
    old, new = os.urandom(30 * MiB), os.urandom(30 * MiB)
    s3_server.client().put_object(Bucket=bucket, Key="k", Body=old)
    c = client_of(endpoint)
    assert get(c, bucket, "k", 0, BIG - 1) == old[:BIG]  # by parts: the endpoint saw its ETag
    s3_server.client().put_object(Bucket=bucket, Key="k", Body=new)
    assert get(c, bucket, "k", BIG, None) == new[BIG:]
    assert metric(endpoint, "m_failed") == 1  # the stream was refused (412), not served from the new version


def test_faults_on_the_link_never_reach_the_reader(s3_server: S3Server, bucket: str, s3_env: dict[str, str]) -> None:
    """5xx answers and resets between the endpoint and S3: parts are tried again from where they stopped; what the
    reader gets is exact or an error it retries (as rclone does), never wrong bytes."""
    data = os.urandom(40 * MiB)
    s3_server.client().put_object(Bucket=bucket, Key="k", Body=data)
    with S3Link(s3_server.endpoint, LinkParams(rate_mb=0, latency_s=0, error_rate=0.2, reset_rate=0.2, seed=3)) as link:
        endpoint = start_endpoint(link.endpoint, depth=4)
        try:
            c = client_of(endpoint)
            got, pos, failures = bytearray(), 0, 0
            step = FIRST
            while pos < len(data) and failures < 50:
                try:
                    chunk = get(c, bucket, "k", pos, min(pos + step, len(data)) - 1)
                except Exception:
                    failures += 1
                    continue
                got += chunk
                pos += len(chunk)
                step *= 2
            assert bytes(got) == data
            stats = link.stats.snapshot()
            assert stats["errors"] + stats["resets"] > 0, stats
            assert metric(endpoint, "m_retries") + metric(endpoint, "m_failed") > 0
        finally:
            endpoint.close()


class CuttingProxy:
    """A TCP proxy that cuts every ``every``-th connection after ``after`` bytes of answers: an S3 connection that
    dies mid-body (the S3-like link's faults all come before the first byte)."""

    def __init__(self, upstream: str, after: int, every: int = 2) -> None:
        self.upstream = ("127.0.0.1", int(upstream.rsplit(":", 1)[1]))
        self.after, self.every, self.count, self.cuts = after, every, 0, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.count += 1
            server = socket.create_connection(self.upstream)
            limit = self.after if self.count % self.every == 0 else None
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, limit), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if limit is not None and sent + len(data) > limit:
                    dst.sendall(data[: limit - sent])
                    self.cuts += 1
                    break
                dst.sendall(data)
                sent += len(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def stop(self) -> None:
        self.listener.close()


def test_a_part_cut_off_midway_is_fetched_on_from_where_it_stopped(
    s3_server: S3Server, bucket: str, s3_env: dict[str, str]
) -> None:
    data = os.urandom(40 * MiB)
    s3_server.client().put_object(Bucket=bucket, Key="k", Body=data)
    proxy = CuttingProxy(s3_server.endpoint, after=3 * MiB + 4321)
    endpoint = start_endpoint(proxy.endpoint, depth=4)
    try:
        c = client_of(endpoint)
        got, pos, failures = bytearray(), 0, 0
        while pos < len(data) and failures < 50:
            try:  # rclone's way: ask on from where the last answer stopped
                chunk = get(c, bucket, "k", pos, min(pos + 16 * MiB, len(data)) - 1)
            except Exception:
                failures += 1
                continue
            got += chunk
            pos += len(chunk)
        assert bytes(got) == data
        assert proxy.cuts > 0 and metric(endpoint, "m_retries") > 0
    finally:
        endpoint.close()
        proxy.stop()


def test_only_reads_pass(s3_server: S3Server, bucket: str, endpoint: S3Endpoint) -> None:
    s3_server.client().put_object(Bucket=bucket, Key="k", Body=b"kept")
    for method in ("PUT", "DELETE", "POST"):
        request = urllib.request.Request(f"{endpoint.url}/{bucket}/k", data=b"x", method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405
    assert s3_server.client().get_object(Bucket=bucket, Key="k")["Body"].read() == b"kept"


NAMES = ["a b+c%20d.bin", "ünï/cödé ✓.json", "odd!'()*~$&=,;@:[].txt", "x/../y.bin", "q?x=1#frag.bin"]


def test_signatures_hold_for_names_an_attacker_would_choose(s3_env: dict[str, str]) -> None:
    """rclone serve s3 checks every request's SigV4 signature: the endpoint's re-encoded paths and queries must sign
    exactly as S3 computes them, for any name a repo may hold."""
    root = Path(tempfile.mkdtemp(prefix="hfc-names-"))
    files = {name: os.urandom(6 * MiB + i) for i, name in enumerate(NAMES)}
    for name, data in files.items():
        path = root / "bk" / name.replace("../", "dotdot/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    many = {f"many/{i:04d}.json" for i in range(1100)}  # two pages; this server sends big listings chunked
    for key in many:
        (root / "bk" / key).parent.mkdir(exist_ok=True)
        (root / "bk" / key).write_bytes(b"{}")
    server = start_rclone_s3(root)
    endpoint = start_endpoint(server.endpoint)
    try:
        c = client_of(endpoint)
        listed = {
            o["Key"] for page in c.get_paginator("list_objects_v2").paginate(Bucket="bk") for o in page["Contents"]
        }
        assert listed == {n.replace("../", "dotdot/") for n in NAMES} | many
        for name, data in files.items():
            key = name.replace("../", "dotdot/")
            assert c.head_object(Bucket="bk", Key=key)["ContentLength"] == len(data)
            assert get(c, "bk", key, 0, FIRST - 1) + get(c, "bk", key, FIRST, None) == data
        assert metric(endpoint, "m_streams") == len(NAMES)
        # rclone itself, with its own headers, sent to the strict server by the endpoint's presigned redirects
        cfg = MountConfig(bucket="bk", region="us-east-1")
        env = rclone_env(cfg, base=dict(os.environ), local_endpoint=endpoint.url)
        before = metric(endpoint, "m_redirected")
        for name, data in files.items():
            key = name.replace("../", "dotdot/")
            got = subprocess.run(["rclone", "cat", f"{REMOTE}:bk/{key}"], env=env, capture_output=True, timeout=60)
            assert got.returncode == 0 and got.stdout == data, (name, got.stderr.decode()[-2000:])
        assert metric(endpoint, "m_redirected") >= before + len(NAMES)
    finally:
        endpoint.close()
        server.stop()


def test_rclone_gets_a_placeholder_key_and_none_of_the_nodes_credentials() -> None:
    base = {"AWS_ACCESS_KEY_ID": "AKIAREAL", "AWS_SECRET_ACCESS_KEY": "real-secret", "AWS_ROLE_ARN": "arn:x"}
    env = rclone_env(MountConfig(bucket="b"), base=base, local_endpoint="http://127.0.0.1:1234")
    assert env["RCLONE_CONFIG_HFCACHE_ENDPOINT"] == "http://127.0.0.1:1234"
    assert env["RCLONE_CONFIG_HFCACHE_SECRET_ACCESS_KEY"] == LOCAL_KEY
    assert "real-secret" not in env.values() and "AKIAREAL" not in env.values() and "AWS_ROLE_ARN" not in env
    direct = rclone_env(MountConfig(bucket="b"), base=base)
    assert direct["RCLONE_CONFIG_HFCACHE_ENV_AUTH"] == "true" and direct["AWS_SECRET_ACCESS_KEY"] == "real-secret"


def test_upstream_addresses_real_s3_as_the_sdk_does() -> None:
    from hf_cache.mount.s3endpoint import Upstream, canonical_query

    aws = Upstream(None, "eu-west-1", 2.5, 4)
    assert aws.url("/my-bucket/hub/a b+c.json", "x-id=GetObject") == (
        "https://my-bucket.s3.eu-west-1.amazonaws.com/hub/a%20b%2Bc.json?x-id=GetObject"
    )
    assert aws.url("/my.dotted.bucket/k", "") == "https://s3.eu-west-1.amazonaws.com/my.dotted.bucket/k"
    assert aws.url("/my-bucket", "list-type=2") == "https://my-bucket.s3.eu-west-1.amazonaws.com/?list-type=2"
    lab = Upstream("http://127.0.0.1:9000/", None, 2.5, 4)
    assert lab.url("/b/ünï/x~y", "") == "http://127.0.0.1:9000/b/%C3%BCn%C3%AF/x~y"
    assert canonical_query("prefix=hub%2F&list-type=2&delimiter=%2F") == "delimiter=%2F&list-type=2&prefix=hub%2F"
    assert canonical_query("prefix=a+b") == "prefix=a%20b"


# -- decisions (cache/mount/readahead.py) ------------------------------------------------------------------------
def test_parse_range() -> None:
    assert readahead.parse_range("bytes=16777216-50331647") == (16777216, 50331647)
    assert readahead.parse_range("bytes=5-") == (5, None)
    for header in (None, "", "bytes=-500", "bytes=0-1,5-9", "bytes=9-5", "items=0-1"):
        assert readahead.parse_range(header) is None, header


def test_parse_content_range_and_clamp() -> None:
    assert readahead.parse_content_range("bytes 0-99/1000") == (0, 99, 1000)
    assert readahead.parse_content_range("bytes 0-99/*") is None
    assert readahead.parse_content_range("bytes 0-1000/1000") is None
    assert readahead.clamp(10, None, 100) == 99
    assert readahead.clamp(10, 500, 100) == 99
    assert readahead.clamp(100, None, 100) is None


def test_parts_cover_the_rest_of_the_object_once() -> None:
    got = list(readahead.parts(5, 20, part=8))
    assert got == [(5, 8), (13, 7)]
    assert list(readahead.parts(20, 20, part=8)) == []


def test_validator_prefers_the_etag() -> None:
    assert readahead.validator('"abc"', "Sat, 28 Nov 2026 01:00:02 GMT") == ("If-Match", '"abc"')
    assert readahead.validator('""', "Sat, 28 Nov 2026 01:00:02 GMT") == (
        "If-Unmodified-Since",
        "Sat, 28 Nov 2026 01:00:02 GMT",
    )
    assert readahead.validator(None, None) is None


def test_continuations_hand_a_parked_stream_to_one_request_and_drop_what_they_forget() -> None:
    now = [0.0]
    dropped: list[str] = []
    table: Continuations[str] = Continuations(dropped.append, limit=2, ttl=10.0, clock=lambda: now[0])
    table.remember("/b/k", Ended(("If-Match", "e"), 100, 1000, [], stream="s1"))
    assert table.take("/b/k", 99) is None and table.take("/b/other", 100) is None
    taken = table.take("/b/k", 100)
    assert taken is not None and taken.stream == "s1"
    assert table.take("/b/k", 100) is None  # handed out once
    table.remember("/b/k", Ended(("If-Match", "e"), 200, 1000, [], stream="s1"))
    now[0] = 11.0
    table.expire()
    assert dropped == ["s1"]  # an expired parked stream is closed
    for end in (1, 2, 3):
        table.remember("/b/k", Ended(("If-Match", "e"), end, 1000, [], stream=f"p{end}"))
    assert dropped == ["s1", "p1"]  # pushed out by the bound
    assert table.take("/b/k", 0) is None  # a read from the start is never a continuation


def test_asked_ranges_merge_and_bound_read_ahead() -> None:
    now = [0.0]
    asked = Asked(limit=2, per_object=3, ttl=600.0, clock=lambda: now[0])
    asked.add("/b/k", 0, 16)
    asked.add("/b/k", 100, 116)
    assert asked.barrier("/b/k", 16) == 100  # a stream at 16 reads ahead up to 100
    assert asked.barrier("/b/k", 100) is None  # inside a range: nothing asked for ahead of it
    assert asked.barrier("/b/other", 0) is None
    asked.add("/b/k", 16, 48)
    asked.add("/b/k", 48, 100)  # contiguous requests of one downloader merge into one range
    assert asked.barrier("/b/k", 0) is None
    asked.add("/b/k", 200, 300)
    asked.add("/b/k", 150, 250)
    assert asked.barrier("/b/k", 120) == 150
    asked.add("/b/k", 140, 400)  # swallows what it overlaps
    assert asked.barrier("/b/k", 120) == 140 and asked.barrier("/b/k", 140) is None
    asked.add("/b/k", 500, 501)
    asked.add("/b/k", 600, 601)  # a 4th range: the first one goes (bounded per object)
    assert asked.barrier("/b/k", 0) == 140
    asked.add("/b/a", 0, 1)
    asked.add("/b/b", 5, 6)  # a 3rd object: the least recently asked one goes
    assert asked.barrier("/b/k", 0) is None and asked.barrier("/b/b", 0) == 5
    now[0] = 601.0  # rclone's cache may have evicted them since
    assert asked.barrier("/b/b", 0) is None
    asked.expire()
    assert asked.barrier("/b/a", 0) is None


def test_s3_next_door_is_told_by_time_to_first_byte_and_measured_again_now_and_then() -> None:
    now = [0.0]
    link = Nearness(near=0.010, probe_every=10.0, keep=5, clock=lambda: now[0])
    assert link.latency is None and not link.is_near() and link.probe() and link.probe()  # unmeasured: read ahead
    for seconds in (0.002, 0.030, 0.004, 0.003):  # parts asked at once wait on each other: one slow answer
        link.record(seconds)
    assert link.latency == 0.0035 and link.is_near()
    assert not link.probe()  # just measured: a large first GET is sent to S3 too
    now[0] = 9.9
    assert not link.probe()
    now[0] = 10.0
    assert link.probe() and not link.probe()  # 10 s without a measure: one large first GET gets parts
    link.record(0.031)
    assert link.is_near()  # one far answer is not enough
    link.record(0.029)
    assert not link.is_near() and link.probe() and link.probe()  # it got far: read-ahead for all
    off = Nearness(near=0.0)
    off.record(0.0001)
    assert not off.is_near()  # 0: always read ahead


def test_a_stream_covers_rclone_asking_again_behind_or_ahead_of_where_its_writes_got() -> None:
    """rclone asks again from the byte it got to: behind the stream's position (bytes sent sat in the sockets'
    buffers) or ahead of it (it gave up while a chunk's write had not returned, and ``pos`` moves when a write
    returns). Both are the same downloader and get the same stream; a start past the part being sent is another
    downloader's (CI caught the ahead case: not handed over, and the parts from there were cancelled as if another
    downloader had started there)."""

    class Pool:
        def submit(self, *args: object) -> None:
            pass

    class Endpoint:
        depth, pool, _asked, fetch = 4, Pool(), Asked(), None

    s = Stream(Endpoint(), "/b/k", "", ("If-Match", '"e"'), 4 * MiB, 40 * MiB)  # type: ignore[arg-type]
    s.pos = 7 * MiB  # a chunk's write from 7 MiB had not returned when rclone gave up
    assert s.covers(7 * MiB + 64 * 1024) and s.covers(5 * MiB) and s.covers(7 * MiB)
    assert not s.covers(12 * MiB) and not s.covers(3 * MiB)
    s.rewind(7 * MiB + 64 * 1024)
    assert s.pos == 7 * MiB + 64 * 1024
