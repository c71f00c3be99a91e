"""Fixtures every test module reuses: a real S3 server on 127.0.0.1, per-test buckets, a tiny real model.

Servers are real processes started here and stopped in teardown, also when a test fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from hf_cache.demo.tinymodel import make_tiny_gpt2
from hf_cache.lab.mounting import RunningMount, start_mount
from hf_cache.lab.s3link import LinkParams, S3Link
from hf_cache.lab.s3server import S3Server, start_s3_server, via


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this process (boto3, and children that inherit os.environ) at the loopback S3 server."""
    env = s3_server.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def bucket(s3_server: S3Server, s3_env: dict[str, str]) -> str:
    """A fresh, empty bucket on the loopback server (names are unique, so tests never see each other)."""
    return s3_server.new_bucket()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 + tokenizer saved with transformers; read-only by convention (copy before changing)."""
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture
def tiny_model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "tiny-gpt2"
    shutil.copytree(tiny_model_dir, dest)
    return dest


def require_tool(name: str) -> str:
    """Tests that need a tool fail loudly when it is missing (CI installs them all); they never skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name!r} is not on PATH: install it (see .ci/run) - this test does not skip", pytrace=False)
    return path


@pytest.fixture
def mounted(s3_env: dict[str, str], tmp_path: Path):
    """Factory: mounted(bucket=..., prefix=..., extra_args=...) -> RunningMount, stopped and unmounted afterwards."""

    require_tool("fusermount3")
    started: list[RunningMount] = []

    def factory(
        *,
        bucket: str,
        prefix: str = "",
        extra_args: tuple[str, ...] = (),
        name: str = "m",
        cache_dir: Path | None = None,
        wait: bool = True,
    ) -> RunningMount:
        m = start_mount(
            bucket=bucket,
            prefix=prefix,
            env=s3_env,
            mountpoint=tmp_path / f"{name}-mnt",
            cache_dir=cache_dir or tmp_path / f"{name}-cache",
            extra_args=extra_args,
            wait=wait,
        )
        started.append(m)
        return m

    yield factory
    for m in started:
        m.stop()


@pytest.fixture
def hub_server():
    """A Hub-compatible server on 127.0.0.1 (HubServer); stopped after the test."""
    from hf_cache.lab.hubserver import HubServer

    server = HubServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def link(s3_server: S3Server) -> Iterator[S3Link]:
    """The S3-like link (cache/lab/s3link.py, real S3's defaults) in front of the session's S3 server."""
    with S3Link(s3_server.endpoint, LinkParams()) as running:
        yield running


def mount_over(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], link: S3Link, *extra: str
) -> Generator[RunningMount, None, None]:
    """A mount whose S3 traffic all goes through ``link``, stopped when the generator is closed."""
    require_tool("fusermount3")
    m = start_mount(
        bucket=bucket,
        prefix="",
        env=via(s3_env, link.endpoint),
        mountpoint=tmp_path / "mnt",
        cache_dir=tmp_path / "cache",
        extra_args=extra,
    )
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def link_mount(
    tmp_path: Path, bucket: str, s3_env: dict[str, str], link: S3Link
) -> Iterator[Callable[..., RunningMount]]:
    """Factory: a mount over the link (started after publishing: the listing is then complete), stopped after."""
    running: list[Generator[RunningMount, None, None]] = []

    def start(*extra: str) -> RunningMount:
        running.append(mount_over(tmp_path, bucket, s3_env, link, *extra))
        return next(running[-1])

    yield start
    for gen in running:
        gen.close()
