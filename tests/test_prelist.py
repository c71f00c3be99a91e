"""The supervisor lists each snapshot folder itself, so a job's first open in it survives an S3 outage."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from hf_cache.lab.mounting import RunningMount, start_mount
from hf_cache.lab.net import free_port
from hf_cache.lab.s3link import LinkParams, S3Link
from hf_cache.lab.s3server import start_s3_server, via
from hf_cache.mount.prelist import Prelist, batches, snapshot_folders
from tests.test_mount import ROOT, SHA1, SHA2, publish, wait_for

SNAP1 = f"{ROOT}/snapshots/{SHA1}"
SNAP2 = f"{ROOT}/snapshots/{SHA2}"


def _status(ended: str) -> bytes:
    return f'{{"ended": "{ended}", "state": "ok", "repos": [{{"state": "ok"}}]}}'.encode()


# -- the decision, pure ------------------------------------------------------------------------------------------


def test_snapshot_folders_are_named_from_the_repo_and_skip_hidden_entries() -> None:
    assert snapshot_folders("models--org--m", [SHA2, SHA1, ".tmp"]) == [SNAP1, SNAP2]
    assert snapshot_folders("models--org--m", []) == []


def test_batches_probe_with_one_folder_then_keep_order_and_size() -> None:
    assert batches(list("abcdef"), 2) == [["a"], ["b", "c"], ["d", "e"], ["f"]]
    assert batches(["a"], 2) == [["a"]]
    assert batches([], 2) == []


def test_each_seen_folder_is_listed_until_it_succeeds_and_again_after_a_restart() -> None:
    p = Prelist()
    p.see([SNAP2, SNAP1])
    assert p.todo() == [SNAP1, SNAP2]
    bad = p.record({SNAP1: "OK", SNAP2: "operation error S3: ListObjects ... StatusCode: 503"})
    assert bad == {SNAP2: "operation error S3: ListObjects ... StatusCode: 503"}
    assert p.todo() == [SNAP2]  # the failed one is retried on the next poll
    p.see([SNAP1, SNAP2])  # seen again after the next re-list: nothing new to list
    assert p.todo() == [SNAP2]
    assert p.record({SNAP2: "OK"}) == {}
    assert p.todo() == []
    p.restarted()  # a new rclone has no listings
    assert p.todo() == [SNAP1, SNAP2]


def test_a_folder_pruned_since_it_was_seen_is_dropped_not_retried() -> None:
    p = Prelist()
    p.see([SNAP1])
    assert p.record({SNAP1: "file does not exist"}) == {}
    assert p.todo() == []


# -- for real: rclone over FUSE, moto behind the S3-like link ----------------------------------------------------


def _bounded(argv: list[str], limit: float = 30.0) -> tuple[int | None, str, str]:
    """Run a filesystem command in a child: a call stuck in FUSE cannot be interrupted, the test must never make it."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()  # it returns once the mount is torn down
        return None, "", "still blocked"
    return proc.returncode, out, err


def _prelisted(m: RunningMount, at_least: int, timeout: float) -> None:
    wait_for(lambda: m.metrics()["hfcache_prelisted_folders_total"] >= at_least, timeout=timeout)


