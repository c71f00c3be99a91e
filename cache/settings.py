"""Every default and every environment variable hf-cache reads or sets, each defined once with why it is so.

A default written in three places drifts (``/mnt/hf_cache`` and ``/var/cache/hf-cache`` once were); the model is
huggingface_hub's ``constants.py``. Commands take their flags' defaults and env-var fallbacks from here
(``cache/options.py`` builds the shared flags), ``docs/environment.md`` is generated from :data:`ENV_VARS` (a test
keeps it equal), and :func:`env` is the one reader of the process environment. Modules that build a child process's
environment (rclone's, a job pod's) still copy ``os.environ``, but take the names they set from here.

Test-only fault hooks (``HFCACHE_TEST_KILL_AFTER``, ``HFCACHE_FUSE_DEVICE``) live in ``cache/faults.py``, apart
from what a user sets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# --- paths on a node -------------------------------------------------------------------------------------------
# What job pods see as HF_HOME (read-only); the component and `hf-cache env` agree on it.
MOUNTPOINT = "/mnt/hf_cache"
# Node-local NVMe for rclone's VFS cache: outside the mount, so the cache survives a remount.
CACHE_DIR = "/var/cache/hf-cache"
# The node folder the DaemonSet shares with job pods: the tier (HF_HOME) with the rclone mount inside it.
NODE_ROOT = "/var/lib/hf-cache"
# Where the bucket is mounted on the node under NODE_ROOT (inside the tier, so one read-only pod volume holds both).
NODE_MOUNTPOINT = NODE_ROOT + "/mnt"
# Writable scratch in a job pod for what HF libraries would write under the read-only HF_HOME.
READER_SCRATCH = "/tmp/hf-cache"

# --- mount ----------------------------------------------------------------------------------------------------
# LRU cap of the node cache: a share of the cache disk, so one default fits every node size.
CACHE_MAX_SIZE = "75%"
# A moved ref reaches new opens within this (+1 s): re-listing more often costs S3 LISTs on every node.
FRESHNESS = "30s"
# About when an uncached read fails (EIO) while S3 does not answer: long enough to ride out a blip.
IO_TIMEOUT = "1m"
# Between LRU evictions: rclone's 1 m default let usage overshoot the cap 1.5x (measured).
CACHE_POLL = "10s"
HEALTH_ADDR = "0.0.0.0"  # kubelet probes and Prometheus reach the pod IP
HEALTH_PORT = 9090  # /readyz, /healthz, /metrics
RC_PORT = 5572  # rclone's rc API (127.0.0.1 only): rclone's own default port
BACKEND = "mount2"  # measured faster than `mount` (docs/measurements.md)
# Prefetch on open (cache/mount/prefetch.py), with READ_AHEAD_PARTS 0 only: segment streams in flight per node, over
# all files; 0 turns it off.
# 16 streams of ~90 MB/s each is more than a node's share of S3 usually needs (boto3 uses 10); docs/cold-path.md.
PREFETCH_STREAMS = 16
# Files this large are prefetched when opened; below ~72 MiB a file is one 48 MiB segment (nothing to parallelise).
PREFETCH_MIN_SIZE = "64M"
# A reader whose own connection fills rclone's cache this fast (per second) is left alone: more streams only cost CPU
# (loopback: prefetch made cold reads 0.77x). One S3 connection gives ~90 MB/s: such a reader is always helped.
PREFETCH_FAST_RATE = "300MB"
# The mount's S3 endpoint (cache/mount/s3endpoint.py): parts of 8 MiB kept in flight ahead of each sequential
# downloader; 0: rclone talks to S3 itself, one connection per downloader, and the prefetch runs instead. 16 met
# every cold-path goal where each connection is the limit (docs/cold-path.md); memory is at most streams x parts x
# 8 MiB (4 x 16 x 8 = 512 MiB). Where S3 is next door (READ_AHEAD_NEAR) it sends rclone to S3 itself, so loopback
# keeps rclone's own speed (docs/cold-path.md, stop 24).
READ_AHEAD_PARTS = 16
READ_AHEAD_STREAMS = 4  # sequential downloaders read ahead at once, per node; more are passed through
# An S3 whose parts' first bytes come within this is next door (loopback, the same rack): one connection is not the
# limit there, so the endpoint sends rclone to S3 itself (mount/readahead.py Nearness). Real S3: tens of ms (the lab's
# link: 30 ms); rclone serve s3 on loopback: 1.5-5 ms with 16 parts asked at once on 2 cores. 0: always read ahead.
READ_AHEAD_NEAR = "10ms"

# --- refresh --------------------------------------------------------------------------------------------------
MODELS_FILE = "models.txt"
WORKERS = 4  # files in flight; scratch disk needed is about workers x the largest file
MAX_WORKERS = 64
PRUNE_AFTER = "7d"  # a de-listed repo stays a week: jobs may still read it and a mistaken edit is cheap to undo
MAX_SHARE = 50  # percent of published repos one prune or rm may remove without --force
WARM_WORKERS = 16  # read streams in flight for `hf-cache warm`
# Tries per S3 call, the first included (boto3 "standard" retries: a throttled call waits rand(0..1) x 2^n s, at most
# 20 s, before try n+1): 9 (8 retries) ride out 45 s of 503 SlowDown / 429 on one call on average, 91 s at most.
S3_MAX_ATTEMPTS = 9
DOCTOR_MAX_AGE = "48h"  # a refresh older than two days is stale for a CronJob that runs several times a day

# --- logging and progress -------------------------------------------------------------------------------------
LOG_FORMAT = "text"
PROGRESS_INTERVAL = 10.0  # seconds between progress lines in a pod (no terminal): often enough to see it moving

HUB_ENDPOINT = "https://huggingface.co"  # huggingface_hub's own default for HF_ENDPOINT


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: its name, who reads or sets it, and why it exists."""

    name: str
    used_by: str  # the command(s) or component
    why: str
    default: str = ""
    secret: bool = False  # its value is masked in every log line (cache/logs.py)


