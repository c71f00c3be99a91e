"""A hung rclone (SIGSTOP) never freezes the supervisor, and the health server bounds what clients can pin."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from hf_cache.lab.s3server import S3Server
from hf_cache.mount import fusemount
from hf_cache.mount.supervisor import HUNG_AFTER
from tests.test_mount import ROOT, SHA1, publish, wait_for


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _rclone_pids(m) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(m.proc.pid), "rclone"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_hung_rclone_is_detected_killed_and_replaced_and_probes_never_pile_up(
    mounted, s3_server: S3Server, bucket: str
) -> None:
    publish(s3_server.client(), bucket, {f"{ROOT}/refs/main": SHA1.encode(), f"{ROOT}/snapshots/{SHA1}/a": b"a"})
    m = mounted(bucket=bucket, prefix="p")
    target = m.mountpoint / ROOT / "snapshots" / SHA1 / "a"
    assert target.read_bytes() == b"a"
    hung = m.rclone_pid()
    base_threads = _threads(m.proc.pid)
    os.kill(hung, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        # /readyz answers at once, 503, while the mount hangs; probing it does not add threads
        wait_for(lambda: m.get("/readyz", timeout=2)[0] == 503, timeout=5, step=0.1)
        assert time.monotonic() - stopped < HUNG_AFTER
        for _ in range(40):
            started = time.monotonic()
            m.get("/readyz", timeout=2)
            assert time.monotonic() - started < 1
        assert m.get("/healthz", timeout=2)[0] == 200  # the loop itself is fine
        assert _threads(m.proc.pid) <= base_threads + 4
        # detected within HUNG_AFTER (+ probe timeout + tick), killed, replaced
        wait_for(lambda: hung not in _rclone_pids(m) and _rclone_pids(m), timeout=HUNG_AFTER + 8, step=0.2)
        detected = time.monotonic() - stopped
        wait_for(lambda: m.get("/readyz", timeout=2)[0] == 200, timeout=20)
        healed = time.monotonic() - stopped
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
    print(f"hung rclone replaced {detected:.1f}s after SIGSTOP, mount ready again after {healed:.1f}s")
    assert target.read_bytes() == b"a"
    metrics = m.metrics()
    assert metrics["hfcache_mount_hung_total"] == 1
    assert metrics["hfcache_rclone_restarts_total"] == 1
    assert metrics["hfcache_mount_up"] == 1
    assert "rclone is hung; killing it" in m.log()


def test_sigterm_exits_within_10s_while_rclone_is_hung(mounted, s3_server: S3Server, bucket: str) -> None:
    publish(s3_server.client(), bucket, {f"{ROOT}/refs/main": SHA1.encode()})
    m = mounted(bucket=bucket, prefix="p")
    hung = m.rclone_pid()
    os.kill(hung, signal.SIGSTOP)
    try:
        wait_for(lambda: m.get("/readyz", timeout=2)[0] == 503, timeout=5, step=0.1)
        started = time.monotonic()
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
    wait_for(lambda: not Path(f"/proc/{hung}").exists() or "Z" in Path(f"/proc/{hung}/stat").read_text(), 5)
    assert fusemount.mount_fstype(m.mountpoint) is None


def test_metrics_answers_within_its_bound_while_rclone_is_hung(mounted, s3_server: S3Server, bucket: str) -> None:
    publish(s3_server.client(), bucket, {f"{ROOT}/refs/main": SHA1.encode()})
    m = mounted(bucket=bucket, prefix="p")
    hung = m.rclone_pid()
    os.kill(hung, signal.SIGSTOP)
    try:
        wait_for(lambda: m.get("/readyz", timeout=2)[0] == 503, timeout=5, step=0.1)
        started = time.monotonic()
        metrics = m.metrics()  # rclone's rc is stopped too: bounded, last values
        assert time.monotonic() - started < 4
        assert metrics["hfcache_mount_up"] == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)


def test_idle_connections_are_bounded_and_closed(mounted, s3_server: S3Server, bucket: str) -> None:
    publish(s3_server.client(), bucket, {f"{ROOT}/refs/main": SHA1.encode()})
    m = mounted(bucket=bucket, prefix="p")
    port = int(m.health_url.rsplit(":", 1)[1])
    base = _threads(m.proc.pid)
    idle = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            idle.append(s)
        time.sleep(0.5)
        assert _threads(m.proc.pid) <= base + 64 + 2
        # the server drops them after its idle timeout (5 s): recv sees EOF, threads go back
        time.sleep(6)
        for s in idle[:20] + idle[-20:]:
            s.settimeout(2)
            assert s.recv(1) == b""
        wait_for(lambda: _threads(m.proc.pid) <= base + 2, timeout=5)
        with urllib.request.urlopen(m.health_url + "/readyz", timeout=5) as resp:
            assert resp.status == 200
    finally:
        for s in idle:
            s.close()
