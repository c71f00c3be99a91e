"""Read what rclone has already written to its cache file of a mount path, instead of through FUSE.

hf-cache warm verifies every byte it fetches. Read back through the mount, each byte costs a FUSE round trip and
rclone's CPU (measured over the S3-like link on 2 cores: 4 files hashed through the mount at ~210 MB/s in all,
trailing the fetch by 2.5-5 s). rclone keeps each file's bytes in a sparse data file under its ``--cache-dir``
(cache/node/vfscache.py), and a FUSE read is answered from that same file, so hashing it verifies exactly what jobs
will be served. warm finds the file through the rclone process serving the mountpoint (its command line names
``--cache-dir`` and the remote); where that is not visible (a job pod, another user) warm reads through the mount.

Only bytes the filesystem reports as data (``SEEK_DATA``/``SEEK_HOLE``) are read from the cache file: a range rclone
has not written yet is a hole, and reading it would hash zeros.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from hf_cache.mount.rclone import REMOTE
from hf_cache.node import vfscache


@dataclass(frozen=True)
class NodeCache:
    cache_dir: Path
    remote_path: str  # what follows ``hfcache:`` on rclone's command line (bucket[/prefix])
    mountpoint: Path

    def data_file(self, path: Path) -> Path | None:
        """rclone's data file of ``path`` (a file under the mountpoint), if it exists yet."""
        try:
            rel = Path(os.path.realpath(path)).relative_to(self.mountpoint).as_posix()
        except ValueError:
            return None
        return vfscache.data_file(self.cache_dir, self.remote_path, rel)


def mount_args(argv: list[str], mountpoint: str) -> tuple[str, str] | None:
    """(cache dir, remote path) when ``argv`` is an rclone mount of ``mountpoint`` (canonical path). Pure."""
    if len(argv) < 4 or "rclone" not in os.path.basename(argv[0]) or argv[1] not in ("mount", "mount2", "cmount"):
        return None
    remote, _, remote_path = argv[2].partition(":")
    if remote != REMOTE and not remote.startswith(REMOTE + "{"):
        return None
    if os.path.realpath(argv[3]) != mountpoint or "--cache-dir" not in argv[4:]:
        return None
    at = argv.index("--cache-dir", 4) + 1
    return (argv[at], remote_path) if at < len(argv) else None


def find(mountpoint: Path) -> NodeCache | None:
    """The cache of the rclone serving ``mountpoint``, when this process can see that rclone and read its cache."""
    canonical = os.path.realpath(mountpoint)
    with contextlib.suppress(OSError):
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
            except OSError:
                continue
            found = mount_args(argv, canonical)
            if found is not None and os.access(found[0], os.R_OK | os.X_OK):
                return NodeCache(Path(found[0]), found[1], Path(canonical))
    return None


def data_span(fd: int, offset: int) -> int:
    """Bytes of written data in the open file ``fd`` from ``offset`` to the next hole (0 when ``offset`` is in a
    hole or past the end)."""
    try:
        if os.lseek(fd, offset, os.SEEK_DATA) != offset:
            return 0
        return max(0, os.lseek(fd, offset, os.SEEK_HOLE) - offset)
    except OSError:  # ENXIO: no data at or after offset; EINVAL: no SEEK_DATA here
        return 0
