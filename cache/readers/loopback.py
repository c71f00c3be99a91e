"""Loopback servers for `hf-cache demo` (and the test suite, which imports these rather than its own copies):
a free port, waiting for a server to answer, a moto S3 server in its own process, stopping a child."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from hf_cache.errors import ConfigError, HfCacheError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(
    url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None, what: str = "", ok_only: bool = False
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


def start_moto(env: dict[str, str]) -> tuple[str, subprocess.Popen]:
    """moto's S3 server on 127.0.0.1, in its own process (FUSE reads must never wait on our GIL)."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise ConfigError("the loopback S3 server needs moto: pip install 'hf-cache[test]'") from exc
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=tempfile.gettempdir(),  # moto's request recorder (used by the refresh benchmark) writes into its cwd
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(endpoint + "/moto-api/", proc=proc, what="the loopback S3 server")
    except BaseException:
        stop(proc)
        raise
    return endpoint, proc


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
