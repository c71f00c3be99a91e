"""Run the real ``hf-cache mount`` supervisor in a subprocess (tests, benchmarks), and always leave nothing mounted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hf_cache.lab.metrics import samples
from hf_cache.lab.net import free_port
from hf_cache.mount import fusemount


@dataclass
class RunningMount:
    mountpoint: Path
    cache_dir: Path
    health_url: str
    rc_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.health_url + path, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics by name (no labels are used by the mount's metrics)."""
        return samples(self.get("/metrics")[1])

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hf-cache mount exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/readyz", timeout=3)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"mount not ready within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def rclone_pid(self) -> int:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid), "rclone"], capture_output=True, text=True)
        pids = [int(p) for p in out.stdout.split()]
        if not pids:
            raise RuntimeError(f"no rclone child of {self.proc.pid}:\n{self.log()}")
        return pids[0]

    def stop(self, timeout: float = 15.0) -> int | None:
        code = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        else:
            code = self.proc.returncode
        subprocess.run(["pkill", "-f", f"rclone.*{self.mountpoint}"], capture_output=True)
        if fusemount.mount_fstype(self.mountpoint) is not None:
            subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)
        return code


def start_mount(
    *,
    bucket: str,
    prefix: str,
    env: dict[str, str],
    mountpoint: Path,
    cache_dir: Path,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 60.0,
    wait: bool = True,
) -> RunningMount:
    port, rc_port = free_port(), free_port()
    args = [
        sys.executable,
        "-m",
        "hf_cache",
        "mount",
        "--bucket",
        bucket,
        "--prefix",
        prefix,
        "--mountpoint",
        str(mountpoint),
        "--cache-dir",
        str(cache_dir),
        "--health-addr",
        "127.0.0.1",
        "--health-port",
        str(port),
        "--rc-port",
        str(rc_port),
        *extra_args,
    ]
    log_path = cache_dir.parent / f"mount-{port}.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        args, env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    log_file.close()
    running = RunningMount(mountpoint, cache_dir, f"http://127.0.0.1:{port}", rc_port, proc, log_path, args)
    if wait:
        try:
            running.wait_ready(ready_timeout)
        except BaseException:
            running.stop()
            raise
    return running