def test_snapshot_folders_no_reader_opened_are_listed_before_an_outage(tmp_path: Path) -> None:
    server = start_s3_server()
    link = S3Link(server.endpoint, LinkParams(rate_mb=0, latency_s=0))
    m = None
    try:
        bucket = server.new_bucket()
        client = server.client()
        first = {f"{SNAP1}/config.json": b'{"a": 1}', f"{SNAP1}/sub/nested.txt": b"nested"}
        publish(
            client,
            bucket,
            {**first, f"{ROOT}/refs/main": SHA1.encode(), "hf-cache/status.json": _status("2026-11-27T08:00:00+00:00")},
        )
        m = start_mount(
            bucket=bucket,
            prefix="p",
            env=via(server.env(), link.endpoint),
            mountpoint=tmp_path / "mnt",
            cache_dir=tmp_path / "cache",
            extra_args=("--freshness", "1s"),
        )
        _prelisted(m, 1, timeout=15)  # at start, with no reader in the mount

        second = {f"{SNAP2}/config.json": b'{"a": 2}', f"{SNAP2}/sub/deeper/nested.txt": b"deeper"}
        publish(client, bucket, second)  # a refresh publishes a new snapshot, then moves the ref and status.json
        publish(
            client,
            bucket,
            {f"{ROOT}/refs/main": SHA2.encode(), "hf-cache/status.json": _status("2026-11-27T09:00:00+00:00")},
        )
        _prelisted(m, 2, timeout=15)  # after the re-list of snapshots/ that shows it

        os.kill(m.rclone_pid(), signal.SIGKILL)  # a new rclone starts without any listing
        _prelisted(m, 4, timeout=40)
        assert m.metrics()["hfcache_rclone_restarts_total"] >= 1

        link.params = LinkParams(rate_mb=0, latency_s=0, error_rate=1.0)  # S3 answers every request 500/503
        time.sleep(2)  # a few --freshness polls into the outage
        for snap, files in ((SNAP1, first), (SNAP2, second)):
            folder = m.mountpoint / snap
            rc, out, err = _bounded(["ls", "-R", str(folder)])
            assert rc == 0, (snap, rc, err, m.log())
            for key in files:
                assert Path(key).name in out.split(), (key, out)
            rc, out, err = _bounded(["stat", "-c", "%n %s", *(str(m.mountpoint / key) for key in files)])
            assert rc == 0, (snap, rc, err, m.log())
            assert out.split() == [x for key, body in files.items() for x in (str(m.mountpoint / key), str(len(body)))]
        samples = m.metrics()
        assert samples["hfcache_s3_errors_total"] > 0  # S3 was really away
        assert samples["hfcache_mount_up"] == 1
    finally:
        if m is not None:
            m.stop()
        link.stop()
        server.stop()


class _ListFaults:
    """A forwarding proxy on 127.0.0.1 that answers 503 SlowDown to listings under one prefix: the recursive listing
    of a new snapshot folder fails while status.json and the re-list of ``snapshots/`` go through (s3link's faults
    hit every request alike)."""

    def __init__(self, upstream: str) -> None:
        self.fail_prefix: str | None = None
        self.failed = 0
        host = urllib.parse.urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                prefix = (query.get("prefix") or [""])[0]
                if proxy.fail_prefix and prefix.startswith(proxy.fail_prefix):
                    proxy.failed += 1
                    err = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(err)))
                    self.end_headers()
                    self.wfile.write(err)
                    return
                conn = http.client.HTTPConnection(host.hostname or "127.0.0.1", host.port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=dict(self.headers))
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_snapshot_folder_whose_listing_failed_is_listed_on_a_later_poll(tmp_path: Path) -> None:
    server = start_s3_server()
    proxy = _ListFaults(server.endpoint)
    m = None
    try:
        bucket = server.new_bucket()
        client = server.client()
        publish(
            client,
            bucket,
            {
                f"{SNAP1}/config.json": b"{}",
                f"{ROOT}/refs/main": SHA1.encode(),
                "hf-cache/status.json": _status("2026-11-27T08:00:00+00:00"),
            },
        )
        m = start_mount(
            bucket=bucket,
            prefix="p",
            env=via(server.env(), proxy.endpoint),
            mountpoint=tmp_path / "mnt",
            cache_dir=tmp_path / "cache",
            extra_args=("--freshness", "1s"),
        )
        _prelisted(m, 1, timeout=15)
        proxy.fail_prefix = f"p/{SNAP2}/"  # S3 fails the new snapshot folder's listing, nothing else
        publish(client, bucket, {f"{SNAP2}/config.json": b"{}"})
        publish(
            client,
            bucket,
            {f"{ROOT}/refs/main": SHA2.encode(), "hf-cache/status.json": _status("2026-11-27T09:00:00+00:00")},
        )
        wait_for(lambda: m.metrics()["hfcache_prelist_failures_total"] >= 2, timeout=15)  # tried on two polls
        assert m.metrics()["hfcache_prelisted_folders_total"] == 1
        assert "cannot list 1 snapshot folders from S3" in m.log_path.read_text(errors="replace")
        proxy.fail_prefix = None  # S3 recovers; status.json is unchanged, so only the retry can list it
        _prelisted(m, 2, timeout=10)
        assert "listing snapshot folders works again" in m.log_path.read_text(errors="replace")
        assert proxy.failed >= 2
    finally:
        if m is not None:
            m.stop()
        proxy.stop()
        server.stop()
