"""``hf-cache doctor`` on a broken node: every check bounded, one line each, never a traceback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from hf_cache.lab.s3server import S3Server
from hf_cache.mount import fusemount
from tests.test_mount import ROOT, SHA1, publish, wait_for


def _doctor(mountpoint, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "hf_cache", "doctor", "org/m", "--mountpoint", str(mountpoint)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, time.monotonic() - started


def _lines_only(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr + result.stdout
    for line in result.stdout.splitlines():
        assert line.startswith(("[ok] ", "[FAIL] ")), line


def test_doctor_on_a_stale_mount_says_so(mounted, s3_server: S3Server, bucket: str) -> None:
    publish(s3_server.client(), bucket, {f"{ROOT}/refs/main": SHA1.encode()})
    m = mounted(bucket=bucket, prefix="p")
    rclone = m.rclone_pid()
    os.kill(m.proc.pid, signal.SIGKILL)  # nobody repairs it
    os.kill(rclone, signal.SIGKILL)
    m.proc.wait()
    wait_for(lambda: fusemount.is_stale(m.mountpoint, 2.0), timeout=10)
    result, _ = _doctor(m.mountpoint)
    _lines_only(result)
    assert result.returncode == 1
    assert "[FAIL] mount: " in result.stdout and "is stale (Transport endpoint is not connected)" in result.stdout


def test_doctor_on_a_hung_mount_finishes_within_its_bound(mounted, s3_server: S3Server, bucket: str) -> None:
    publish(s3_server.client(), bucket, {f"{ROOT}/refs/main": SHA1.encode()})
    m = mounted(bucket=bucket, prefix="p")
    rclone = m.rclone_pid()
    os.kill(m.proc.pid, signal.SIGSTOP)  # the supervisor too, so nothing repairs the mount during the check
    os.kill(rclone, signal.SIGSTOP)
    try:
        time.sleep(1.5)  # past the kernel's attribute cache
        result, seconds = _doctor(m.mountpoint)
    finally:
        for pid in (rclone, m.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    print(f"doctor on a hung mount: {seconds:.1f}s\n{result.stdout}")
    _lines_only(result)
    assert result.returncode == 1
    assert "did not answer within 10s" in result.stdout
    assert seconds < 25
