"""Shared set-up of the node-tier tests: publish with the real refresh, mount with the real supervisor + tier."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from hf_cache.lab.mounting import RunningMount, start_mount
from hf_cache.lab.s3server import S3Server
from tests.refresh_helpers import run_refresh


def publish(s3: S3Server, bucket: str, folder: Path, repo: str = "org/m", prefix: str = "hf") -> None:
    models = folder.parent / f"models-{folder.name}.txt"
    models.write_text(f"{repo} source=file://{folder}\n")
    result = run_refresh(models, bucket, s3.env(), prefix=prefix)
    assert result.returncode == 0, result.stderr


def mount_tier(
    s3: S3Server, bucket: str, root: Path, *extra: str, prefix: str = "hf", cache_max: str = "2G"
) -> RunningMount:
    """The supervisor with the tier at ``root`` (HF_HOME) and the rclone mount at ``root/mnt``."""
    return start_mount(
        bucket=bucket,
        prefix=prefix,
        env=s3.env(),
        mountpoint=root / "mnt",
        cache_dir=root.parent / f"{root.name}-rclone-cache",
        extra_args=("--tier-dir", str(root), "--cache-max-size", cache_max, "--freshness", "1s", *extra),
    )


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0, mount: RunningMount | None = None) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s" + (f"\n{mount.log()}" if mount else ""))


def is_hot(link: Path) -> bool:
    return os.path.islink(link) and "/blobs/" in "/" + os.readlink(link)
