"""What the kernel says about the mountpoint: is it our live FUSE mount, a stale one, or nothing.

A crashed rclone leaves its FUSE mount in place, and every access then fails with ENOTCONN ("Transport endpoint
is not connected"); a new mount on the same path fails until it is lazily unmounted. Checks that touch the
mount run in a thread with a timeout, because a wedged FUSE server can block a stat forever.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from hf_cache.errors import MountError


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def canonical(mountpoint: Path) -> str:
    """The absolute path the kernel lists for ``mountpoint``, without touching ``mountpoint`` itself.

    ``os.path.realpath(mountpoint)`` stats the mountpoint, and a stat of a hung FUSE mount never returns: only its
    parent (never on the mount) is resolved.
    """
    absolute = Path(os.path.abspath(mountpoint))
    if absolute.parent == absolute:
        return str(absolute)
    return os.path.join(os.path.realpath(absolute.parent), absolute.name)


def mount_fstype(mountpoint: Path) -> str | None:
    """The filesystem type mounted exactly at ``mountpoint`` (last mount wins), or None. Reads only /proc."""
    target = canonical(mountpoint)
    fstype = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                sep = parts.index("-")
                if _unescape(parts[4]) == target:
                    fstype = parts[sep + 1]
    except OSError:
        return None
    return fstype


def is_fuse(mountpoint: Path) -> bool:
    fstype = mount_fstype(mountpoint)
    return fstype is not None and fstype.startswith("fuse")


def _with_timeout(fn: Callable[[], object], timeout: float) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout}s")
    if errors:
        raise errors[0]


def is_stale(mountpoint: Path, timeout: float = 5.0) -> bool:
    """A FUSE mount whose server is gone (ENOTCONN) or hung (no answer in ``timeout``)."""
    if not is_fuse(mountpoint):
        return False
    try:
        _with_timeout(lambda: os.stat(mountpoint), timeout)
        return False
    except TimeoutError:
        return True
    except OSError as exc:
        return exc.errno in (errno.ENOTCONN, errno.EIO, errno.ECONNABORTED)


def lists(mountpoint: Path, timeout: float = 5.0) -> bool:
    """The mount is live: it is FUSE and its root lists within ``timeout``."""
    if not is_fuse(mountpoint):
        return False
    try:
        _with_timeout(lambda: os.listdir(mountpoint), timeout)
        return True
    except (OSError, TimeoutError):
        return False


def fusermount() -> str:
    path = shutil.which("fusermount3") or shutil.which("fusermount")
    if path is None:
        raise MountError("fusermount3 not found: install the fuse3 package (Debian: apt-get install fuse3)")
    return path


def unmount(mountpoint: Path, lazy: bool = False) -> bool:
    """Unmount (lazily if asked, or if a plain unmount fails because the mount is busy). True if gone."""
    if mount_fstype(mountpoint) is None:
        return True
    tool = fusermount()
    for args in (["-u"], ["-uz"]) if not lazy else (["-uz"],):
        subprocess.run([tool, *args, str(mountpoint)], capture_output=True, timeout=10)
        if mount_fstype(mountpoint) is None:
            return True
    # Not a FUSE mount we can fusermount (or fusermount refused): try the kernel directly.
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=10)
    return mount_fstype(mountpoint) is None
