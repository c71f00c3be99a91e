"""Shared pieces of the benchmarks: a loopback S3 server, timing, a mount, and one-line reports.

Every benchmark measures hf-cache and its alternative side by side in one run, against the same loopback S3
server, and reports ratios (absolute numbers on a shared 2-core machine with moto as the S3 server mean little).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hf_cache.lab.mounting import RunningMount, start_mount  # noqa: E402
from hf_cache.lab.s3server import S3Server, start_rclone_s3, start_s3_server  # noqa: E402

__all__ = ["ROOT", "RunningMount", "S3Server", "median_time", "mounted", "s3", "start_mount", "write_random"]


@contextlib.contextmanager
def s3(kind: str = "moto", root: Path | None = None) -> Iterator[S3Server]:
    """A loopback S3 server: moto (what the tests use), or ``rclone serve s3`` over a local folder.

    moto answers a ranged GET by slicing the whole in-memory object, which penalises every chunked reader (rclone's
    VFS, boto3's parallel download); ``rclone serve s3`` serves ranges from disk like a real object store.
    """
    if kind == "moto":
        server = start_s3_server()
    else:
        own_root = root is None
        root = root or Path(tempfile.mkdtemp(prefix="bench-s3-"))
        server = start_rclone_s3(root)
    try:
        yield server
    finally:
        server.stop()
        if kind != "moto" and own_root:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def over_link(server: S3Server, args: object) -> Iterator[S3Server]:
    """The server as readers see it: behind the S3-like link (``--link s3``, the default) or on plain loopback.

    Prints the link's parameters. Publishing is done on the server itself; what is measured goes through this.
    """
    from hf_cache.lab.s3link import S3Link, link_params

    if getattr(args, "link", "loopback") == "loopback":
        print("link: plain loopback (no cap, no latency)", flush=True)
        yield server
        return
    with S3Link(server.endpoint, link_params(args)) as link:  # type: ignore[arg-type]
        print(link.params.describe(), flush=True)
        yield S3Server(endpoint=link.endpoint, proc=server.proc)


@contextlib.contextmanager
def mounted(
    server: S3Server, bucket: str, prefix: str, work: Path, name: str, cache_dir: Path | None = None
) -> Iterator[RunningMount]:
    m = start_mount(
        bucket=bucket,
        prefix=prefix,
        env=server.env(),
        mountpoint=work / f"{name}-mnt",
        cache_dir=cache_dir or work / f"{name}-cache",
        extra_args=("--cache-max-size", "50G"),
    )
    try:
        yield m
    finally:
        m.stop()


def median_time(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(4 * 1024 * 1024)
    with path.open("wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)


def read_in_subprocess(paths: list[Path]) -> float:
    """Read files in a fresh process (no page cache carried by us); returns seconds."""
    code = (
        "import sys,time,os\nt=time.perf_counter()\nfor p in sys.argv[1:]:\n fd=os.open(p,os.O_RDONLY)\n"
        " while os.read(fd,16<<20): pass\n os.close(fd)\nprint(time.perf_counter()-t)"
    )
    out = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"
