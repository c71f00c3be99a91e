"""Prometheus metrics for the mount, with the numbers taken from rclone itself (its rc API on 127.0.0.1).

rclone's counters restart from zero when rclone restarts; the supervisor's counters must not, so bytes read from S3
are accumulated across rclone generations here.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge


def rc_call(port: int, method: str, timeout: float = 3.0) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/{method}", data=b"{}", method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


class MountMetrics:
    def __init__(self, cache_max_bytes: int):
        self.registry = CollectorRegistry()
        r = self.registry
        self.up = Gauge("hfcache_mount_up", "1 while the mountpoint is our live FUSE mount", registry=r)
        self.restarts = Counter("hfcache_rclone_restarts", "Times rclone was restarted after a failure", registry=r)
        self.cache_bytes = Gauge("hfcache_cache_bytes", "Bytes in the node's VFS cache (rclone vfs/stats)", registry=r)
        self.cache_max = Gauge("hfcache_cache_max_bytes", "The VFS cache's LRU size limit", registry=r)
        self.cache_files = Gauge("hfcache_cache_files", "Files in the node's VFS cache", registry=r)
        self.s3_bytes = Counter("hfcache_s3_read_bytes", "Bytes read from S3 (rclone core/stats)", registry=r)
        self.s3_errors = Counter("hfcache_s3_errors", "Errors rclone met talking to S3 (rclone core/stats)", registry=r)
        self.read_probe = Gauge(
            "hfcache_read_probe_seconds",
            "Time of the last bounded probe read through the mount (status.json); the time waited so far if it hangs",
            registry=r,
        )
        self.last_success = Gauge(
            "hfcache_refresh_last_success_timestamp_seconds",
            "End of the last refresh whose repos all succeeded (status.json; 0 = none seen)",
            registry=r,
        )
        self.last_run = Gauge(
            "hfcache_refresh_last_run_timestamp_seconds", "End of the last refresh run (status.json)", registry=r
        )
        self.failed_repos = Gauge(
            "hfcache_refresh_failed_repos", "Repos that failed in the last refresh run", registry=r
        )
        self.stray = Gauge(
            "hfcache_mountpoint_stray_entries",
            "Entries found in the mountpoint folder while unmounted (something wrote to the node path); mounted over",
            registry=r,
        )
        self.hung = Counter(
            "hfcache_mount_hung", "Times rclone was killed because the mount stopped answering", registry=r
        )
        self.prelisted = Counter(
            "hfcache_prelisted_folders",
            "Snapshot folders the supervisor had rclone list before any job opened them (prelist.py)",
            registry=r,
        )
        self.prelist_failures = Counter(
            "hfcache_prelist_failures",
            "Snapshot folder listings that failed (retried on the next poll; a job's first open would list it itself)",
            registry=r,
        )
        self.cache_max.set(cache_max_bytes)
        self._lock = threading.Lock()
        self._last_rclone_bytes = 0
        self._last_rclone_errors = 0

    def new_generation(self) -> None:
        """rclone (re)started: its byte counter starts again at zero."""
        with self._lock:
            self._last_rclone_bytes = 0
            self._last_rclone_errors = 0

    def update_from_rclone(self, rc_port: int) -> None:
        try:
            vfs = rc_call(rc_port, "vfs/stats")
            core = rc_call(rc_port, "core/stats")
        except OSError:
            return  # rclone is restarting; keep the last values
        disk = vfs.get("diskCache", {})
        self.cache_bytes.set(disk.get("bytesUsed", 0))
        self.cache_files.set(disk.get("files", 0))
        with self._lock:
            total = int(core.get("bytes", 0))
            if total > self._last_rclone_bytes:
                self.s3_bytes.inc(total - self._last_rclone_bytes)
            self._last_rclone_bytes = max(total, self._last_rclone_bytes)
            errors = int(core.get("errors", 0))
            if errors > self._last_rclone_errors:
                self.s3_errors.inc(errors - self._last_rclone_errors)
            self._last_rclone_errors = max(errors, self._last_rclone_errors)
