"""``hf-cache mount``: what the DaemonSet container runs on every node."""

from __future__ import annotations

import os
from pathlib import Path

import click

from hf_cache.mount.checks import split_rclone_args
from hf_cache.mount.config import MountConfig, parse_seconds, parse_size


@click.command()
@click.option("--bucket", envvar="HFCACHE_BUCKET", required=True, help="S3 bucket. [env: HFCACHE_BUCKET]")
@click.option(
    "--prefix", envvar="HFCACHE_PREFIX", default="", help="Key prefix: its root is HF_HOME. [env: HFCACHE_PREFIX]"
)
@click.option(
    "--mountpoint",
    envvar="HFCACHE_MOUNTPOINT",
    default="/mnt/hf_cache",
    show_default=True,
    help="Where the bucket is mounted, read-only. [env: HFCACHE_MOUNTPOINT]",
)
@click.option(
    "--cache-dir",
    envvar="HFCACHE_CACHE_DIR",
    default="/var/cache/hf-cache",
    show_default=True,
    help="Node-local disk (NVMe) for the VFS cache. [env: HFCACHE_CACHE_DIR]",
)
@click.option(
    "--cache-max-size",
    envvar="HFCACHE_CACHE_MAX_SIZE",
    default="75%",
    show_default=True,
    help="LRU cap: a size (500G) or a share of the cache disk (75%). [env: HFCACHE_CACHE_MAX_SIZE]",
)
@click.option(
    "--endpoint-url",
    envvar=["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
    default=None,
    help="S3 endpoint. [env: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL]",
)
@click.option(
    "--region",
    envvar=["AWS_REGION", "AWS_DEFAULT_REGION"],
    default=None,
    help="S3 region. [env: AWS_REGION, AWS_DEFAULT_REGION]",
)
@click.option(
    "--health-port",
    envvar="HFCACHE_HEALTH_PORT",
    type=int,
    default=9090,
    show_default=True,
    help="Port of /readyz, /healthz, /metrics.",
)
@click.option(
    "--health-addr",
    envvar="HFCACHE_HEALTH_ADDR",
    default="0.0.0.0",
    show_default=True,
    help="Address the health/metrics server listens on.",
)
@click.option(
    "--rc-port",
    envvar="HFCACHE_RC_PORT",
    type=int,
    default=5572,
    show_default=True,
    help="rclone's rc API port, on 127.0.0.1 only.",
)
@click.option(
    "--freshness",
    envvar="HFCACHE_FRESHNESS",
    default="30s",
    show_default=True,
    help="How often the mount re-lists what refresh changes: a moved ref reaches new opens within this (+1 s) "
    "of the refresh's end.",
)
@click.option(
    "--io-timeout",
    envvar="HFCACHE_IO_TIMEOUT",
    default="1m",
    show_default=True,
    help="About how long a read of uncached data waits for S3 before it fails with an I/O error (outage). "
    "Cached data never waits for S3. [env: HFCACHE_IO_TIMEOUT]",
)
@click.option(
    "--cache-poll",
    envvar="HFCACHE_CACHE_POLL",
    default="10s",
    show_default=True,
    help="How often the LRU limit is enforced.",
)
@click.option(
    "--backend",
    type=click.Choice(["mount2", "mount"]),
    default="mount2",
    show_default=True,
    help="rclone's FUSE backend (mount2 measured faster; see README.md).",
)
@click.option(
    "--tier-dir",
    envvar="HFCACHE_TIER_DIR",
    default=None,
    help="Keep a verified node-local Hugging Face cache here (HF_HOME for job pods; must contain --mountpoint); "
    "--cache-max-size then caps tier + rclone cache together. See docs/node-tier.md. [env: HFCACHE_TIER_DIR]",
)
@click.option(
    "--rclone-arg",
    "rclone_extra",
    multiple=True,
    help="Extra rclone flags (repeatable; each value split with shell quoting rules; env HFCACHE_RCLONE_ARGS, used "
    "when no --rclone-arg is given). Checked with rclone before mounting. The escape hatch for tuning.",
)
def mount(
    bucket: str,
    prefix: str,
    mountpoint: str,
    cache_dir: str,
    cache_max_size: str,
    endpoint_url: str | None,
    region: str | None,
    health_port: int,
    health_addr: str,
    rc_port: int,
    freshness: str,
    io_timeout: str,
    cache_poll: str,
    backend: str,
    rclone_extra: tuple[str, ...],
    tier_dir: str | None,
) -> None:
    """Mount the bucket read-only at MOUNTPOINT through rclone's VFS cache, and keep it healthy until stopped."""
    from hf_cache.mount.supervisor import Supervisor
    from hf_cache.node.agent import RCLONE_SHARE
    from hf_cache.node.tree import Tier

    node_cap = parse_size(cache_max_size, Path(cache_dir))
    tier = Tier.make(Path(tier_dir), Path(mountpoint)) if tier_dir else None  # one line if the paths do not fit

    cfg = MountConfig(
        bucket=bucket,
        prefix=prefix,
        mountpoint=Path(mountpoint),
        cache_dir=Path(cache_dir),
        cache_max_bytes=node_cap if tier is None else int(node_cap * RCLONE_SHARE),
        endpoint_url=endpoint_url,
        region=region,
        health_addr=health_addr,
        health_port=health_port,
        rc_port=rc_port,
        freshness=parse_seconds(freshness, "--freshness"),
        io_timeout=parse_seconds(io_timeout, "--io-timeout"),
        cache_poll=parse_seconds(cache_poll, "--cache-poll"),
        backend=backend,
        extra_args=split_rclone_args(rclone_extra, os.environ.get("HFCACHE_RCLONE_ARGS")),
        tier_dir=None if tier is None else tier.root,
        tier_cap_bytes=node_cap,
    )
    Supervisor(cfg).run()
