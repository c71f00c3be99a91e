"""Mount settings: flags and environment turned into validated values, before anything is started."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hf_cache import settings
from hf_cache.units import parse_duration, parse_size, parse_size_or_share


def node_cap_bytes(text: str, cache_dir: Path, flag: str = "--cache-max-size") -> int:
    """``500G`` (binary units, like rclone) or ``75%`` of the filesystem that holds ``cache_dir`` (which may not
    exist yet: the nearest existing parent is measured), so one default fits every node's disk."""
    cap = parse_size_or_share(text, flag)
    if isinstance(cap, int):
        return cap
    probe = cache_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return int(shutil.disk_usage(probe).total * cap)


@dataclass(frozen=True)
class MountConfig:
    bucket: str
    prefix: str = ""
    mountpoint: Path = Path(settings.MOUNTPOINT)
    cache_dir: Path = Path(settings.CACHE_DIR)
    cache_max_bytes: int = 0
    endpoint_url: str | None = None
    region: str | None = None
    health_addr: str = settings.HEALTH_ADDR
    health_port: int = settings.HEALTH_PORT
    rc_port: int = settings.RC_PORT
    # seconds, from settings.py's defaults (why each is so is written there)
    freshness: float = parse_duration(settings.FRESHNESS, settings.FRESHNESS_ENV)
    io_timeout: float = parse_duration(settings.IO_TIMEOUT, settings.IO_TIMEOUT_ENV)
    cache_poll: float = parse_duration(settings.CACHE_POLL, settings.CACHE_POLL_ENV)
    backend: str = settings.BACKEND
    extra_args: tuple[str, ...] = field(default=())
    tier_dir: Path | None = None  # the node-local tier (cache/node/); None: no tier
    tier_cap_bytes: int = 0  # node cap for hot tier + rclone cache (rclone itself gets cache_max_bytes)
    prefetch_streams: int = settings.PREFETCH_STREAMS  # prefetch-on-open streams per node (mount/prefetch.py); 0 off
    prefetch_min_size: int = parse_size(settings.PREFETCH_MIN_SIZE, settings.PREFETCH_MIN_SIZE_ENV)
    prefetch_fast_rate: int = parse_size(settings.PREFETCH_FAST_RATE, settings.PREFETCH_FAST_RATE_ENV)  # bytes/s
    read_ahead_parts: int = settings.READ_AHEAD_PARTS  # the mount's S3 endpoint (mount/s3endpoint.py); 0 off
    read_ahead_streams: int = settings.READ_AHEAD_STREAMS
    read_ahead_near: float = parse_duration(settings.READ_AHEAD_NEAR, settings.READ_AHEAD_NEAR_ENV)  # seconds; 0 off

    @property
    def remote_path(self) -> str:
        return f"{self.bucket}/{self.prefix.strip('/')}".rstrip("/")
