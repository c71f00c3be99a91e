"""Read-ahead through the mount's S3 endpoint (``--read-ahead-parts``), with real FUSE and rclone over the S3-like
link: a cold sequential reader gets many connections, every byte is exact, bytes cross the link once, and faults
on the link never reach the reader.

The endpoint on its own: tests/test_s3endpoint.py. The outage bound with read-ahead on: tests/test_mount_outage.py.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from hf_cache.lab.mounting import RunningMount
from hf_cache.lab.s3link import S3Link
from hf_cache.lab.s3server import S3Server
from hf_cache.mount.markers import READ_AHEAD as READ_AHEAD_MARKER
from hf_cache.mount.markers import marker_live
from hf_cache.transfer import MiB
from tests.refresh_helpers import run_cli
from tests.test_prefetch import ONE, read_through_faults, sha256_of, snapshot_dir
from tests.test_warm import BIG, publish, settle

READ_AHEAD = ("--read-ahead-parts", "8")  # the supervisor turns the prefetch off then (checked below)


def test_a_cold_sequential_reader_gets_read_ahead_and_bytes_cross_once(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], link: S3Link, link_mount: Callable[..., RunningMount]
) -> None:
    publish(tmp_path, bucket, s3_env, {"model.safetensors": BIG, "shared.bin": 120 * MiB})
    m = link_mount(*READ_AHEAD)
    snap = snapshot_dir(m)
    link.reset_stats()
    started = time.monotonic()
    assert sha256_of(snap / "model.safetensors") == sha256_of(tmp_path / "src/model.safetensors")
    print(f"cold sequential read of 210 MiB over the link: {time.monotonic() - started:.2f}s")
    settle(link)
    stats = link.stats.snapshot()
    starts = sorted(link.stats.range_starts)
    print("one reader fetched", stats["bytes_down"] / BIG, "peak connections", stats["peak_open"], starts)
    assert BIG <= stats["bytes_down"] <= ONE * BIG, stats
    metrics = m.metrics()
    # rclone's first request (16 MiB) as two parallel parts, then one stream reading ahead from its second request
    assert metrics["hfcache_readahead_streams_total"] == 2, m.log()
    assert metrics["hfcache_readahead_failed_streams_total"] == 0
    assert metrics.get("hfcache_prefetch_files_total", 0) == 0, m.log()  # its segments would each be a stream
    # what is not read ahead, rclone reads from S3 itself: no object's bytes cross the endpoint
    assert (snap / "config.json").read_bytes() == (tmp_path / "src/config.json").read_bytes()
    metrics = m.metrics()
    assert metrics["hfcache_s3_redirected_requests_total"] >= 1, metrics
    assert metrics["hfcache_s3_passed_bytes_total"] < 64 * 1024, metrics  # listings only
    # parts of 8 MiB, not only rclone's own doubling requests (0, 16, 48.. MiB)
    assert {8 * MiB, 24 * MiB, 32 * MiB, 40 * MiB} <= set(starts), starts
    assert stats["peak_open"] >= 6, stats  # parts in flight at once

    # four readers of one cold file: rclone's one downloader, one stream, every byte once
    path = snap / "shared.bin"
    want = sha256_of(tmp_path / "src/shared.bin")
    link.reset_stats()
    readers = [subprocess.Popen(["sha256sum", str(path)], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    assert [r.communicate(timeout=120)[0].split()[0] for r in readers] == [want] * 4
    settle(link)
    stats = link.stats.snapshot()
    print("four readers fetched", stats["bytes_down"] / (120 * MiB))
    assert 120 * MiB <= stats["bytes_down"] <= ONE * 120 * MiB, stats


def test_link_faults_during_read_ahead_never_reach_the_reader(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], s3_server: S3Server
) -> None:
    with read_through_faults(tmp_path, bucket, s3_env, s3_server, *READ_AHEAD) as m:
        metrics = m.metrics()
        retries = metrics["hfcache_readahead_part_retries_total"]
        print("streams", metrics["hfcache_readahead_streams_total"], "part retries", retries)
        assert metrics["hfcache_readahead_streams_total"] >= 1, m.log()


def test_warm_reads_each_file_once_in_order_when_the_mount_reads_ahead(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], link: S3Link, link_mount: Callable[..., RunningMount]
) -> None:
    """warm's segments would each become a stream reading parts past the segment's end (docs/cold-path.md); the
    supervisor's marker tells warm to read each file as one sequential reader, which the endpoint parallelises."""
    publish(tmp_path, bucket, s3_env, {"model.safetensors": BIG})
    m = link_mount(*READ_AHEAD)
    assert marker_live(m.mountpoint, kind=READ_AHEAD_MARKER) == {"parts": 8, "streams": 4}
    link.reset_stats()
    result = run_cli(["warm", "org/big", "--mountpoint", str(m.mountpoint)], {})
    assert result.returncode == 0, result.stderr
    assert "read-ahead on (one reader per file)" in result.stderr, result.stderr
    settle(link)
    stats = link.stats.snapshot()
    print("warm fetched", stats["bytes_down"] / BIG, "streams", m.metrics()["hfcache_readahead_streams_total"])
    assert BIG <= stats["bytes_down"] <= ONE * BIG, stats
    assert stats["peak_open"] >= 6, stats  # still many connections: the endpoint's parts
    m.stop()
    assert marker_live(m.mountpoint, kind=READ_AHEAD_MARKER) is None  # a stopped mount leaves no marker
