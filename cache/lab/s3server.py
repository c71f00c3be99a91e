"""A real S3 server on 127.0.0.1, in its own process so FUSE reads never share our GIL.

Two kinds: moto's server mode (what the tests and the demo use: conditional writes, every API the refresh calls), or
``rclone serve s3`` over a local folder (the benchmarks' choice for big reads: moto answers a ranged GET by slicing
the whole in-memory object, which penalises every chunked reader; rclone serves ranges from disk like a real store).
moto is imported only when a moto server is started, so importing the lab costs no more than the product.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hf_cache.errors import ConfigError
from hf_cache.lab.net import free_port, stop, wait_http

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def via(env: dict[str, str], endpoint: str) -> dict[str, str]:
    """``env`` with S3 reached at ``endpoint`` (a link or fault proxy in front of the server): boto3 reads
    AWS_ENDPOINT_URL_S3 before AWS_ENDPOINT_URL, so both must name it."""
    return {**env, "AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint}


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        """The environment a child process (hf-cache, rclone) needs to talk to this server."""
        return via(CREDENTIALS, self.endpoint)

    def client(self) -> S3Client:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}),
        )

    def new_bucket(self, stem: str = "hfc") -> str:
        name = f"{stem}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        stop(self.proc)


def start_moto(env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    """moto's S3 server on 127.0.0.1, in its own process (FUSE reads must never wait on our GIL)."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise ConfigError("the loopback S3 server needs moto: pip install 'hf-cache[test]'") from exc
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=tempfile.gettempdir(),  # moto's request recorder (used by the refresh benchmark) writes into its cwd
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(endpoint + "/moto-api/", proc=proc, what="the loopback S3 server")
    except BaseException:
        stop(proc)
        raise
    return endpoint, proc


def start_s3_server() -> S3Server:
    """A moto server with the lab's credentials."""
    endpoint, proc = start_moto({**os.environ, **CREDENTIALS})
    return S3Server(endpoint=endpoint, proc=proc)


def start_rclone_s3(root: Path) -> S3Server:
    """``rclone serve s3`` over ``root`` (each top-level folder is a bucket), with the lab's credentials."""
    from hf_cache.mount.rclone import rclone_binary

    port = free_port()
    proc = subprocess.Popen(
        [
            rclone_binary(),
            "serve",
            "s3",
            str(root),
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{CREDENTIALS['AWS_ACCESS_KEY_ID']},{CREDENTIALS['AWS_SECRET_ACCESS_KEY']}",
            "--config",
            "/dev/null",
            # no MD5 ETags: S3 keeps them stored, but this server would hash a whole file per listing/HEAD
            "--etag-hash",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc=proc, what="rclone serve s3")
    except BaseException:
        stop(proc)
        raise
    return S3Server(endpoint=f"http://127.0.0.1:{port}", proc=proc)
