"""Mount settings: flags and environment turned into validated values, before anything is started."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hf_cache.errors import ConfigError

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:([KMGTP])(?:iB|i|B)?|(B))$", re.IGNORECASE)
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_MULT = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_size(text: str, cache_dir: Path) -> int:
    """``500G`` (binary units, like rclone) or ``75%`` of the filesystem that holds ``cache_dir``.

    A bare number is refused: ``75`` was meant as 75% more often than as 75 bytes.
    """
    text = text.strip()
    if m := _PERCENT.match(text):
        share = float(m.group(1))
        if not 0 < share <= 100:
            raise ConfigError(f"--cache-max-size {text!r}: a share must be between 0% and 100%")
        probe = cache_dir
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return int(shutil.disk_usage(probe).total * share / 100)
    if m := _SIZE.match(text):
        return int(float(m.group(1)) * _MULT[(m.group(2) or "").upper()])
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        raise ConfigError(
            f"--cache-max-size {text!r} has no unit: write {text}% for a share of the cache disk, or {text}G for a size"
        )
    raise ConfigError(f"--cache-max-size {text!r}: use a size like 500G / 200Gi / 1T, or a share like 75%")


def parse_seconds(text: str, flag: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise ConfigError(f"{flag} {text!r}: use a duration like 500ms, 10s, 2m")
    value = float(m.group(1))
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


@dataclass(frozen=True)
class MountConfig:
    bucket: str
    prefix: str = ""
    mountpoint: Path = Path("/mnt/hf_cache")
    cache_dir: Path = Path("/var/cache/hf-cache")
    cache_max_bytes: int = 0
    endpoint_url: str | None = None
    region: str | None = None
    health_addr: str = "0.0.0.0"
    health_port: int = 9090
    rc_port: int = 5572
    freshness: float = 30.0  # seconds: bound on how long a moved ref may look stale to new opens
    io_timeout: float = 60.0  # seconds: about when an uncached read fails (EIO) while S3 does not answer
    cache_poll: float = 10.0  # seconds between LRU evictions (measured: 1 m let usage overshoot 1.5x)
    backend: str = "mount2"
    extra_args: tuple[str, ...] = field(default=())
    tier_dir: Path | None = None  # the node-local tier (cache/node/); None: no tier
    tier_cap_bytes: int = 0  # node cap for hot tier + rclone cache (rclone itself gets cache_max_bytes)

    @property
    def remote_path(self) -> str:
        return f"{self.bucket}/{self.prefix.strip('/')}".rstrip("/")
