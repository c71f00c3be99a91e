"""The supervisor loop: keep rclone's FUSE mount alive, repair it when it dies, stop it cleanly.

It runs as PID 1's only job in the DaemonSet container. rclone is a child process; when it exits or its mount goes
stale, the mount is lazily unmounted (so job pods holding dead descriptors do not block the new mount) and rclone
is restarted with exponential backoff (1 s doubling to 30 s). Job pods see the new mount through mount
propagation, without restarting.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, TYPE_CHECKING

from hf_cache import faults, layout
from hf_cache.errors import MountError, StorageError
from hf_cache.logs import redact
from hf_cache.mount import fusemount
from hf_cache.mount.bounded import BoundedWorker
from hf_cache.mount.checks import (
    check_directory,
    check_health_addr,
    check_port,
    check_rc_port_free,
    check_rclone_args,
    classify_start_failure,
    take_lock,
)
from hf_cache.mount.config import MountConfig
from hf_cache.mount.freshness import parse_status
from hf_cache.mount.health import start_health_server
from hf_cache.mount.metrics import MountMetrics
from hf_cache.mount.prefetch import Policy, Prefetcher
from hf_cache.mount.prelist import Prelist, batches, snapshot_folders
from hf_cache.mount.rclone import io_step, rclone_args, rclone_binary, rclone_env
from hf_cache.mount.refresher import failed, is_repo_folder, repo_folders, top_level, vfs_refresh
from hf_cache.mount.s3endpoint import S3Endpoint
from hf_cache.node.agent import start_for_mount as start_node_tier
from hf_cache.s3 import check_bucket, check_endpoint, make_client
from hf_cache.s3errors import is_not_found, is_not_modified, s3_errors

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import GetObjectRequestTypeDef

log = logging.getLogger(__name__)
ENDPOINT_PORT_FILE = ".hf-cache-endpoint-port"  # in the cache dir: the S3 endpoint's port, asked for again at start

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a run that lasted this long resets the backoff
READY_TIMEOUT = 60.0
HEARTBEAT_STALE = 30.0
PROBE_TIMEOUT = 2.0  # one wait for a stat of the mount root (rclone answers it from memory, not from S3)
HUNG_AFTER = 10.0  # a stat unanswered this long: rclone is hung, and is killed and replaced
STOP_GRACE = 4.0  # SIGTERM -> SIGKILL for rclone; with the unmount, stop stays well under 10 s
READ_PROBE_TIMEOUT = 10.0
RELIST_TIMEOUT = 120.0  # rc vfs/refresh returns after rclone's own (bounded) S3 retries
STALE_ERRNOS = (errno.ENOTCONN, errno.EIO, errno.ECONNABORTED)


def preflight(cfg: MountConfig) -> None:
    """Fail with one actionable line on the mistakes that would otherwise become a silent crash loop."""
    fuse_device = faults.fuse_device()
    if not os.path.exists(fuse_device):
        raise MountError(f"{fuse_device} is missing: run the container privileged (or mount /dev/fuse into it)")
    fusemount.fusermount()
    rclone_binary()
    # the same one-key listing as refresh's (the mount role allows exactly it); its StorageError subclasses say
    # what is wrong: no such bucket, denied or no credentials, unreachable
    check_bucket(make_client(cfg.endpoint_url, cfg.region, max_attempts=2), cfg.bucket, cfg.prefix)


class Supervisor:
    """Runs rclone and watches its mount from the main thread, which never touches the mount itself: every call
    on the mount goes through a ``BoundedWorker`` (see bounded.py), so a hung rclone is noticed, killed and
    replaced, and SIGTERM is honoured, whatever state the mount is in."""

    def __init__(self, cfg: MountConfig):
        self.cfg = cfg
        self.metrics = MountMetrics(cfg.cache_max_bytes)
        self.stop_event = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.heartbeat = time.monotonic()
        self.restarts = 0
        self._ready = False
        self._output: deque[str] = deque(maxlen=40)
        self._forwarder: threading.Thread | None = None
        self._liveness = BoundedWorker("mount-probe")
        self._reader = BoundedWorker("read-probe")
        self._stats = BoundedWorker("rclone-stats")
        self._s3 = BoundedWorker("status-get")
        self._last_success: float | None = None
        self._locks: list[IO[str]] = []
        self._prefetch: Prefetcher | None = None
        self._endpoint: S3Endpoint | None = None
        self._relist_failing = False
        self._generation = 0  # rclone starts so far: a new one has no listings
        self._prelist = Prelist()
        self._prelist_failing = False

    # -- probes (state only: the HTTP handlers call these) -----------------------------------------------------
    def ready(self) -> bool:
        """The loop's last verdict; no side effect, no call on the mount."""
        return self._ready

    def alive(self) -> bool:
        return time.monotonic() - self.heartbeat < HEARTBEAT_STALE

    def refresh_metrics(self) -> None:
        self._stats.run(lambda: self.metrics.update_from_rclone(self.cfg.rc_port), 2.5)

    def _set_ready(self, ok: bool) -> None:
        self._ready = ok
        self.metrics.up.set(1 if ok else 0)

    # -- the mount, through bounded workers -------------------------------------------------------------------
    def probe_mount(self) -> str:
        """``ok``, ``slow`` (no answer yet), ``hung`` (no answer for HUNG_AFTER), ``stale`` or ``gone``."""
        fstype = fusemount.mount_fstype(self.cfg.mountpoint)  # /proc only
        if fstype is None or not fstype.startswith("fuse"):
            return "gone"
        outcome = self._liveness.run(lambda: os.stat(self.cfg.mountpoint), PROBE_TIMEOUT)
        if outcome.ok:
            return "ok"
        if outcome.timed_out:
            return "hung" if outcome.seconds >= HUNG_AFTER else "slow"
        if isinstance(outcome.error, OSError) and outcome.error.errno in STALE_ERRNOS:
            return "stale"
        return "slow"

    def _relist(self, dirs: list[str]) -> bool:
        """rc vfs/refresh of ``dirs``; on failure rclone keeps the last listing, and we say so once per outage."""
        if not dirs:
            return True
        try:
            bad = failed(vfs_refresh(self.cfg.rc_port, dirs, RELIST_TIMEOUT))
        except (OSError, ValueError) as exc:
            bad = {"(rc)": str(exc)}
        if bad and not self._relist_failing:
            first = next(iter(bad.items()))
            log.warning("cannot re-list %s from S3 (serving the last known listing): %s", first[0] or "/", first[1])
        elif not bad and self._relist_failing:
            log.info("re-listing from S3 works again")
        self._relist_failing = bool(bad)
        return not bad

    def _see_snapshots(self, repo_dirs: list[str]) -> bool:
        """Read each repo's just re-listed ``snapshots/`` through the mount (rclone answers from memory)."""
        hub = self.cfg.mountpoint / layout.HUB_DIR

        def scan() -> list[str]:
            found: list[str] = []
            for name in repo_dirs:
                if not is_repo_folder(name):
                    continue
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    found += snapshot_folders(name, os.listdir(hub / name / layout.SNAPSHOTS_DIR))
            return found

        outcome = self._reader.run(scan, READ_PROBE_TIMEOUT)
        if outcome.ok:
            self._prelist.see(outcome.value)
        else:
            log.warning("cannot read the snapshot folders in %s: %s", hub, outcome.error or "timeout")
        return outcome.ok

    def _prelist_new(self) -> None:
        """Have rclone list each snapshot folder not listed yet (prelist.py). Stops at the first batch with a
        failure: S3 is failing, and the rest waits for the next poll like the failed ones."""
        prelist = self._prelist
        before = len(prelist.listed)
        bad: dict[str, str] = {}
        for batch in batches(prelist.todo()):
            try:
                result = vfs_refresh(self.cfg.rc_port, batch, RELIST_TIMEOUT, recursive=True)
            except (OSError, ValueError) as exc:
                bad = {batch[0]: f"rclone rc: {exc}"}
                break
            bad = prelist.record(result)
            bad.update({d: "not in rclone's answer" for d in batch if d not in result})
            if bad:
                break
        if len(prelist.listed) > before:
            self.metrics.prelisted.inc(len(prelist.listed) - before)
            log.info("listed %d new snapshot folders", len(prelist.listed) - before)
        if bad:
            self.metrics.prelist_failures.inc(len(bad))
            if not self._prelist_failing:
                first, why = next(iter(bad.items()))
                log.warning(
                    "cannot list %d snapshot folders from S3 (first: %s: %s); retrying on the next poll, until then "
                    "a job's first open in one lists it itself",
                    len(prelist.todo()),
                    first,
                    redact(why),
                )
        elif self._prelist_failing:
            log.info("listing snapshot folders works again")
        self._prelist_failing = bool(bad)

    def _get_status(self, client: S3Client, etag: str | None) -> tuple[str | None, bytes | None]:
        """(etag, body) of status.json from S3; body None when unchanged since ``etag`` or not published."""
        key = layout.status_key(self.cfg.prefix.strip("/"))
        try:
            with s3_errors(self.cfg.bucket, key, "read"):
                request: GetObjectRequestTypeDef = {"Bucket": self.cfg.bucket, "Key": key}
                if etag:
                    request["IfNoneMatch"] = etag
                resp = client.get_object(**request)
                return resp.get("ETag"), resp["Body"].read()
        except StorageError as exc:
            if is_not_modified(exc):
                return etag, None
            if is_not_found(exc):
                return None, None
            raise

    def _freshness_loop(self) -> None:
        """Every --freshness: GET status.json from S3 (1 request; 304 when unchanged). When a refresh has published
        something new, re-list the folders it changes (refresher.py), then list the snapshot folders that appeared
        (prelist.py; also those that failed before, on every poll S3 answers). When S3 does not answer, nothing is
        re-listed: a failed re-list would drop rclone's listing, and with it the reads of cached files. A new rclone
        (restart) starts without listings, so everything is re-listed and pre-listed again. Also times a bounded
        read of status.json through the mount (the read probe)."""
        client = make_client(self.cfg.endpoint_url, self.cfg.region, max_attempts=1)
        status = self.cfg.mountpoint / layout.status_key("")
        hub = self.cfg.mountpoint / layout.HUB_DIR
        etag: str | None = None
        s3_failing = False
        generation = 0

        def read() -> bytes | None:
            try:
                return status.read_bytes()
            except FileNotFoundError:
                os.listdir(self.cfg.mountpoint)  # nothing published yet: time a listing instead
                return None

        def repos() -> list[str]:
            try:
                return os.listdir(hub)
            except FileNotFoundError:
                return []

        while not self.stop_event.wait(self.cfg.freshness if self._ready else 1.0):
            if not self._ready:
                continue
            if generation != self._generation:
                generation, etag = self._generation, None
                self._prelist.restarted()
            got = self._s3.run(functools.partial(self._get_status, client, etag), READ_PROBE_TIMEOUT)
            if not got.ok:
                self.metrics.s3_errors.inc()
                if not s3_failing:
                    log.warning(
                        "S3 does not answer (%s): serving the last known listings and the node cache",
                        redact(str(got.error or f"no answer in {READ_PROBE_TIMEOUT:.0f}s")),
                    )
                s3_failing = True
            else:
                if s3_failing:
                    log.info("S3 answers again")
                s3_failing = False
                new_etag, body = got.value
                if body is not None:
                    self._publish_freshness(body)
                    if all(self._relist(dirs) for dirs in top_level()):
                        listed = self._reader.run(repos, READ_PROBE_TIMEOUT)
                        if listed.ok and self._relist(repo_folders(listed.value)) and self._see_snapshots(listed.value):
                            etag = new_etag  # done: until status.json changes, nothing to re-list
                self._prelist_new()
            probe = self._reader.run(read, READ_PROBE_TIMEOUT)
            self.metrics.read_probe.set(probe.seconds)
            if not probe.ok:
                log.warning("probe read of %s failed after %.1fs: %s", status, probe.seconds, probe.error or "timeout")

    def _publish_freshness(self, raw: bytes) -> None:
        try:
            fresh = parse_status(raw, self._last_success)
        except ValueError as exc:
            log.warning("%s is not valid: %s", layout.status_key(""), exc)
            return
        self._last_success = fresh.last_success
        if fresh.last_run is not None:
            self.metrics.last_run.set(fresh.last_run)
        self.metrics.last_success.set(fresh.last_success or 0)
        self.metrics.failed_repos.set(fresh.failed_repos)

    def _count_strays(self) -> None:
        """Entries in the unmounted mountpoint folder: rclone mounts over them (--allow-non-empty), and the
        operator is told once per start, with a metric, that something writes to the node path."""
        if fusemount.mount_fstype(self.cfg.mountpoint) is not None:
            return
        outcome = self._liveness.run(lambda: sorted(os.listdir(self.cfg.mountpoint)), PROBE_TIMEOUT)
        entries: list[str] = outcome.value if outcome.ok else []
        self.metrics.stray.set(len(entries))
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            log.warning(
                "%d stray entries in the unmounted %s (%s): mounting over them; find what writes to the node path "
                "(a pod mounting it without readOnly: true?)",
                len(entries),
                self.cfg.mountpoint,
                shown,
            )

    # -- rclone ----------------------------------------------------------------------------------------------
    def _command(self) -> list[str]:
        return [rclone_binary(), *rclone_args(self.cfg)]

    def _start_rclone(self) -> None:
        self._count_strays()
        log.info("starting rclone %s %s at %s", self.cfg.backend, self.cfg.remote_path, self.cfg.mountpoint)
        self._output.clear()
        self.proc = subprocess.Popen(
            self._command(),
            env=self._rclone_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.metrics.new_generation()
        self._generation += 1
        proc = self.proc
        output = self._output

        def forward() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = redact(raw.decode(errors="replace").rstrip())
                output.append(line)
                level = logging.WARNING if (" ERROR " in line or "CRITICAL" in line) else logging.INFO
                log.log(level, "rclone: %s", line)

        self._forwarder = threading.Thread(target=forward, name="rclone-log", daemon=True)
        self._forwarder.start()

    def _wait_ready(self) -> bool:
        def listed() -> bool:
            return self._liveness.run(lambda: os.listdir(self.cfg.mountpoint), PROBE_TIMEOUT).ok

        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and not self.stop_event.is_set():
            self.heartbeat = time.monotonic()
            if self.proc is None or self.proc.poll() is not None:
                return False
            if fusemount.is_fuse(self.cfg.mountpoint) and listed():
                return True
            self.stop_event.wait(0.1)
        return False

    def _start_failure(self) -> str | None:
        """When rclone died before mounting: a one-line reason if restarting cannot help."""
        if self.proc is None or self.proc.poll() is None:
            return None
        if self._forwarder is not None:
            self._forwarder.join(2.0)
        return classify_start_failure(list(self._output))

    def _stop_rclone(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM (after SIGCONT, should it be stopped) lets rclone unmount; after ``grace``, SIGKILL."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if grace > 0:
                    proc.terminate()
                    os.kill(proc.pid, signal.SIGCONT)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        self.proc = None

    def _cleanup_mount(self) -> None:
        try:
            fusemount.unmount(self.cfg.mountpoint, lazy=True)
        except (OSError, subprocess.SubprocessError, MountError) as exc:
            log.warning("unmount of %s failed: %s", self.cfg.mountpoint, exc)

    def _watch(self) -> None:
        """Until stopped or broken: probe the mount every second and keep /readyz and hfcache_mount_up true."""
        while not self.stop_event.wait(1.0):
            self.heartbeat = time.monotonic()
            if self.proc is None or self.proc.poll() is not None:
                log.error("rclone exited (code %s)", None if self.proc is None else self.proc.returncode)
                return
            state = self.probe_mount()
            self._set_ready(state == "ok")
            if state == "hung":
                self.metrics.hung.inc()
                log.error(
                    "the mount at %s has not answered a stat for %.0fs: rclone is hung; killing it",
                    self.cfg.mountpoint,
                    HUNG_AFTER,
                )
                self._stop_rclone(grace=0)  # a hung rclone cannot unmount itself
                return
            if state in ("stale", "gone"):
                log.error("the mount at %s is %s", self.cfg.mountpoint, state)
                return

    # -- main loop -------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Everything an operator can get wrong, each as one line, before anything is started or changed."""
        cfg = self.cfg
        if cfg.endpoint_url:
            check_endpoint(cfg.endpoint_url)
        check_port(cfg.health_port, "--health-port")
        check_health_addr(cfg.health_addr)
        check_rc_port_free(cfg.rc_port)
        check_directory(cfg.cache_dir, "--cache-dir")
        if fusemount.mount_fstype(cfg.mountpoint) is None:  # a (maybe hung) mount there is cleaned up later
            check_directory(cfg.mountpoint, "--mountpoint")
        check_rclone_args(self._command(), self._rclone_env())

    def lock(self) -> None:
        """One supervisor per mountpoint and per cache dir on a node (both are node paths shared by containers)."""
        cfg = self.cfg
        cfg.cache_dir.mkdir(parents=True, exist_ok=True)
        self._locks.append(take_lock(cfg.cache_dir / ".hf-cache-mount.lock", cfg.mountpoint))
        parent = Path(fusemount.canonical(cfg.mountpoint)).parent
        parent.mkdir(parents=True, exist_ok=True)
        if os.access(parent, os.W_OK):
            self._locks.append(take_lock(parent / f".{cfg.mountpoint.name}.hf-cache-mount.lock", cfg.mountpoint))

    def prepare(self) -> None:
        cfg = self.cfg
        if fusemount.mount_fstype(cfg.mountpoint) is not None:
            log.warning("cleaning a mount left at %s by a previous run", cfg.mountpoint)
            self._cleanup_mount()
        cfg.mountpoint.mkdir(parents=True, exist_ok=True)

    def _rclone_env(self) -> dict[str, str]:
        return rclone_env(self.cfg, local_endpoint=None if self._endpoint is None else self._endpoint.url)

    def _start_endpoint(self) -> None:
        """The S3 endpoint rclone talks to when read-ahead is on (mount/s3endpoint.py); it outlives rclone restarts."""
        cfg = self.cfg
        if cfg.read_ahead_parts <= 0:
            return
        endpoint = S3Endpoint(
            cfg.endpoint_url,
            cfg.region,
            io_step(cfg),
            cfg.read_ahead_parts,
            cfg.read_ahead_streams,
            self.metrics.registry,
            cfg.mountpoint,
            cfg.read_ahead_near,
        )
        # rclone names its cache folder after its remote's settings (a hash of the RCLONE_CONFIG_* values), the
        # endpoint's URL among them: a new port at every start would leave the node's whole cache behind. So the
        # port is kept beside the cache and asked for again.
        saved = cfg.cache_dir / ENDPOINT_PORT_FILE
        port = _saved_port(saved)
        try:
            endpoint.start(port)
        except (OSError, OverflowError) as exc:
            if not port:
                raise
            log.warning("the S3 endpoint's port %d is not free (%s): rclone's node cache starts empty", port, exc)
            endpoint.start()
        saved.write_text(endpoint.url.rsplit(":", 1)[1])
        self._endpoint = endpoint

    def _start_prefetch(self) -> None:
        """Prefetch on open (mount/prefetch.py); without fanotify the mount still works, one connection per reader.
        Off while the S3 endpoint reads ahead: each of its segments would be a sequential downloader of its own."""
        cfg = self.cfg
        if cfg.read_ahead_parts > 0:
            return
        policy = Policy(cfg.prefetch_streams, cfg.prefetch_min_size, cfg.cache_max_bytes, cfg.prefetch_fast_rate)
        prefetcher = Prefetcher(
            cfg.mountpoint, cfg.cache_dir, cfg.remote_path, policy, self.metrics.registry, self.stop_event
        )
        try:
            prefetcher.start()
        except MountError as exc:
            log.warning("%s", exc)
            return
        self._prefetch = prefetcher

    def run(self) -> None:
        """Mount and keep the mount healthy until SIGTERM/SIGINT, then clean up and return (exit 0). What cannot be
        fixed by a restart (bad settings, no bucket, rclone refusing to start) raises our error types, whose exit
        code the CLI decides (hf_cache.cli.EXIT_CODES)."""
        cfg = self.cfg
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        self.validate()
        server = start_health_server(
            cfg.health_addr, cfg.health_port, self.ready, self.alive, self.metrics, self.refresh_metrics
        )
        try:
            self.lock()
        except BaseException:
            server.shutdown()
            server.server_close()
            raise  # the mount belongs to another supervisor: touch nothing
        try:
            preflight(cfg)
            self.prepare()
            threading.Thread(target=self._freshness_loop, name="freshness", daemon=True).start()
            start_node_tier(cfg, self.metrics.registry, self.stop_event)  # cache/node/: no-op without --tier-dir
            self._start_endpoint()
            self._start_prefetch()
            self._loop()
        finally:
            log.info("stopping: unmounting %s", cfg.mountpoint)
            self._set_ready(False)
            self._stop_rclone()
            self._cleanup_mount()
            if self._prefetch is not None:
                self._prefetch.close()
            if self._endpoint is not None:
                self._endpoint.close()
            server.shutdown()
            server.server_close()

    def _loop(self) -> None:
        backoff = BACKOFF_START
        while not self.stop_event.is_set():
            self._start_rclone()
            started = time.monotonic()
            if self._wait_ready():
                log.info("mounted s3://%s at %s", self.cfg.remote_path, self.cfg.mountpoint)
                self._set_ready(True)
                if self._prefetch is not None:
                    self._prefetch.mounted()  # a new mount is a new filesystem to watch
                self._watch()
            elif (reason := self._start_failure()) is not None:
                raise MountError(reason)
            if self.stop_event.is_set():
                return
            self._set_ready(False)
            self.restarts += 1
            self.metrics.restarts.inc()
            if time.monotonic() - started > STABLE_AFTER:
                backoff = BACKOFF_START
            self._stop_rclone()
            self._cleanup_mount()
            log.warning("restarting rclone in %.0fs (restart %d)", backoff, self.restarts)
            end = time.monotonic() + backoff
            while time.monotonic() < end and not self.stop_event.wait(min(1.0, end - time.monotonic())):
                self.heartbeat = time.monotonic()
            backoff = min(backoff * 2, BACKOFF_MAX)


def cache_dir_usage(cache_dir: Path) -> int:
    """Bytes on disk under the VFS cache's data folder (what the LRU limit bounds)."""
    total = 0
    for dirpath, _, files in os.walk(cache_dir / "vfs"):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _saved_port(path: Path) -> int:
    """The port kept at ``path`` by the last start; 0 (any free one) when there is none."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0
