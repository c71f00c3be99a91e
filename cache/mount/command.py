"""``hf-cache mount``: what the DaemonSet container runs on every node."""

from __future__ import annotations

from pathlib import Path

import click

from hf_cache import options, settings, units
from hf_cache.mount.checks import split_rclone_args
from hf_cache.mount.config import MountConfig, node_cap_bytes
from hf_cache.units import parse_duration


@click.command()
@options.bucket
@options.prefix
@options.mountpoint("Where the bucket is mounted, read-only.")
@options.env_option(
    "--cache-dir",
    envvar=settings.CACHE_DIR_ENV,
    default=settings.CACHE_DIR,
    show_default=True,
    help="Node-local disk (NVMe) for the VFS cache.",
)
@options.env_option(
    "--cache-max-size",
    envvar=settings.CACHE_MAX_SIZE_ENV,
    default=settings.CACHE_MAX_SIZE,
    show_default=True,
    help="LRU cap: a size (500G) or a share of the cache disk (75%).",
)
@options.endpoint_url
@options.region
@options.env_option(
    "--health-port",
    envvar=settings.HEALTH_PORT_ENV,
    type=int,
    default=settings.HEALTH_PORT,
    show_default=True,
    help="Port of /readyz, /healthz, /metrics.",
)
@options.env_option(
    "--health-addr",
    envvar=settings.HEALTH_ADDR_ENV,
    default=settings.HEALTH_ADDR,
    show_default=True,
    help="Address the health/metrics server listens on.",
)
@options.env_option(
    "--rc-port",
    envvar=settings.RC_PORT_ENV,
    type=int,
    default=settings.RC_PORT,
    show_default=True,
    help="rclone's rc API port, on 127.0.0.1 only.",
)
@options.env_option(
    "--freshness",
    envvar=settings.FRESHNESS_ENV,
    default=settings.FRESHNESS,
    show_default=True,
    help="How often the mount re-lists what refresh changes: a moved ref reaches new opens within this (+1 s) "
    "of the refresh's end.",
)
@options.env_option(
    "--io-timeout",
    envvar=settings.IO_TIMEOUT_ENV,
    default=settings.IO_TIMEOUT,
    show_default=True,
    help="About how long a read of uncached data waits for S3 before it fails with an I/O error (outage). "
    "Cached data never waits for S3.",
)
@options.env_option(
    "--cache-poll",
    envvar=settings.CACHE_POLL_ENV,
    default=settings.CACHE_POLL,
    show_default=True,
    help="How often the LRU limit is enforced.",
)
@click.option(
    "--backend",
    type=click.Choice(["mount2", "mount"]),
    default=settings.BACKEND,
    show_default=True,
    help="rclone's FUSE backend (mount2 measured faster; see README.md).",
)
@options.env_option(
    "--tier-dir",
    envvar=settings.TIER_DIR_ENV,
    default=None,
    help="Keep a verified node-local Hugging Face cache here (HF_HOME for job pods; must contain --mountpoint); "
    "--cache-max-size then caps tier + rclone cache together. See docs/node-tier.md.",
)
@options.env_option(
    "--prefetch-streams",
    envvar=settings.PREFETCH_STREAMS_ENV,
    type=click.IntRange(min=0),
    default=settings.PREFETCH_STREAMS,
    show_default=True,
    help="With --read-ahead-parts 0 only: prefetch on first read(): when a reader read()s a large file the node "
    "cache lacks, fetch it in parallel segments with at most this many streams per node (0 = off); mmap loads are "
    "left alone. See docs/cold-path.md.",
)
@options.env_option(
    "--prefetch-min-size",
    envvar=settings.PREFETCH_MIN_SIZE_ENV,
    default=settings.PREFETCH_MIN_SIZE,
    show_default=True,
    help="Smallest file prefetched on its first read().",
)
@options.env_option(
    "--prefetch-fast-rate",
    envvar=settings.PREFETCH_FAST_RATE_ENV,
    default=settings.PREFETCH_FAST_RATE,
    show_default=True,
    help="No prefetch for a reader whose own connection already fills the node cache this fast per second (0 = "
    "always prefetch).",
)
@options.env_option(
    "--read-ahead-parts",
    envvar=settings.READ_AHEAD_PARTS_ENV,
    type=click.IntRange(min=0, max=64),
    default=settings.READ_AHEAD_PARTS,
    show_default=True,
    help="Point rclone at the mount's own S3 endpoint on 127.0.0.1, which keeps this many 8 MiB ranged GETs in "
    "flight ahead of each sequential reader of a cold file and fetches rclone's larger requests as parallel parts "
    "(0 = off: rclone talks to S3 itself, one connection per reader). Every other GET is sent to S3 with a "
    "presigned URL. See docs/cold-path.md.",
)
@options.env_option(
    "--read-ahead-streams",
    envvar=settings.READ_AHEAD_STREAMS_ENV,
    type=click.IntRange(min=1, max=64),
    default=settings.READ_AHEAD_STREAMS,
    show_default=True,
    help="Sequential readers read ahead at once; more are passed through. Memory: up to streams x parts x 8 MiB.",
)
@options.env_option(
    "--read-ahead-near",
    envvar=settings.READ_AHEAD_NEAR_ENV,
    default=settings.READ_AHEAD_NEAR,
    show_default=True,
    help="An S3 that answers parts' requests within this (median time to first byte) is next door, where one "
    "connection is fast: rclone is sent to S3 itself and a large first read gets parts every 10 s only, to measure "
    "again (0 = always read ahead).",
)
@options.env_option(
    "--rclone-arg",
    "rclone_extra",
    envvar=settings.RCLONE_ARGS_ENV,
    multiple=True,
    type=options.ShellWords(),
    help="Extra rclone flags (repeatable; each value split with shell quoting rules; the variable is one such value, "
    "used when no --rclone-arg is given). Checked with rclone before mounting. The escape hatch for tuning.",
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
    prefetch_streams: int,
    prefetch_min_size: str,
    prefetch_fast_rate: str,
    read_ahead_parts: int,
    read_ahead_streams: int,
    read_ahead_near: str,
) -> None:
    """Mount the bucket read-only at MOUNTPOINT through rclone's VFS cache, and keep it healthy until stopped."""
    from hf_cache.mount.supervisor import Supervisor
    from hf_cache.node.agent import RCLONE_SHARE
    from hf_cache.node.tree import Tier

    node_cap = node_cap_bytes(cache_max_size, Path(cache_dir))
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
        freshness=parse_duration(freshness, "--freshness"),
        io_timeout=parse_duration(io_timeout, "--io-timeout"),
        cache_poll=parse_duration(cache_poll, "--cache-poll"),
        backend=backend,
        extra_args=split_rclone_args(rclone_extra, settings.env(settings.RCLONE_ARGS_ENV)),
        tier_dir=None if tier is None else tier.root,
        tier_cap_bytes=node_cap,
        prefetch_streams=prefetch_streams,
        prefetch_min_size=units.parse_size(prefetch_min_size, "--prefetch-min-size"),
        prefetch_fast_rate=units.parse_size(prefetch_fast_rate, "--prefetch-fast-rate"),
        read_ahead_parts=read_ahead_parts,
        read_ahead_streams=read_ahead_streams,
        read_ahead_near=parse_duration(read_ahead_near, "--read-ahead-near"),
    )
    Supervisor(cfg).run()
