"""The supervisor loop: keep rclone's FUSE mount alive, repair it when it dies, stop it cleanly.

It runs as PID 1's only job in the DaemonSet container. rclone is a child process; when it exits or its mount goes
stale, the mount is lazily unmounted (so job pods holding dead descriptors do not block the new mount) and rclone
is restarted with exponential backoff (1 s doubling to 30 s). Job pods see the new mount through mount
propagation, without restarting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from cache.errors import MountError
from cache.logs import redact
from cache.mount import fusemount
from cache.mount.config import MountConfig
from cache.mount.health import start_health_server
from cache.mount.metrics import MountMetrics
from cache.mount.rclone import rclone_args, rclone_binary, rclone_env
from cache.s3 import make_client

log = logging.getLogger("hf_cache.mount")

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a run that lasted this long resets the backoff
READY_TIMEOUT = 60.0
HEARTBEAT_STALE = 30.0


def preflight(cfg: MountConfig) -> None:
    """Fail with one actionable line on the mistakes that would otherwise become a silent crash loop."""
    fuse_device = os.environ.get("HFCACHE_FUSE_DEVICE", "/dev/fuse")  # overridable so tests can remove it
    if not os.path.exists(fuse_device):
        raise MountError(f"{fuse_device} is missing: run the container privileged (or mount /dev/fuse into it)")
    fusemount.fusermount()
    rclone_binary()
    client = make_client(cfg.endpoint_url, cfg.region, max_attempts=2)
    where = f"s3://{cfg.remote_path}"
    try:
        client.list_objects_v2(Bucket=cfg.bucket, Prefix=cfg.prefix.strip("/"), MaxKeys=1)
    except NoCredentialsError as exc:
        raise MountError(
            "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or run with the "
            "hf-cache-mount service account (IRSA)"
        ) from exc
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            raise MountError(f"bucket {cfg.bucket!r} does not exist: check --bucket / HFCACHE_BUCKET") from exc
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            raise MountError(f"access to {where} denied ({code}): check the credentials / the mount role") from exc
        raise MountError(f"S3 refused listing {where}: {code}") from exc
    except BotoCoreError as exc:
        raise MountError(f"cannot reach S3 for {where}: {exc}; check --endpoint-url / AWS_ENDPOINT_URL") from exc


class Supervisor:
    def __init__(self, cfg: MountConfig):
        self.cfg = cfg
        self.metrics = MountMetrics(cfg.cache_max_bytes)
        self.stop_event = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.heartbeat = time.monotonic()
        self.restarts = 0

    # -- probes ----------------------------------------------------------------------------------------------
    def ready(self) -> bool:
        ok = self.proc is not None and self.proc.poll() is None and fusemount.lists(self.cfg.mountpoint, 2.0)
        self.metrics.up.set(1 if ok else 0)
        return ok

    def alive(self) -> bool:
        return time.monotonic() - self.heartbeat < HEARTBEAT_STALE

    def refresh_metrics(self) -> None:
        self.ready()
        self.metrics.update_from_rclone(self.cfg.rc_port)

    # -- rclone ----------------------------------------------------------------------------------------------
    def _start_rclone(self) -> None:
        cmd = [rclone_binary(), *rclone_args(self.cfg)]
        log.info("starting rclone %s %s at %s", self.cfg.backend, self.cfg.remote_path, self.cfg.mountpoint)
        self.proc = subprocess.Popen(
            cmd,
            env=rclone_env(self.cfg),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.metrics.new_generation()
        proc = self.proc

        def forward() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                log.info("rclone: %s", redact(raw.decode(errors="replace").rstrip()))

        threading.Thread(target=forward, name="rclone-log", daemon=True).start()

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and not self.stop_event.is_set():
            self.heartbeat = time.monotonic()
            if self.proc is None or self.proc.poll() is not None:
                return False
            if fusemount.lists(self.cfg.mountpoint, 2.0):
                return True
            time.sleep(0.1)
        return False

    def _stop_rclone(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.proc = None

    def _cleanup_mount(self, lazy: bool = True) -> None:
        try:
            fusemount.unmount(self.cfg.mountpoint, lazy=lazy)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("unmount of %s failed: %s", self.cfg.mountpoint, exc)

    def _healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            log.error("rclone exited (code %s)", None if self.proc is None else self.proc.returncode)
            return False
        if fusemount.is_stale(self.cfg.mountpoint, 10.0) or not fusemount.is_fuse(self.cfg.mountpoint):
            log.error("the mount at %s is stale or gone", self.cfg.mountpoint)
            return False
        return True

    # -- main loop -------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        cfg = self.cfg
        if fusemount.mount_fstype(cfg.mountpoint) is not None:
            log.warning("cleaning a mount left at %s by a previous run", cfg.mountpoint)
            self._cleanup_mount(lazy=True)
        cfg.mountpoint.mkdir(parents=True, exist_ok=True)
        cfg.cache_dir.mkdir(parents=True, exist_ok=True)

    def run(self) -> int:
        cfg = self.cfg
        preflight(cfg)
        self.prepare()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        server = start_health_server(
            cfg.health_addr, cfg.health_port, self.ready, self.alive, self.metrics, self.refresh_metrics
        )
        backoff = BACKOFF_START
        try:
            while not self.stop_event.is_set():
                self._start_rclone()
                started = time.monotonic()
                if self._wait_ready():
                    log.info("mounted s3://%s at %s", cfg.remote_path, cfg.mountpoint)
                    self.metrics.up.set(1)
                    while not self.stop_event.wait(1.0):
                        self.heartbeat = time.monotonic()
                        if not self._healthy():
                            break
                if self.stop_event.is_set():
                    break
                self.metrics.up.set(0)
                self.restarts += 1
                self.metrics.restarts.inc()
                if time.monotonic() - started > STABLE_AFTER:
                    backoff = BACKOFF_START
                self._stop_rclone()
                self._cleanup_mount(lazy=True)
                log.warning("restarting rclone in %.0fs (restart %d)", backoff, self.restarts)
                end = time.monotonic() + backoff
                while time.monotonic() < end and not self.stop_event.wait(min(1.0, end - time.monotonic())):
                    self.heartbeat = time.monotonic()
                backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            log.info("stopping: unmounting %s", cfg.mountpoint)
            self.metrics.up.set(0)
            self._cleanup_mount(lazy=False)
            self._stop_rclone()
            self._cleanup_mount(lazy=True)
            server.shutdown()
        return 0


def cache_dir_usage(cache_dir: Path) -> int:
    """Bytes on disk under the VFS cache's data folder (what the LRU limit bounds)."""
    total = 0
    for dirpath, _, files in os.walk(cache_dir / "vfs"):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(dirpath, name)).st_blocks * 512
    return total
