"""rclone flags that carry a guarantee, each with a test that fails when the flag goes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from hf_cache.lab.mounting import start_mount
from hf_cache.lab.s3link import LinkParams, S3Link
from hf_cache.lab.s3server import S3Server, via
from tests.test_mount import ROOT, SHA1, SHA2, publish, wait_for


def test_a_stray_file_in_the_mountpoint_is_mounted_over_logged_and_counted(
    mounted, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    publish(s3_server.client(), bucket, {f"{ROOT}/refs/main": SHA1.encode()})
    mountpoint = tmp_path / "stray-mnt"
    mountpoint.mkdir()
    (mountpoint / "written-by-a-pod.txt").write_text("x")
    m = mounted(bucket=bucket, prefix="p", name="stray", wait=False)
    m.wait_ready(timeout=20)  # rclone refuses a non-empty mountpoint without --allow-non-empty: it never gets ready
    assert (m.mountpoint / ROOT / "refs" / "main").read_bytes() == SHA1.encode()
    assert not (m.mountpoint / "written-by-a-pod.txt").exists()  # hidden under the mount, not deleted
    metrics = m.metrics()
    assert metrics["hfcache_mountpoint_stray_entries"] == 1
    assert metrics["hfcache_rclone_restarts_total"] == 0
    assert "1 stray entries in the unmounted" in m.log() and "written-by-a-pod.txt" in m.log()


def test_a_moved_ref_is_visible_even_with_unchanged_size_and_mtime_metadata(
    mounted, s3_server: S3Server, bucket: str
) -> None:
    """A ref is 40 bytes whatever it says, and ``rclone copy``/``sync`` keep its ``mtime`` metadata: the object's
    ETag (in rclone's fingerprint of a cached file) is what tells the new version apart (measured: this passes
    without --use-server-modtime too)."""
    client = s3_server.client()
    meta = {"mtime": "1700000000.000000000"}
    client.put_object(Bucket=bucket, Key=f"p/{ROOT}/refs/main", Body=SHA1.encode(), Metadata=meta)
    client.put_object(Bucket=bucket, Key="p/hf-cache/status.json", Body=b'{"ended": "one"}')
    m = mounted(bucket=bucket, prefix="p", extra_args=("--freshness", "1s"))
    ref = m.mountpoint / ROOT / "refs" / "main"
    assert ref.read_bytes() == SHA1.encode()
    time.sleep(1.1)
    client.put_object(Bucket=bucket, Key=f"p/{ROOT}/refs/main", Body=SHA2.encode(), Metadata=meta)
    client.put_object(Bucket=bucket, Key="p/hf-cache/status.json", Body=b'{"ended": "two"}')
    wait_for(lambda: ref.read_bytes() == SHA2.encode(), timeout=8, step=0.25)


def test_use_server_modtime_saves_a_head_request_per_file(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    """Without --use-server-modtime rclone reads each file's modtime from its metadata: one HEAD per file a loader
    stats (150 shards: 150 requests before the first byte). With it, the listing's LastModified is enough."""
    n = 20
    publish(s3_server.client(), bucket, {f"{ROOT}/snapshots/{SHA1}/shard-{i:02d}": b"x" for i in range(n)})
    link = S3Link(s3_server.endpoint, LinkParams(rate_mb=0, latency_s=0))
    env = via(s3_server.env(), link.endpoint)
    m = None
    try:
        m = start_mount(bucket=bucket, prefix="p", env=env, mountpoint=tmp_path / "mnt", cache_dir=tmp_path / "cache")
        snap = m.mountpoint / ROOT / "snapshots" / SHA1
        names = sorted(os.listdir(snap))
        assert len(names) == n
        link.reset_stats()
        for name in names:
            assert (snap / name).stat().st_size == 1
        requests = link.stats.requests
    finally:
        if m is not None:
            m.stop()
        link.stop()
    print(f"S3 requests to stat {n} listed files: {requests}")
    assert requests <= 2
