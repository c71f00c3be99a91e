"""hf-cache warm over an S3-like link: many streams at once, verified against the manifest, 0 bytes after.

The mount talks to the loopback S3 server through cache/lab/s3link.py (90 MB/s per connection, +30 ms per
request), where one stream per file is the slow way and a corrupt object would otherwise reach every job.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hf_cache.errors import IntegrityError
from hf_cache.lab.mounting import RunningMount
from hf_cache.lab.s3link import S3Link
from hf_cache.lab.s3server import S3Server
from hf_cache.progress import Progress
from hf_cache.readers.nodecache import NodeCache, data_span, mount_args
from hf_cache.readers.warm import WarmFile, _Fill, plan_file, verify
from hf_cache.transfer import PER_END, MiB, plan_segments
from tests.refresh_helpers import run_cli, run_refresh

BIG = 210 * MiB  # above refresh's 200 MiB multipart threshold and warm's largest segment


def sparse_file(path: Path, size: int) -> None:
    """A file of ``size`` bytes written quickly: random 1 MiB blocks every 32 MiB, zeros between."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size)
        for off in range(0, size, 32 * MiB):
            f.seek(off)
            f.write(os.urandom(min(MiB, size - off)))


def settle(link: S3Link, quiet: float = 6.0, timeout: float = 30.0) -> None:
    """Wait until no bytes have crossed the link for ``quiet`` seconds. A segment's stream that warm stopped
    reading lingers in rclone (idle up to 5 s) with its read-ahead in flight; until it exits, a read landing near it
    can wake it and pull a few more MB."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = link.stats.snapshot()["bytes_down"]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.5)


def publish(tmp_path: Path, bucket: str, s3_env: dict[str, str], files: dict[str, int]) -> None:
    src = tmp_path / "src"
    for name, size in files.items():
        sparse_file(src / name, size)
    (src / "config.json").write_text('{"model_type": "gpt2"}')
    models = tmp_path / "models.txt"
    models.write_text(f"org/big source=file://{src}\n")
    result = run_refresh(models, bucket, s3_env, prefix="")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("prefetch", ["on", "off"])
def test_warm_fetches_a_big_file_over_the_link_in_parallel_verified_once(
    tmp_path: Path,
    bucket: str,
    s3_env: dict[str, str],
    link: S3Link,
    link_mount: Callable[..., RunningMount],
    prefetch: str,
) -> None:
    """warm fetches the segments itself; with the mount's prefetch on, the prefetcher's streams (if it does not see
    warm's fill as fast enough) read the same segments from the same rclone downloaders. Either way: parallel,
    verified from rclone's cache file, fetched once."""
    publish(tmp_path, bucket, s3_env, {"model.safetensors": BIG})
    no_read_ahead = ("--read-ahead-parts", "0")  # the prefetch runs only then; with read-ahead: test_readahead_mount
    m = link_mount(*no_read_ahead) if prefetch == "on" else link_mount(*no_read_ahead, "--prefetch-streams", "0")
    link.reset_stats()
    result = run_cli(["warm", "org/big", "--mountpoint", str(m.mountpoint)], {})
    assert result.returncode == 0, result.stderr
    assert re.search(r"warmed 1 snapshots?: 2 files", result.stdout), result.stdout
    settle(link)
    stats = link.stats.snapshot()
    # the prefetcher followed warm's streams at most once, or left the file alone (warm filled it fast enough)
    assert m.metrics()["hfcache_prefetch_files_total"] <= (1 if prefetch == "on" else 0), m.log()
    # the hash read what rclone had written to its cache file, not every byte again through FUSE (the head of a
    # segment can be read through the mount while the cache file has not got it yet)
    cached = re.search(r"verified (\d+) MiB, (\d+) MiB of it read from rclone's cache file", result.stderr)
    assert cached and int(cached[2]) >= 0.8 * int(cached[1]), result.stderr
    # a stream started at each segment (210 MiB: 112 + 98 MiB, warm.plan_file), and each went on from there in rclone's
    # doubling requests (16, 32 MiB): one reader's requests start at 0, 16, 48, 112, 240 MiB, never at 128 or 160
    starts = set(link.stats.range_starts)
    assert {112 * MiB, 128 * MiB, 160 * MiB} <= starts, sorted(starts)
    # fetched once, plus what rclone had read ahead when the first segment's stream stopped (~4-7 MB), not once per
    # reader or per stream
    assert BIG <= stats["bytes_down"] <= 1.1 * BIG, stats
    # and the node cache now holds every byte: a job's read fetches nothing of the file over the link (no ranged
    # GET; the supervisor's own folder listings, a few hundred bytes, may cross meanwhile)
    fetched, gets = link.stats.snapshot()["bytes_down"], len(link.stats.range_starts)
    snap = next((m.mountpoint / "hub/models--org--big/snapshots").iterdir())
    assert (snap / "model.safetensors").stat().st_size == BIG
    with (snap / "model.safetensors").open("rb") as f:
        while f.read(16 * MiB):
            pass
    assert link.stats.range_starts[gets:] == []
    assert link.stats.snapshot()["bytes_down"] - fetched < 64 * 1024


def test_warm_refuses_a_corrupt_object(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], s3_server: S3Server, mounted
) -> None:
    publish(tmp_path, bucket, s3_env, {"model.safetensors": 60 * MiB})
    client = s3_server.client()
    key = next(
        o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"] if o["Key"].endswith("/model.safetensors")
    )
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[-5] ^= 0xFF  # one flipped bit in the last segment: same size, wrong bytes
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    m = mounted(bucket=bucket)
    result = run_cli(["warm", "org/big", "--mountpoint", str(m.mountpoint)], {})
    assert result.returncode == 1
    assert "model.safetensors: sha256" in result.stderr and "does not match the published" in result.stderr
    assert "hf-cache verify" in result.stderr
    assert "Traceback" not in result.stderr


