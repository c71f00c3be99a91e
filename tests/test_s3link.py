"""The S3-like link does what benchmarks and latency-dependent tests rely on: it caps each connection's rate, adds
latency to every request on a keep-alive connection, injects faults at the rate asked, and carries S3 correctly.

Tolerances are wide (2 shared cores), but each check fails if its mechanism is removed: without pacing a 4 MB body
takes milliseconds, without the delay a keep-alive request takes well under a millisecond.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hf_cache.lab.s3link import LinkParams, S3Link
from hf_cache.lab.s3server import S3Server

BODY = bytes(range(256)) * (16 * 1024)  # 4 MiB


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = BODY if self.path == "/big" else b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        n = len(self.rfile.read(int(self.headers["Content-Length"])))
        body = str(n).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _get(link: S3Link, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", link.port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


def test_each_connection_is_capped_not_the_link(origin: str) -> None:
    with S3Link(origin, LinkParams(rate_mb=20, latency_s=0)) as link:
        t0 = time.perf_counter()
        status, body = _get(link, "/big")
        one = time.perf_counter() - t0
        assert status == 200 and body == BODY
        # 4.19 MB at 20 MB/s: 0.21 s
        assert 0.17 < one < 0.6, one
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: _get(link, "/big"), range(4)))
        four = time.perf_counter() - t0
        assert all(r == (200, BODY) for r in results)
        # four connections in parallel each get the rate: far less than 4x one connection's time
        assert four < 2.5 * one, (one, four)
        stats = link.stats.snapshot()
        assert stats["bytes_down"] >= 5 * len(BODY)
        assert stats["peak_open"] == 4, stats


def test_uploads_are_capped_too(origin: str) -> None:
    with S3Link(origin, LinkParams(rate_mb=20, latency_s=0)) as link:
        conn = http.client.HTTPConnection("127.0.0.1", link.port, timeout=30)
        t0 = time.perf_counter()
        conn.request("PUT", "/up", body=BODY)
        resp = conn.getresponse()
        assert resp.read() == str(len(BODY)).encode()
        assert time.perf_counter() - t0 > 0.17


def test_latency_is_added_to_every_request_on_a_keep_alive_connection(origin: str) -> None:
    with S3Link(origin, LinkParams(rate_mb=0, latency_s=0.05)) as link:
        conn = http.client.HTTPConnection("127.0.0.1", link.port, timeout=30)
        times = []
        for _ in range(8):
            t0 = time.perf_counter()
            assert _get(link, "/small", conn) == (200, b"ok")
            times.append(time.perf_counter() - t0)
        assert link.stats.snapshot()["connections"] == 1  # one keep-alive connection, 8 requests
        assert min(times) >= 0.05, times
        assert statistics.median(times) < 0.12, times


def test_faults_are_injected_at_the_rate_asked(origin: str) -> None:
    params = LinkParams(rate_mb=0, latency_s=0, error_rate=0.2, reset_rate=0.1, seed=7)
    with S3Link(origin, params) as link:
        outcomes = {"ok": 0, "5xx": 0, "reset": 0}
        for _ in range(200):
            try:
                status, _ = _get(link, "/small")
            except (ConnectionError, http.client.HTTPException):
                outcomes["reset"] += 1
                continue
            outcomes["ok" if status == 200 else "5xx"] += 1
        stats = link.stats.snapshot()
    assert 20 <= outcomes["5xx"] <= 60, outcomes  # 20% of 200 = 40
    assert 8 <= outcomes["reset"] <= 35, outcomes  # 10% = 20
    assert stats["errors"] == outcomes["5xx"] and stats["resets"] == outcomes["reset"]


def test_a_stall_holds_the_request(origin: str) -> None:
    with S3Link(origin, LinkParams(rate_mb=0, latency_s=0, stall_rate=1.0, stall_s=0.4)) as link:
        t0 = time.perf_counter()
        assert _get(link, "/small") == (200, b"ok")
        assert time.perf_counter() - t0 >= 0.4
        assert link.stats.snapshot()["stalls"] == 1


def test_boto3_reads_and_writes_real_s3_through_the_link(s3_server: S3Server, bucket: str) -> None:
    """Real S3 traffic (signed PUT with a body, ranged GETs, multipart download) passes through byte-exact."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    data = BODY * 3  # 12 MiB
    with S3Link(s3_server.endpoint, LinkParams(rate_mb=200, latency_s=0.01)) as link:
        client = boto3.client(
            "s3",
            endpoint_url=link.endpoint,
            region_name="us-east-1",
            aws_access_key_id=s3_server.env()["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=s3_server.env()["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}),
        )
        client.put_object(Bucket=bucket, Key="k", Body=data)
        assert client.get_object(Bucket=bucket, Key="k", Range="bytes=5-1048580")["Body"].read() == data[5:1048581]
        assert link.stats.range_starts == [5]
        cfg = TransferConfig(multipart_threshold=4 << 20, multipart_chunksize=4 << 20, max_concurrency=3)
        import io

        out = io.BytesIO()
        before = link.stats.snapshot()["bytes_down"]
        client.download_fileobj(bucket, "k", out, Config=cfg)
        assert out.getvalue() == data
        fetched = link.stats.snapshot()["bytes_down"] - before
        assert len(data) <= fetched < 1.01 * len(data)
