"""Pure decisions of the mount supervisor: sizes, flags, endpoint checks, start-failure classes, freshness."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from hf_cache.errors import ConfigError, MountError
from hf_cache.mount.bounded import BoundedWorker
from hf_cache.mount.checks import check_directory, classify_start_failure, split_rclone_args, take_lock
from hf_cache.mount.config import node_cap_bytes
from hf_cache.mount.freshness import parse_status
from hf_cache.s3 import check_endpoint, make_client


@pytest.mark.parametrize(("text", "expected"), [("500G", 500 * 1024**3), ("200Gi", 200 * 1024**3), ("8M", 8 << 20)])
def test_sizes_with_units(text: str, expected: int) -> None:
    assert node_cap_bytes(text, Path("/tmp")) == expected


def test_a_size_without_unit_is_refused_naming_both_meanings() -> None:
    with pytest.raises(ConfigError, match=r"'75' has no unit: write 75% .* or 75G"):
        node_cap_bytes("75", Path("/tmp"))


def test_rclone_args_follow_shell_quoting_and_cli_wins_over_env() -> None:
    assert split_rclone_args([], "--user-agent 'hf cache' --vfs-read-ahead 1G") == (
        "--user-agent",
        "hf cache",
        "--vfs-read-ahead",
        "1G",
    )
    assert split_rclone_args(["--a 1", "--b"], "--ignored") == ("--a", "1", "--b")
    with pytest.raises(ConfigError, match="HFCACHE_RCLONE_ARGS"):
        split_rclone_args([], "--user-agent 'unclosed")


@pytest.mark.parametrize("url", ["127.0.0.1:9000", "s3.example.com", "ftp://h", "http://", "http://h:99999"])
def test_endpoints_without_scheme_or_host_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="--endpoint-url"):
        check_endpoint(url)


def test_make_client_checks_the_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "127.0.0.1:9000")
    with pytest.raises(ConfigError, match=r"AWS_ENDPOINT_URL_S3 '127\.0\.0\.1:9000' needs a scheme"):
        make_client()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    make_client(region="us-east-1")


def test_directory_checks(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_directory(tmp_path / "f", "--cache-dir")
    with pytest.raises(ConfigError, match="which is a file"):
        check_directory(tmp_path / "f" / "sub", "--mountpoint")
    check_directory(tmp_path / "new" / "sub", "--mountpoint")


def test_lock_is_exclusive_and_released_with_its_holder(tmp_path: Path) -> None:
    held = take_lock(tmp_path / "l", tmp_path / "mnt")
    with pytest.raises(MountError, match="another hf-cache mount already serves"):
        take_lock(tmp_path / "l", tmp_path / "mnt")
    held.close()
    take_lock(tmp_path / "l", tmp_path / "mnt").close()


def test_start_failures_are_classified() -> None:
    assert "check --rclone-arg" in (classify_start_failure(["Error: unknown flag: --nope"]) or "")
    assert "--rc-port" in (
        classify_start_failure(
            ["CRITICAL: Failed to start remote control: listen tcp 127.0.0.1:1: bind: address already in use"]
        )
        or ""
    )
    assert classify_start_failure(["ERROR : dial tcp 127.0.0.1:9: connect: connection refused"]) is None
    assert classify_start_failure([]) is None


def test_freshness_from_status_json() -> None:
    ok = json.dumps({"ended": "2026-11-27T08:00:00+00:00", "state": "ok", "repos": [{"state": "ok"}]})
    fresh = parse_status(ok)
    assert fresh.last_run == fresh.last_success == 1795766400.0 and fresh.failed_repos == 0
    failed = json.dumps(
        {"ended": "2026-11-27T09:00:00Z", "state": "failed", "repos": [{"state": "ok"}, {"state": "failed"}]}
    )
    after = parse_status(failed, previous_success=fresh.last_success)
    assert after.last_run == 1795770000.0 and after.last_success == fresh.last_success and after.failed_repos == 1
    assert parse_status(failed).last_success is None
    with pytest.raises(ValueError):
        parse_status("[1]")


def test_bounded_worker_never_runs_two_calls_nor_waits_past_its_bound() -> None:
    release = threading.Event()
    worker = BoundedWorker("t")
    base = threading.active_count()
    started = time.monotonic()
    first = worker.run(release.wait, 0.2)
    assert first.timed_out and time.monotonic() - started < 1
    for _ in range(20):  # a hung call: later calls wait on it, they never start another thread
        assert worker.run(lambda: 1, 0.01).timed_out
    assert threading.active_count() == base
    assert worker.stuck_for() >= 0.2
    release.set()
    time.sleep(0.05)
    assert worker.run(lambda: os.getpid(), 1).value == os.getpid()
    assert worker.stuck_for() == 0
    err = worker.run(lambda: 1 / 0, 1)
    assert not err.ok and isinstance(err.error, ZeroDivisionError)


def test_ready_only_reads_state_and_healthz_is_503_when_the_loop_stalls(tmp_path: Path) -> None:
    from hf_cache.mount.config import MountConfig
    from hf_cache.mount.health import start_health_server
    from hf_cache.mount.supervisor import HEARTBEAT_STALE, Supervisor

    sup = Supervisor(MountConfig(bucket="b", mountpoint=tmp_path / "mnt", cache_dir=tmp_path / "c"))
    sup.metrics.up.set(1)
    assert sup.ready() is False
    assert sup.metrics.up._value.get() == 1  # ready() changed no metric
    server = start_health_server("127.0.0.1", 0, sup.ready, sup.alive, sup.metrics, lambda: None)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert _status(url + "/readyz") == 503
        assert _status(url + "/healthz") == 200
        sup.heartbeat = time.monotonic() - HEARTBEAT_STALE - 1  # the loop has not ticked for too long
        assert _status(url + "/healthz") == 503
    finally:
        server.shutdown()
        server.server_close()


def _status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
