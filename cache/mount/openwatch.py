"""Notice every open of a file on the FUSE mount, whoever opens it and through whichever path, and the first read()
of a chosen file.

fanotify with a filesystem mark (``FAN_MARK_FILESYSTEM``, ``FAN_OPEN``) sees opens of any file of the mount's
superblock: through the mountpoint, through bind mounts of it in job pods (other mount namespaces), through the node
tier's symlinks, in folders rclone listed after the mark was set (a new snapshot) - which inotify (one watch per
folder) and polling rclone's rc (only after a downloader has started) do not. Each event carries the opener's pid and
a read-only descriptor of the opened file, so the file can be read without knowing the path the opener used.
Needs CAP_SYS_ADMIN (the DaemonSet is privileged). A mark lives as long as the mount's superblock: after rclone is
restarted the new mount is marked again. The descriptor fanotify opens for an event raises no event itself.

``arm(fd)`` adds an inode mark for ``FAN_ACCESS`` on one opened file: read() of it raises an event, page faults of an
mmap of it do not (measured on a FUSE mount: mmap-faulting 32 MiB raised none, two read()s raised one, merged). So a
file can be told apart by how it is read, and only armed files raise access events: every event costs the kernel an
open of the file, a FUSE round trip to rclone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import struct
from dataclasses import dataclass
from pathlib import Path

from hf_cache.errors import MountError

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_ACCESS = 0x1
FAN_MARK_ADD = 0x1
FAN_MARK_REMOVE = 0x2
FAN_MARK_FILESYSTEM = 0x100
FAN_OPEN = 0x20
FAN_Q_OVERFLOW = 0x4000
FAN_NOFD = -1
_META = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask,
# fd, pid

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_libc.fanotify_mark.restype = ctypes.c_int


@dataclass(frozen=True)
class Opened:
    fd: int  # read-only descriptor of the opened file, owned by the receiver (close it)
    pid: int  # the opener (thread group id)
    access: bool = False  # a read() of an armed file, not an open


class OpenWatch:
    """A fanotify group; ``mark(path)`` adds the filesystem holding ``path``; ``events()`` yields opens."""

    def __init__(self) -> None:
        fd = _libc.fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, os.O_RDONLY | os.O_LARGEFILE)
        if fd < 0:
            err = ctypes.get_errno()
            raise MountError(
                f"fanotify is not available ({os.strerror(err)}): prefetch-on-open needs CAP_SYS_ADMIN (run the "
                "container privileged) or turn it off with --prefetch-streams 0"
            )
        self.fd = fd

    def mark(self, path: Path) -> None:
        if _libc.fanotify_mark(self.fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_OPEN, -1, os.fsencode(path)) < 0:
            err = ctypes.get_errno()
            raise MountError(f"cannot watch opens on {path}: {os.strerror(err)}")

    def arm(self, fd: int) -> None:
        """Report read()s of the file open as ``fd`` (this inode only) until ``disarm``."""
        if _libc.fanotify_mark(self.fd, FAN_MARK_ADD, FAN_ACCESS, fd, None) < 0:
            err = ctypes.get_errno()
            raise MountError(f"cannot watch reads of a file: {os.strerror(err)}")

    def disarm(self, fd: int) -> None:
        """Stop reporting read()s of the file open as ``fd``; a file not armed is fine (ENOENT)."""
        _libc.fanotify_mark(self.fd, FAN_MARK_REMOVE, FAN_ACCESS, fd, None)

    def events(self, timeout: float) -> list[Opened]:
        """The opens (and reads of armed files) queued now, waiting up to ``timeout`` seconds for the first. A queue
        overflow is skipped: the opens it lost are served by rclone's own reads."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            buf = os.read(self.fd, 64 * _META.size)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                return []
            raise
        out: list[Opened] = []
        pos = 0
        while pos + _META.size <= len(buf):
            event_len, _, _, _, mask, fd, pid = _META.unpack_from(buf, pos)
            pos += max(event_len, _META.size)
            if fd == FAN_NOFD or mask & FAN_Q_OVERFLOW:
                continue
            out.append(Opened(fd, pid, access=not mask & FAN_OPEN))
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
