"""Prefetch on open over the S3-like link: a cold sequential reader gets many connections, bytes cross once.

Real FUSE, real rclone, moto behind tests/lab's link (90 MB/s per connection, +30 ms per request). The reader is
this test process (or a child); the prefetcher lives in the mount's supervisor process and sees the open through
fanotify.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hf_cache.lab.mounting import RunningMount
from hf_cache.lab.s3link import LinkParams, S3Link
from hf_cache.lab.s3server import S3Server
from hf_cache.mount.markers import marker_live, marker_path
from hf_cache.mount.prefetch import Policy, fast_enough, plan, skip_reason
from hf_cache.readers.warm import prefetching_mount
from hf_cache.transfer import PER_END, MiB, plan_segments
from tests.conftest import mount_over, require_tool
from tests.test_warm import BIG, publish, settle, sparse_file

ONE = 1.05  # S3 bytes / size allowed (issue 11's goal): the file once + 4-7 MB abandoned at its one segment end
# BIG is prefetched as 112 + 98 MiB: the second segment's stream asks at 112, 128, 160 MiB; one reader alone asks at 0,
# 16, 48, 112 MiB (rclone's doubling requests), never at 128
SEGMENT_STREAM = {128 * MiB}
# The prefetch runs where the read-ahead endpoint is off (with it on, the supervisor runs none: each of its segments
# would be a sequential downloader of its own)
PREFETCH = ("--read-ahead-parts", "0")


@pytest.fixture
def link_mount(link_mount: Callable[..., RunningMount]) -> Callable[..., RunningMount]:
    """conftest's mount over the S3-like link, as it prefetches."""
    return lambda *extra: link_mount(*PREFETCH, *extra)


def sha256_of(path: Path, block: int = 4 * MiB) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def snapshot_dir(m: RunningMount) -> Path:
    return next((m.mountpoint / "hub/models--org--big/snapshots").iterdir())


def snapshot_dir_of(m: RunningMount, sha: str) -> Path:
    return m.mountpoint / "hub/models--org--big/snapshots" / sha


def wait_metric(m: RunningMount, name: str, want: float, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    got = m.metrics().get(name, 0.0)
    while got < want and time.monotonic() < deadline:
        time.sleep(0.3)
        got = m.metrics().get(name, 0.0)
    return got


def test_a_cold_sequential_reader_gets_parallel_segments_and_exact_bytes(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], link: S3Link, link_mount: Callable[..., RunningMount]
) -> None:
    publish(tmp_path, bucket, s3_env, {"model.safetensors": BIG, "small.bin": 40 * MiB})
    m = link_mount()
    snap = snapshot_dir(m)
    want = sha256_of(tmp_path / "src/model.safetensors")
    # a small file is read by rclone's one downloader alone: no prefetch
    link.reset_stats()
    assert sha256_of(snap / "small.bin") == sha256_of(tmp_path / "src/small.bin")
    assert m.metrics()["hfcache_prefetch_files_total"] == 0
    assert m.metrics()["hfcache_prefetch_in_flight"] == 0
    assert set(link.stats.range_starts) <= {0, 16 * MiB}, sorted(link.stats.range_starts)

    link.reset_stats()
    started = time.monotonic()
    assert sha256_of(snap / "model.safetensors") == want  # a plain sequential read(), byte-exact
    took = time.monotonic() - started
    print(f"cold sequential read of 210 MiB over the link: {took:.2f}s")
    settle(link)
    stats = link.stats.snapshot()
    starts = set(link.stats.range_starts)
    print("one reader fetched", stats["bytes_down"] / BIG, sorted(starts))
    assert BIG <= stats["bytes_down"] <= ONE * BIG, (stats, sorted(starts))
    assert starts >= SEGMENT_STREAM, sorted(starts)  # the prefetcher started a stream at the second segment
    assert wait_metric(m, "hfcache_prefetch_files_total", 1) == 1, m.log()
    assert m.metrics()["hfcache_prefetch_bytes_total"] >= BIG * 0.99
    # read events (each a kernel open of the file, a FUSE round trip): only the armed file's, merged in the queue,
    # until it is decided; reads of small.bin raised none
    events = m.metrics()["hfcache_prefetch_read_events_total"]
    print("read events", events)
    assert 1 <= events <= 3, events
    assert m.metrics()["hfcache_prefetch_fast_total"] == 0  # one 90 MB/s connection is below --prefetch-fast-rate