def _v(name: str, used_by: str, why: str, default: object = "", secret: bool = False) -> EnvVar:
    return EnvVar(name, used_by, why, str(default), secret)


# Variables hf-cache reads (flags' fallbacks and others), in the order docs/environment.md lists them.
BUCKET_ENV = "HFCACHE_BUCKET"
PREFIX_ENV = "HFCACHE_PREFIX"
MOUNTPOINT_ENV = "HFCACHE_MOUNTPOINT"
CACHE_DIR_ENV = "HFCACHE_CACHE_DIR"
CACHE_MAX_SIZE_ENV = "HFCACHE_CACHE_MAX_SIZE"
HEALTH_PORT_ENV = "HFCACHE_HEALTH_PORT"
HEALTH_ADDR_ENV = "HFCACHE_HEALTH_ADDR"
RC_PORT_ENV = "HFCACHE_RC_PORT"
FRESHNESS_ENV = "HFCACHE_FRESHNESS"
IO_TIMEOUT_ENV = "HFCACHE_IO_TIMEOUT"
CACHE_POLL_ENV = "HFCACHE_CACHE_POLL"
TIER_DIR_ENV = "HFCACHE_TIER_DIR"
PREFETCH_STREAMS_ENV = "HFCACHE_PREFETCH_STREAMS"
PREFETCH_MIN_SIZE_ENV = "HFCACHE_PREFETCH_MIN_SIZE"
PREFETCH_FAST_RATE_ENV = "HFCACHE_PREFETCH_FAST_RATE"
READ_AHEAD_PARTS_ENV = "HFCACHE_READ_AHEAD_PARTS"
READ_AHEAD_STREAMS_ENV = "HFCACHE_READ_AHEAD_STREAMS"
READ_AHEAD_NEAR_ENV = "HFCACHE_READ_AHEAD_NEAR"
RCLONE_ARGS_ENV = "HFCACHE_RCLONE_ARGS"
MODELS_ENV = "HFCACHE_MODELS"
WORKERS_ENV = "HFCACHE_WORKERS"
SCRATCH_DIR_ENV = "HFCACHE_SCRATCH_DIR"
LOG_FORMAT_ENV = "HFCACHE_LOG_FORMAT"
PROGRESS_INTERVAL_ENV = "HFCACHE_PROGRESS_INTERVAL"
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")  # boto3's own names, S3-specific first
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")
MAX_ATTEMPTS_ENV = "AWS_MAX_ATTEMPTS"  # boto3's own name (its Config would otherwise override it)
HF_ENDPOINT_ENV = "HF_ENDPOINT"
HF_HOME_ENV = "HF_HOME"

