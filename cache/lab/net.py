"""Plumbing every lab server shares: a free port on 127.0.0.1, waiting for a server to answer, stopping a child."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from hf_cache.errors import HfCacheError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(
    url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None, what: str = "", ok_only: bool = False
) -> None:
    """Wait until ``url`` answers over HTTP (any status, or only 200 with ``ok_only``), or fail naming it."""
    what = what or url
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HfCacheError(f"{what} exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200 or not ok_only:
                    return
        except urllib.error.HTTPError:
            if not ok_only:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise HfCacheError(f"{what} was not ready within {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
