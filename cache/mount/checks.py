"""Checks made before rclone starts, so that a misconfiguration is one clear line and not a restart loop.

Each check raises ``ConfigError`` (exit 2) for what only the operator can fix. ``classify_start_failure`` decides,
from what rclone printed when it died before mounting, whether restarting can help (transient) or not (permanent).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import shlex
import socket
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from hf_cache import settings
from hf_cache.errors import ConfigError, MountError


def split_rclone_args(values: Iterable[str], env_value: str | None) -> tuple[str, ...]:
    """``--rclone-arg`` values and ``HFCACHE_RCLONE_ARGS``, each split with shell quoting rules (so a value may
    hold a space: ``--rclone-arg "--user-agent 'a b'"``)."""
    out: list[str] = []
    sources = [("--rclone-arg", v) for v in values] or ([("HFCACHE_RCLONE_ARGS", env_value)] if env_value else [])
    for where, value in sources:
        try:
            out.extend(shlex.split(value))
        except ValueError as exc:
            raise ConfigError(f"{where} {value!r}: {exc}; quote it as a shell would") from exc
    return tuple(out)


def check_port(port: int, flag: str) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"{flag} {port}: a port is 0-65535")


def check_health_addr(addr: str) -> None:
    """An IP address this host can bind (a hostname is resolved the way the server would)."""
    try:
        ipaddress.ip_address(addr)
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(addr, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--health-addr {addr!r} is not an address: use an IP such as 0.0.0.0 or 127.0.0.1") from exc


def check_rc_port_free(port: int) -> None:
    """rclone's rc server binds 127.0.0.1:port; if that is taken, rclone would die at every start."""
    check_port(port, "--rc-port")
    if port == 0:
        raise ConfigError(
            f"--rc-port 0: rclone needs a fixed port for its rc API; pick a free one, e.g. {settings.RC_PORT}"
        )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(f"--rc-port {port} is in use on 127.0.0.1: pick a free port (HFCACHE_RC_PORT)") from exc


def check_directory(path: Path, flag: str) -> None:
    """A path we will create or use as a folder must not be a file (or sit under one)."""
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        what = "is a file" if probe == path else f"is under {probe}, which is a file"
        raise ConfigError(f"{flag} {path} {what}: point it at a folder (or remove the file)")


def take_lock(path: Path, mountpoint: Path) -> IO[str]:
    """An exclusive, non-blocking flock: a second supervisor for the same mount is refused, not let to fight the
    first (it would lazily unmount the live mount). The kernel drops the lock when its holder dies."""
    try:
        handle = path.open("a+")
    except OSError as exc:
        raise ConfigError(f"cannot create the lock file {path}: {exc.strerror}; check the folder is writable") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise MountError(
                f"another hf-cache mount already serves {mountpoint} (it holds {path}); stop it first"
            ) from exc
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} {mountpoint}\n")
    handle.flush()
    return handle


def check_rclone_args(cmd: Sequence[str], env: dict[str, str]) -> None:
    """rclone parses its whole command line before ``--help`` takes effect: an unknown flag or a bad value is
    reported (first line ``Error: ...``) without mounting anything."""
    try:
        result = subprocess.run(
            [*cmd, "--help"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MountError(f"cannot run {cmd[0]} to check its flags: {exc}") from exc
    if result.returncode != 0:
        first = next(
            (ln for ln in (result.stderr + result.stdout).splitlines() if ln.strip()), f"exit {result.returncode}"
        )
        raise ConfigError(f"rclone rejects its flags: {first.strip()}; check --rclone-arg / HFCACHE_RCLONE_ARGS")


# Messages of an rclone that died before mounting, for which a restart cannot help: (fragment, what to do).
_PERMANENT = (
    ("unknown flag", "check --rclone-arg / HFCACHE_RCLONE_ARGS"),
    ("unknown shorthand flag", "check --rclone-arg / HFCACHE_RCLONE_ARGS"),
    ("invalid argument", "check --rclone-arg / HFCACHE_RCLONE_ARGS"),
    ("address already in use", "pick a free --rc-port"),
    ("failed to create cache directory", "check --cache-dir"),
    ("permission denied", "run the container privileged, with the node paths writable"),
    ("fusermount: exec", "install fuse3 (fusermount3) in the image"),
)


def classify_start_failure(lines: Sequence[str]) -> str | None:
    """One line describing a permanent start failure, or None when a restart may help (network, crash)."""
    for line in lines:
        low = line.lower()
        for fragment, fix in _PERMANENT:
            if fragment in low:
                return f"rclone cannot start: {line.strip()[:300]}; {fix}"
    return None