ENV_VARS: tuple[EnvVar, ...] = (
    _v(BUCKET_ENV, "refresh, ls, verify, rm, mount", "the S3 bucket (--bucket)"),
    _v(PREFIX_ENV, "refresh, ls, verify, rm, mount", "key prefix inside the bucket; its root is HF_HOME (--prefix)"),
    _v(ENDPOINT_ENVS[0], "refresh, ls, verify, rm, mount", "S3 endpoint (--endpoint-url); boto3's name"),
    _v(ENDPOINT_ENVS[1], "refresh, ls, verify, rm, mount", "S3 endpoint when AWS_ENDPOINT_URL_S3 is unset"),
    _v(REGION_ENVS[0], "refresh, ls, verify, rm, mount", "S3 region (--region)"),
    _v(REGION_ENVS[1], "refresh, ls, verify, rm, mount", "S3 region when AWS_REGION is unset"),
    _v(MAX_ATTEMPTS_ENV, "refresh, ls, verify, rm", "tries per S3 call, retries included", S3_MAX_ATTEMPTS),
    _v(MODELS_ENV, "refresh", "the models file (--models)", MODELS_FILE),
    _v(WORKERS_ENV, "refresh", "files in flight at once (--workers)", WORKERS),
    _v(SCRATCH_DIR_ENV, "refresh", "where downloads wait for upload (--scratch-dir); default: the temp dir"),
    _v(MOUNTPOINT_ENV, "mount, env, warm, doctor", "where the bucket is mounted (--mountpoint)", MOUNTPOINT),
    _v(CACHE_DIR_ENV, "mount", "node-local disk for rclone's VFS cache (--cache-dir)", CACHE_DIR),
    _v(CACHE_MAX_SIZE_ENV, "mount", "LRU cap: a size or a share of the cache disk (--cache-max-size)", CACHE_MAX_SIZE),
    _v(HEALTH_PORT_ENV, "mount", "port of /readyz, /healthz, /metrics (--health-port)", HEALTH_PORT),
    _v(HEALTH_ADDR_ENV, "mount", "address of the health/metrics server (--health-addr)", HEALTH_ADDR),
    _v(RC_PORT_ENV, "mount", "rclone's rc API port on 127.0.0.1 (--rc-port)", RC_PORT),
    _v(FRESHNESS_ENV, "mount", "how often the mount re-lists what refresh changed (--freshness)", FRESHNESS),
    _v(IO_TIMEOUT_ENV, "mount", "how long an uncached read waits for S3 (--io-timeout)", IO_TIMEOUT),
    _v(CACHE_POLL_ENV, "mount", "how often the LRU cap is enforced (--cache-poll)", CACHE_POLL),
    _v(TIER_DIR_ENV, "mount, node ls", "the node tier folder (--tier-dir)"),
    _v(PREFETCH_STREAMS_ENV, "mount", "prefetch-on-open streams, 0 = off (--prefetch-streams)", PREFETCH_STREAMS),
    _v(
        PREFETCH_MIN_SIZE_ENV,
        "mount",
        "smallest file prefetched on its first read() (--prefetch-min-size)",
        PREFETCH_MIN_SIZE,
    ),
    _v(PREFETCH_FAST_RATE_ENV, "mount", "no prefetch above this fill rate (--prefetch-fast-rate)", PREFETCH_FAST_RATE),
    _v(
        READ_AHEAD_PARTS_ENV,
        "mount",
        "read-ahead parts per sequential reader, 0 = off (--read-ahead-parts)",
        READ_AHEAD_PARTS,
    ),
    _v(
        READ_AHEAD_STREAMS_ENV,
        "mount",
        "sequential readers read ahead at once (--read-ahead-streams)",
        READ_AHEAD_STREAMS,
    ),
    _v(
        READ_AHEAD_NEAR_ENV,
        "mount",
        "S3 answering within this is next door: no read-ahead, 0 = always (--read-ahead-near)",
        READ_AHEAD_NEAR,
    ),
    _v(RCLONE_ARGS_ENV, "mount", "extra rclone flags, used when no --rclone-arg is given"),
    _v(LOG_FORMAT_ENV, "every command", "log lines as text or JSON (--log-format)", LOG_FORMAT),
    _v(PROGRESS_INTERVAL_ENV, "refresh, verify, warm", "seconds between progress lines in a pod", PROGRESS_INTERVAL),
    _v(HF_ENDPOINT_ENV, "refresh", "the Hub (or a mirror) to publish from; huggingface_hub's name", HUB_ENDPOINT),
    _v("HF_TOKEN", "refresh", "token for gated/private repos; read by huggingface_hub", secret=True),
    _v("HUGGING_FACE_HUB_TOKEN", "refresh", "the older name of HF_TOKEN; masked in logs", secret=True),
    _v("AWS_ACCESS_KEY_ID", "refresh, mount", "S3 credentials when not from a role (boto3 and rclone read them)"),
    _v("AWS_SECRET_ACCESS_KEY", "refresh, mount", "S3 credentials when not from a role", secret=True),
    _v("AWS_SESSION_TOKEN", "refresh, mount", "temporary S3 credentials", secret=True),
    _v(HF_HOME_ENV, "node ls, doctor", "in a job pod: the folder `hf-cache env` set (the tier or the mount)"),
)