def test_warm_without_a_mount_says_not_mounted(tmp_path: Path) -> None:
    for mountpoint in (tmp_path / "absent", tmp_path):
        result = run_cli(["warm", "org/model", "--mountpoint", str(mountpoint)], {})
        assert result.returncode != 0
        assert result.stderr.startswith("hf-cache: error: not mounted:"), result.stderr
        assert "not published" not in result.stderr
        assert "Traceback" not in result.stderr


def test_mount_args_finds_the_cache_of_this_mountpoint_only(tmp_path: Path) -> None:
    mnt = str(tmp_path)
    argv = ["/x/rclone", "mount2", "hfcache:bucket/pre", mnt, "--read-only", "--cache-dir", "/c", "--rc"]
    assert mount_args(argv, mnt) == ("/c", "bucket/pre")
    assert mount_args(["rclone", "mount2", "hfcache{tTX0l}:b", mnt, "--cache-dir", "/c"], mnt) == ("/c", "b")
    assert mount_args(argv, mnt + "-other") is None  # another mount
    assert mount_args(["rclone", "serve", "s3", mnt, "--cache-dir", "/c"], mnt) is None  # not a mount
    assert mount_args(["rclone", "mount2", "other:b", mnt, "--cache-dir", "/c"], mnt) is None  # not ours
    assert mount_args(["rclone", "mount2", "hfcache:b", mnt], mnt) is None  # no cache dir
    assert mount_args(["rclone", "mount2", "hfcache:b", mnt, "--cache-dir"], mnt) is None