def safetensors_file(path: Path, size: int) -> None:
    """A valid safetensors file of ``size`` bytes, one u8 tensor "w" (sparse: random 1 MiB every 32 MiB)."""
    sparse_file(path, size)
    header = json.dumps({"w": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}})
    n = size - 8 - ((len(header) + 64 + 7) // 8 * 8)
    header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}})
    header += " " * (size - 8 - n - len(header))
    with path.open("r+b") as f:
        f.write(struct.pack("<Q", len(header)) + header.encode())


MMAP_READERS = """
import hashlib, mmap, sys
from safetensors import safe_open
with safe_open(sys.argv[1], framework="np") as f:
    print(hashlib.sha256(f.get_tensor("w").tobytes()).hexdigest())
with open(sys.argv[2], "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
    print(hashlib.sha256(m).hexdigest())
"""


def test_mmap_loads_of_cold_files_are_not_prefetched(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], link: S3Link, link_mount: Callable[..., RunningMount]
) -> None:
    """safetensors safe_open (and any mmap reader) faults pages in: no read(), so no prefetch - its 16 streams
    made safe_open slower than download + load over the link."""
    safetensors_file(tmp_path / "src/model.safetensors", BIG)
    sparse_file(tmp_path / "src/other.bin", BIG)
    publish(tmp_path, bucket, s3_env, {})
    m = link_mount()
    snap = snapshot_dir(m)
    link.reset_stats()
    out = subprocess.run(
        [sys.executable, "-c", MMAP_READERS, str(snap / "model.safetensors"), str(snap / "other.bin")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    data = (tmp_path / "src/model.safetensors").read_bytes()
    want = hashlib.sha256(data[8 + struct.unpack("<Q", data[:8])[0] :]).hexdigest()
    assert out.stdout.split() == [want, sha256_of(tmp_path / "src/other.bin")]
    settle(link)
    metrics = m.metrics()
    starts = set(link.stats.range_starts)
    print("mmap readers: starts", sorted(s // MiB for s in starts))
    assert metrics["hfcache_prefetch_files_total"] == 0, m.log()
    assert metrics["hfcache_prefetch_in_flight"] == 0
    assert metrics["hfcache_prefetch_bytes_total"] == 0
    assert not SEGMENT_STREAM & starts, sorted(starts)  # no segment stream started
    assert metrics["hfcache_prefetch_read_events_total"] == 0  # page faults raise no read event


def test_four_readers_of_one_cold_file_share_one_prefetch(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], link: S3Link, link_mount: Callable[..., RunningMount]
) -> None:
    publish(tmp_path, bucket, s3_env, {"model.safetensors": BIG})
    m = link_mount()
    path = snapshot_dir(m) / "model.safetensors"
    want = sha256_of(tmp_path / "src/model.safetensors")
    link.reset_stats()
    # four processes (fanotify merges queued opens of one file by one process into one event)
    readers = [subprocess.Popen(["sha256sum", str(path)], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    got = [r.communicate(timeout=120)[0].split()[0] for r in readers]
    assert got == [want] * 4
    assert wait_metric(m, "hfcache_prefetch_files_total", 1) == 1, m.log()
    settle(link)
    metrics = m.metrics()
    assert metrics["hfcache_prefetch_files_total"] == 1  # one prefetch, however many readers
    assert metrics["hfcache_prefetch_skipped_total"] >= 3
    stats = link.stats.snapshot()
    print("four readers fetched", stats["bytes_down"] / BIG)
    assert BIG <= stats["bytes_down"] <= ONE * BIG, stats


def test_an_open_through_a_bind_mount_in_another_namespace_is_prefetched(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], link: S3Link, link_mount: Callable[..., RunningMount]
) -> None:
    """Job pods see the node folder through a bind mount in their own mount namespace."""
    require_tool("unshare")
    publish(tmp_path, bucket, s3_env, {"model.safetensors": BIG})
    m = link_mount()
    rel = snapshot_dir(m).relative_to(m.mountpoint) / "model.safetensors"
    pod = tmp_path / "pod"
    pod.mkdir()
    link.reset_stats()
    script = f"mount --bind {m.mountpoint} {pod} && sha256sum {pod / rel}"
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == sha256_of(tmp_path / "src/model.safetensors")
    assert wait_metric(m, "hfcache_prefetch_files_total", 1) == 1, m.log()
    assert set(link.stats.range_starts) >= SEGMENT_STREAM, sorted(link.stats.range_starts)


def test_prefetch_keeps_working_after_rclone_restarts_and_a_new_snapshot(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], link: S3Link, link_mount: Callable[..., RunningMount]
) -> None:
    """A fanotify mark lives with the mount's superblock: the supervisor marks each new mount again. A snapshot
    published after the mount started (folders rclone had never listed) is watched too."""
    publish(tmp_path, bucket, s3_env, {"model.safetensors": BIG})
    m = link_mount("--freshness", "1s")
    old = snapshot_dir(m)
    os.kill(m.rclone_pid(), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while m.metrics().get("hfcache_rclone_restarts_total", 0) < 1 or m.get("/readyz")[0] != 200:
        assert time.monotonic() < deadline, m.log()
        time.sleep(0.3)
    # the new rclone's first listing of the snapshot folders done before publishing: a folder listed while its
    # refresh is still uploading stays incomplete in rclone's listing (a known race, docs/cold-path.md "Stop 24";
    # it failed this test in 2 of 4 full runs)
    while "new snapshot folders" not in m.log().rpartition("restarting rclone")[2]:
        assert time.monotonic() < deadline, m.log()
        time.sleep(0.3)
    # a new snapshot: same name, new bytes (the first 1 MiB of each 32 MiB block is random)
    publish(tmp_path, bucket, s3_env, {"model.safetensors": BIG})
    ref = m.mountpoint / "hub/models--org--big/refs/main"
    deadline = time.monotonic() + 30
    while ref.read_text() == old.name or not (snapshot_dir_of(m, ref.read_text()) / "model.safetensors").exists():
        assert time.monotonic() < deadline, (
            f"the new snapshot never reached the mount: refs/main reads {ref.read_text()!r} (old {old.name}); "
            f"mount log:\n{m.log()[-4000:]}"
        )
        time.sleep(0.5)
    snap = snapshot_dir_of(m, ref.read_text())
    link.reset_stats()
    assert sha256_of(snap / "model.safetensors") == sha256_of(tmp_path / "src/model.safetensors")
    assert wait_metric(m, "hfcache_prefetch_files_total", 1) == 1, m.log()
    assert set(link.stats.range_starts) >= SEGMENT_STREAM, sorted(link.stats.range_starts)


@contextlib.contextmanager
def read_through_faults(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], s3_server: S3Server, *extra: str
) -> Iterator[RunningMount]:
    """A cold 210 MiB file read byte-exact within 60 s while the link answers 5xx, resets and stalls; yields the
    mount afterwards (tests/test_readahead_mount.py uses it too, with the read-ahead endpoint on)."""
    publish(tmp_path, bucket, s3_env, {"model.safetensors": BIG})
    want = sha256_of(tmp_path / "src/model.safetensors")
    params = LinkParams(error_rate=0.15, reset_rate=0.1, stall_rate=0.05, stall_s=3.0, seed=11)
    with S3Link(s3_server.endpoint, LinkParams()) as link:
        for m in mount_over(tmp_path, bucket, s3_env, link, *extra):
            snap = snapshot_dir(m)
            assert "model.safetensors" in {p.name for p in snap.iterdir()}  # the snapshot folder listed too
            link.params = params  # faults from now on: listing done, the reads (and any prefetch) meet them
            started = time.monotonic()
            assert sha256_of(snap / "model.safetensors") == want
            assert time.monotonic() - started < 60
            stats = link.stats.snapshot()
            assert stats["errors"] + stats["resets"] + stats["stalls"] > 0, stats  # the link did inject faults
            yield m


def test_link_faults_during_a_prefetch_never_reach_the_reader(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], s3_server: S3Server
) -> None:
    with read_through_faults(tmp_path, bucket, s3_env, s3_server, *PREFETCH) as m:
        # the prefetch ran (finished or stopped by a fault; it may end after the reader, whose own downloader
        # also filled the file); either way the reader got every byte
        deadline = time.monotonic() + 60
        while True:
            metrics = m.metrics()
            ended = metrics["hfcache_prefetch_files_total"] + metrics["hfcache_prefetch_failed_total"]
            if ended >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert ended == 1, m.log()


def test_a_reader_whose_own_connection_is_fast_enough_is_left_alone(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], link: S3Link, link_mount: Callable[..., RunningMount]
) -> None:
    """The same 90 MB/s link and reader as above, with the threshold below what one connection gives: no prefetch
    (on loopback its extra streams only cost CPU)."""
    publish(tmp_path, bucket, s3_env, {"model.safetensors": BIG})
    m = link_mount("--prefetch-fast-rate", "20MB")
    snap = snapshot_dir(m)
    link.reset_stats()
    assert sha256_of(snap / "model.safetensors") == sha256_of(tmp_path / "src/model.safetensors")
    assert wait_metric(m, "hfcache_prefetch_fast_total", 1) == 1, m.log()
    settle(link)
    metrics = m.metrics()
    assert metrics["hfcache_prefetch_files_total"] == 0, m.log()
    assert metrics["hfcache_prefetch_bytes_total"] == 0
    starts = set(link.stats.range_starts)
    assert not SEGMENT_STREAM & starts, sorted(starts)
    assert link.stats.snapshot()["bytes_down"] <= 1.05 * BIG


# -- pure parts ---------------------------------------------------------------------------------------------------


def test_skip_reason_policy() -> None:
    p = Policy(streams=16, min_size=64 * MiB, cache_max_bytes=10_000 * MiB)
    big = 2000 * MiB
    assert skip_reason(p, big, 0, 0, busy=False, recently_done=False) is None
    assert skip_reason(Policy(0, 64 * MiB, 0), big, 0, 0, False, False) == "off"
    assert skip_reason(p, 63 * MiB, 0, 0, False, False) == "small"
    assert skip_reason(p, 64 * MiB, 0, 0, False, False) == "one segment"  # one 48 MiB segment + tail
    assert skip_reason(p, 99 * MiB, 0, 0, False, False) == "one segment"  # under one end per PER_END
    assert skip_reason(p, 100 * MiB, 0, 0, False, False) is None  # 48 + 52 MiB
    assert skip_reason(p, 210 * MiB, 0, 0, False, False) is None  # 112 + 98 MiB
    assert skip_reason(p, big, 0, 0, busy=True, recently_done=False) == "in flight"
    assert skip_reason(p, big, big, 0, False, False) == "cached"
    assert skip_reason(p, big, big - 1, 0, False, False) is None  # partly cached: the rest still comes faster
    assert skip_reason(p, big, 0, 0, False, recently_done=True) == "done"
    assert skip_reason(p, big, 0, 4000 * MiB, False, False) == "cache cap"  # half the cap in flight at most
    assert skip_reason(Policy(16, 64 * MiB, 0), big, 0, 10**15, False, False) is None  # no cap known


def test_plan_bounds_segment_ends_by_file_size() -> None:
    chunk = 16 * MiB
    for mb in range(64, 41_000, 37):
        size = mb * MiB
        segs = plan(size, 16)
        assert segs[0].offset == 0 and segs[-1].end == size
        assert all(a.end == b.offset for a, b in itertools.pairwise(segs))  # contiguous, in order
        assert (len(segs) - 1) * PER_END <= size, (mb, [x.size // MiB for x in segs])
        for x in segs[:-1]:  # every end but end of file is where rclone's doubling requests end
            assert (x.size // chunk + 1) & (x.size // chunk) == 0 and x.size % chunk == 0, (mb, x)
    # the sizes measured
    assert [x.size // MiB for x in plan(210 * MiB, 16)] == [112, 98]
    assert [x.size // MiB for x in plan(300 * MiB, 16)] == [112, 112, 76]
    assert [x.size // MiB for x in plan(150 * MiB, 16)] == [48, 102]  # shortest longest segment, not [150]
    assert len(plan(1_000_000_000, 16)) == 9  # 112 MiB segments (4 of 240 MiB with one end per 200 MiB)
    assert len(plan(2_000_000_000, 16)) == 17  # 112 MiB segments (8 of 240 MiB with one end per 200 MiB)
    assert len(plan(40_000 * MiB, 16)) == len(plan_segments(40_000 * MiB, 2032 * MiB))  # bound not binding
    assert len(plan(99 * MiB, 16)) == 1


def test_fast_enough() -> None:
    p = Policy(16, 64 * MiB, 0, fast_rate=300_000_000)
    assert fast_enough(p, 150_000_000, 0.4)  # 375 MB/s
    assert not fast_enough(p, 36_000_000, 0.4)  # one S3 connection: 90 MB/s
    assert not fast_enough(p, 0, 0.4)  # not started yet (first byte ~30 ms away)
    assert not fast_enough(Policy(16, 64 * MiB, 0), 10**12, 0.4)  # 0 = always prefetch
    assert not fast_enough(p, 10**9, 0.0)


def test_marker_is_live_only_while_touched(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    assert marker_live(mnt) is None
    marker_path(mnt).write_text('{"streams": 16, "min_size": 67108864}')
    assert marker_live(mnt) == {"streams": 16, "min_size": 67108864}
    assert marker_live(mnt, now=time.time() + 3600) is None  # a supervisor killed without cleanup
    marker_path(mnt).write_text("not json")
    assert marker_live(mnt) is None


def test_warm_finds_the_marker_of_the_mount_holding_a_snapshot(tmp_path: Path) -> None:
    snap = tmp_path / "mnt/hub/models--org--big/snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    assert prefetching_mount(snap) is None  # no marker: warm fetches the segments itself
    marker_path(tmp_path / "mnt").write_text('{"streams": 16, "min_size": 67108864}')
    assert prefetching_mount(snap) == {"streams": 16, "min_size": 67108864}


# a reader that mmap-loads file b right after opening file a: reports how many of b's pages are still in the page cache
# after the watcher has had time to open b too (an open on the mount drops the file's pages: no FOPEN_KEEP_CACHE)
MMAP_AFTER_SLOW_OPEN = """
import ctypes, os, sys, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
a, b = sys.argv[1:3]
os.close(os.open(a, os.O_RDONLY))
time.sleep(0.3)
fd = os.open(b, os.O_RDONLY)
time.sleep(0.5)
n = os.fstat(fd).st_size
addr = libc.mmap(None, n, 1, 1, fd, 0)
pages = (ctypes.c_ubyte * n).from_address(addr)
sum(pages[i] for i in range(0, n, 4096))
time.sleep(2.5)
vec = (ctypes.c_ubyte * (n // 4096))()
assert libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(n), vec) == 0
print(sum(v & 1 for v in vec), n // 4096)
"""


def test_a_busy_dispatcher_does_not_delay_the_open_that_drops_a_readers_pages(
    s3_server: S3Server, bucket: str, mounted: Callable[..., RunningMount], tmp_path: Path
) -> None:
    """The watcher's open of a file (the kernel's, when it reads the event) throws away what a reader has faulted in
    so far: events are taken off the queue at once, not after the dispatcher has decided on earlier ones."""
    from prometheus_client import CollectorRegistry

    from hf_cache.mount.openwatch import Opened
    from hf_cache.mount.prefetch import Prefetcher

    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="a.bin", Body=b"a" * (2 * MiB))
    client.put_object(Bucket=bucket, Key="b.bin", Body=os.urandom(16 * MiB))
    m = mounted(bucket=bucket, extra_args=(*PREFETCH, "--prefetch-streams", "0"))  # the supervisor's watch off

    class SlowDecider(Prefetcher):
        def _consider(self, ev: Opened) -> None:
            if os.fstat(ev.fd).st_size == 2 * MiB:
                time.sleep(2.0)  # a decision that takes long (a loaded node, a slow stat through FUSE)
            super()._consider(ev)

    stop = threading.Event()
    policy = Policy(streams=1, min_size=1 * MiB, cache_max_bytes=0)
    p = SlowDecider(m.mountpoint, tmp_path / "m-cache", bucket, policy, CollectorRegistry(), stop)
    p.start()
    p.mounted()
    try:
        out = subprocess.run(
            [sys.executable, "-c", MMAP_AFTER_SLOW_OPEN, str(m.mountpoint / "a.bin"), str(m.mountpoint / "b.bin")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stop.set()
        p.close()
    assert out.returncode == 0, out.stderr
    resident, total = map(int, out.stdout.split())
    assert resident == total, f"{total - resident} of {total} pages the reader had faulted in were dropped"