# Variables that hold secrets: their values are masked in every log line, status file and message.
SECRET_ENV_VARS: tuple[str, ...] = (
    *(v.name for v in ENV_VARS if v.secret),
    "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY",  # what mount/rclone.py passes rclone
    "RCLONE_CONFIG_S3_SESSION_TOKEN",
)
# URLs that may carry user:password@ (a mirror, a MinIO): the password is masked too.
URL_ENV_VARS: tuple[str, ...] = (HF_ENDPOINT_ENV, ENDPOINT_ENVS[1], ENDPOINT_ENVS[0])

# What `hf-cache env` sets in a job pod (cache/readers/envvars.py builds the values): name -> why.
READER_ENV_VARS: dict[str, str] = {
    "HF_HOME": "the tier or the mount (read-only): huggingface_hub, transformers and datasets look here",
    "HF_HUB_CACHE": "HF_HOME/hub: the hub cache huggingface_hub reads",
    "HF_HUB_OFFLINE": "never contact the Hub: a miss fails at once instead of waiting on network retries",
    "HF_DATASETS_OFFLINE": "the same for datasets",
    "TRANSFORMERS_OFFLINE": "the same for transformers",
    "HF_HUB_DISABLE_UPDATE_CHECK": "the hf CLI would write update-check stamps into the read-only HF_HOME",
    "HF_HUB_DISABLE_TELEMETRY": "no calls home from a job pod",
    "HF_MODULES_CACHE": "transformers' trust_remote_code modules, written: moved to scratch",
    "HF_DATASETS_CACHE": "datasets' Arrow processing cache, written: moved to scratch",
    "HF_XET_CACHE": "xet's chunk cache, written: moved to scratch",
    "HF_ASSETS_CACHE": "library assets, written: moved to scratch",
    "HF_TOKEN_PATH": "a login would write the token under HF_HOME: moved to scratch",
}


def env(name: str, default: str | None = None) -> str | None:
    """The one read of the process environment: an empty value counts as unset (as click treats it)."""
    value = os.environ.get(name)
    return value if value else default


def first_env(names: tuple[str, ...]) -> tuple[str, str] | None:
    """(name, value) of the first of ``names`` that is set, as boto3 picks among its fallbacks."""
    for name in names:
        value = env(name)
        if value is not None:
            return name, value
    return None


def progress_interval() -> float:
    """Seconds between a pod's progress lines: ``HFCACHE_PROGRESS_INTERVAL``; a bad or non-positive value: default."""
    try:
        value = float(env(PROGRESS_INTERVAL_ENV) or PROGRESS_INTERVAL)
    except ValueError:
        return PROGRESS_INTERVAL
    return value if value > 0 else PROGRESS_INTERVAL


def environ() -> dict[str, str]:
    """A copy of the whole environment: what `hf-cache doctor` compares with `hf-cache env`, and the base of a child
    process's environment (rclone's, a demo reader's)."""
    return dict(os.environ)
