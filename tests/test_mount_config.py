"""Every misconfiguration of ``hf-cache mount`` is one line and a non-zero exit before rclone starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from hf_cache.lab.s3server import S3Server
from tests.test_mount import ROOT, SHA1, publish


def _run(args: list[str], env: dict[str, str], tmp_path: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    base = ["--mountpoint", str(tmp_path / "mnt"), "--cache-dir", str(tmp_path / "cache")]
    base += ["--health-port", "0", "--health-addr", "127.0.0.1"]
    cmd = [sys.executable, "-m", "hf_cache", "mount", *base, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _one_line(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode != 0, result.stderr
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("hf-cache: error:")]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "starting rclone" not in result.stderr
    assert "Usage:" not in result.stderr


def _busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


def test_operator_mistakes_are_one_line_before_rclone_starts(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    env = {**os.environ, **s3_server.env()}
    b = ["--bucket", bucket]
    _one_line(_run([*b, "--endpoint-url", "127.0.0.1:9000"], env, tmp_path), "needs a scheme and a host")
    (tmp_path / "file").write_text("x")
    _one_line(_run([*b, "--mountpoint", str(tmp_path / "file")], env, tmp_path), "--mountpoint")
    _one_line(_run([*b, "--cache-dir", str(tmp_path / "file")], env, tmp_path), "--cache-dir")
    busy = _busy_port()
    try:
        port = str(busy.getsockname()[1])
        _one_line(_run([*b, "--health-port", port], env, tmp_path), f"cannot serve health on 127.0.0.1:{port}")
        _one_line(_run([*b, "--rc-port", port], env, tmp_path), f"--rc-port {port} is in use")
    finally:
        busy.close()
    _one_line(_run([*b, "--health-port", "70000"], env, tmp_path), "--health-port 70000")
    _one_line(_run([*b, "--health-addr", "not an address"], env, tmp_path), "--health-addr 'not an address'")
    _one_line(_run([*b, "--rclone-arg", "--no-such-flag"], env, tmp_path), "unknown flag: --no-such-flag")
    quoted = {**env, "HFCACHE_RCLONE_ARGS": "--vfs-read-ahead 'not a size'"}
    _one_line(_run(b, quoted, tmp_path), 'invalid argument "not a size" for "--vfs-read-ahead"')
    _one_line(_run([*b, "--cache-max-size", "75"], env, tmp_path), "'75' has no unit")


def test_endpoint_without_scheme_is_one_line_in_refresh_and_ls(tmp_path: Path) -> None:
    env = {**os.environ, "AWS_ENDPOINT_URL": "127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    env.pop("AWS_ENDPOINT_URL_S3", None)
    models = tmp_path / "models.txt"
    models.write_text("org/m\n")
    for args in (["ls", "--bucket", "b"], ["refresh", "--bucket", "b", "--models", str(models)]):
        result = subprocess.run([sys.executable, "-m", "hf_cache", *args], env=env, capture_output=True, text=True)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hf-cache: error: "), result.stderr
        assert "AWS_ENDPOINT_URL '127.0.0.1:9000' needs a scheme and a host: write http://127.0.0.1:9000" in lines[0]


def test_a_second_mount_on_a_served_path_is_refused_and_the_first_keeps_serving(
    mounted, s3_server: S3Server, bucket: str
) -> None:
    publish(s3_server.client(), bucket, {f"{ROOT}/refs/main": SHA1.encode()})
    first = mounted(bucket=bucket, prefix="p")
    env = {**os.environ, **s3_server.env()}
    other_cache = first.cache_dir.parent / "other-cache"
    result = _run(
        ["--bucket", bucket, "--prefix", "p", "--mountpoint", str(first.mountpoint), "--cache-dir", str(other_cache)],
        env,
        first.cache_dir.parent,
    )
    _one_line(result, f"another hf-cache mount already serves {first.mountpoint}")
    time.sleep(1)
    assert (first.mountpoint / ROOT / "refs" / "main").read_bytes() == SHA1.encode()
    assert first.get("/readyz")[0] == 200
    assert first.metrics()["hfcache_rclone_restarts_total"] == 0


def test_a_permanent_rclone_start_failure_exits_with_one_line(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    env = {**os.environ, **s3_server.env()}
    busy = _busy_port()  # rclone's own rc server cannot bind: restarting would never help
    try:
        addr = f"127.0.0.1:{busy.getsockname()[1]}"
        started = time.monotonic()
        result = _run(["--bucket", bucket, "--rclone-arg", f"--rc-addr {addr}"], env, tmp_path)
    finally:
        busy.close()
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("hf-cache: error:")]
    assert len(lines) == 1 and "rclone cannot start" in lines[0] and "address already in use" in lines[0], result.stderr
    assert "restarting rclone" not in result.stderr
    assert time.monotonic() - started < 20