def fake_node(tmp_path: Path, content: bytes, cached: dict[int, bytes]) -> tuple[WarmFile, NodeCache, Path]:
    """A file as the mount shows it (``content``) and rclone's sparse cache file of it holding only ``cached``
    (offset -> bytes), laid out as rclone lays them out (vfs/<remote>/<remote path>/<path in the mount>, beside
    vfsMeta/<remote>/, which rclone creates at start)."""
    mnt = tmp_path / "mnt"
    path = mnt / "hub/models--org--m/snapshots/abc/model.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    data = tmp_path / "cache/vfs/hfcache{x}/bucket/hub/models--org--m/snapshots/abc/model.safetensors"
    data.parent.mkdir(parents=True)
    (tmp_path / "cache/vfsMeta/hfcache{x}").mkdir(parents=True)
    with data.open("wb") as f:
        f.truncate(len(content))
        for off, chunk in cached.items():
            f.seek(off)
            f.write(chunk)
    sha = hashlib.sha256(content).hexdigest()
    return WarmFile(path, "model.safetensors", len(content), sha), NodeCache(tmp_path / "cache", "bucket", mnt), data


def fetched(f: WarmFile) -> _Fill:
    job = _Fill(f, plan_segments(f.size, 8 * MiB))
    for i, seg in enumerate(job.segments):
        job.advance(i, seg.end)
    return job


def test_data_span_sees_the_holes_rclone_has_not_written(tmp_path: Path) -> None:
    content = os.urandom(16 * MiB)
    f, cache, data = fake_node(tmp_path, content, {0: content[:MiB], 8 * MiB: content[8 * MiB : 9 * MiB]})
    fd = os.open(data, os.O_RDONLY)
    try:
        assert (data_span(fd, 0), data_span(fd, 4096), data_span(fd, 2 * MiB)) == (MiB, MiB - 4096, 0)
        assert (data_span(fd, 8 * MiB), data_span(fd, 15 * MiB), data_span(fd, 16 * MiB)) == (MiB, 0, 0)
    finally:
        os.close(fd)
    assert cache.data_file(f.path) == data


def test_warm_hashes_what_the_cache_file_holds_and_the_rest_through_the_mount(tmp_path: Path) -> None:
    """Holes in rclone's cache file (not fetched yet) are read through the mount, never hashed as zeros."""
    content = os.urandom(16 * MiB)
    f, cache, _ = fake_node(tmp_path, content, {0: content[:MiB], 8 * MiB: content[8 * MiB : 9 * MiB]})
    assert verify(fetched(f), cache, Progress("t", tty=False)) == 2 * MiB


def test_a_cache_file_that_differs_is_checked_through_the_mount_before_blaming_s3(tmp_path: Path) -> None:
    """A cache file warm misread (a filesystem without SEEK_HOLE shows holes as zeros) must not fail a good object;
    the mount, which is what jobs read, decides."""
    content = os.urandom(4 * MiB)
    f, cache, _ = fake_node(tmp_path, content, {0: bytes(4 * MiB)})
    verify(fetched(f), cache, Progress("t", tty=False))  # no IntegrityError
    bad = WarmFile(f.path, f.name, f.size, "0" * 64)
    with pytest.raises(IntegrityError, match="does not match the published"):
        verify(fetched(bad), cache, Progress("t", tty=False))


def test_plan_file_bounds_segment_ends_by_file_size() -> None:
    """Each segment end fetches a few MB twice; a file gets parallel segments only as far as that stays ~3%."""
    for mib in (1, 100, 199, 210, 300, 450, 1000, 2048, 10240):
        segments = plan_file(mib * MiB, 16)
        assert segments[0].offset == 0 and segments[-1].end == mib * MiB
        assert all(a.end == b.offset for a, b in itertools.pairwise(segments))
        assert len(segments) <= 1 + mib * MiB // PER_END, (mib, segments)
        # every end but the file's is where rclone's doubling requests from the segment's start end (16 * (2**k-1))
        assert all((s.size // MiB // 16 + 1) & (s.size // MiB // 16) == 0 for s in segments[:-1]), segments
    assert len(plan_file(210 * MiB, 16)) == 2 and len(plan_file(2048 * MiB, 16)) == 18
