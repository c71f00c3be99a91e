"""The test-only fault hooks in hf_cache.faults: inert unless their variable is set, exact when it is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from hf_cache import faults
from hf_cache.lab.s3server import S3Server

_PUT_FOUR = """
import sys
import boto3
from botocore.config import Config
from hf_cache import faults

client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
faults.kill_before_write(client)
for i in range(4):
    client.put_object(Bucket=sys.argv[1], Key=f"k{i}", Body=b"x")
"""


def _put_four(bucket: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PUT_FOUR, bucket], env=env, capture_output=True, text=True, timeout=60
    )


def _keys(s3_server: S3Server, bucket: str) -> list[str]:
    listing = s3_server.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_kill_before_write_kills_before_the_next_write(s3_server: S3Server, bucket: str) -> None:
    env = {**os.environ, **s3_server.env(), faults.KILL_AFTER_ENV: "2"}
    result = _put_four(bucket, env)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert _keys(s3_server, bucket) == ["k0", "k1"]  # exactly N writes landed, the (N+1)th never reached S3


def test_kill_before_write_is_inert_when_unset(s3_server: S3Server, bucket: str) -> None:
    env = {k: v for k, v in {**os.environ, **s3_server.env()}.items() if k != faults.KILL_AFTER_ENV}
    result = _put_four(bucket, env)
    assert result.returncode == 0, result.stderr
    assert _keys(s3_server, bucket) == ["k0", "k1", "k2", "k3"]


def test_fuse_device_defaults_to_dev_fuse_and_follows_the_hook(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(faults.FUSE_DEVICE_ENV, raising=False)
    assert faults.fuse_device() == "/dev/fuse"
    monkeypatch.setenv(faults.FUSE_DEVICE_ENV, str(tmp_path / "elsewhere"))
    assert faults.fuse_device() == str(tmp_path / "elsewhere")
