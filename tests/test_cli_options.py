"""Flags defined once (cache/options.py) behave the same wherever they are typed: the logging flags before or after
the command's name, a typed flag over its variable, ``doctor --max-age`` in the duration grammar of every other
flag. The CLI runs for real in a subprocess; what it set up is read back from that process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from hf_cache import layout, settings
from hf_cache.errors import ConfigError
from hf_cache.lab.s3server import S3Server
from hf_cache.readers.doctor import check_fresh, max_age_seconds

# Runs the real entry point, then reports the logging it left: the root level and the handler's formatter.
_PROBE = (
    "import json, logging, sys; from hf_cache.cli import main; main(sys.argv[1:]);"
    "root = logging.getLogger(); h = next(h for h in root.handlers if getattr(h, '_hf_cache', False));"
    "print(json.dumps({'level': logging.getLevelName(root.level), 'format': type(h.formatter).__name__}),"
    " file=sys.stderr)"
)


def _logging_after(*args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k != "HFCACHE_LOG_FORMAT"}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    got: dict[str, str] = json.loads(result.stderr.strip().splitlines()[-1])
    return got


@pytest.mark.parametrize(
    ("args", "env", "level", "fmt"),
    [
        (["env"], None, "INFO", "Formatter"),
        (["-v", "env"], None, "DEBUG", "Formatter"),
        (["env", "-v"], None, "DEBUG", "Formatter"),
        (["env", "-q"], None, "WARNING", "Formatter"),
        (["-q", "env", "--json"], None, "WARNING", "Formatter"),
        (["--log-format", "json", "env"], None, "INFO", "JsonFormatter"),
        (["env", "--log-format", "json", "-v"], None, "DEBUG", "JsonFormatter"),
        (["-v", "env", "--log-format", "json"], None, "DEBUG", "JsonFormatter"),  # a later flag keeps the level
        (["env"], {"HFCACHE_LOG_FORMAT": "json"}, "INFO", "JsonFormatter"),
        # typed before the name, the flag beats the variable, which the command's own flag must not re-apply
        (["--log-format", "text", "env"], {"HFCACHE_LOG_FORMAT": "json"}, "INFO", "Formatter"),
        (["env", "--log-format", "text"], {"HFCACHE_LOG_FORMAT": "json"}, "INFO", "Formatter"),
    ],
)
def test_logging_flags_work_before_or_after_the_command_and_beat_the_variable(
    args: list[str], env: dict[str, str] | None, level: str, fmt: str
) -> None:
    assert _logging_after(*args, env=env) == {"level": level, "format": fmt}


def test_a_group_s_commands_take_the_logging_flags_too() -> None:
    """``node ls -q``: refused as an unknown option before the flags were added to a group's commands."""
    result = subprocess.run(
        [sys.executable, "-m", "hf_cache", "node", "ls", "-q", "--log-format", "json", "--tier-dir", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.startswith("hf-cache: error: /nonexistent is not a node tier")


# -- doctor --max-age ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("max_age", "hours", "typed", "seconds"),
    [
        ("36h", None, True, 36 * 3600),
        ("1.5d", None, True, 36 * 3600),
        ("90m", None, True, 5400),
        (settings.DOCTOR_MAX_AGE, None, False, 48 * 3600),
        (settings.DOCTOR_MAX_AGE, 2.5, False, 9000),  # the old float spelling still means hours
    ],
)
def test_max_age_is_a_duration_and_the_old_hours_flag_still_works(
    max_age: str, hours: float | None, typed: bool, seconds: float
) -> None:
    assert max_age_seconds(max_age, hours, typed) == seconds


@pytest.mark.parametrize(
    ("max_age", "hours", "typed", "message"),
    [
        ("36", None, True, "--max-age '36' has no unit"),
        ("a day", None, True, "--max-age 'a day' is not a duration"),
        ("0h", None, True, "--max-age '0h' must be above 0"),
        ("1d", 3.0, True, "give --max-age or --max-age-hours, not both"),
    ],
)
def test_a_bad_max_age_is_refused_with_what_to_write(
    max_age: str, hours: float | None, typed: bool, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        max_age_seconds(max_age, hours, typed)


def test_freshness_compares_the_status_age_with_max_age(tmp_path: Path) -> None:
    status = tmp_path / layout.status_key("")
    status.parent.mkdir(parents=True)
    status.write_text(json.dumps({"ended": "then", "repos": [{"repo": "org/m", "state": "ok"}]}))
    forty_hours_ago = time.time() - 40 * 3600
    os.utime(status, (forty_hours_ago, forty_hours_ago))
    stale = check_fresh(tmp_path, max_age_seconds("36h", None, True))
    assert not stale.ok and "ended 40.0 h ago (more than --max-age 36h)" in stale.detail, stale
    assert check_fresh(tmp_path, max_age_seconds("1.5d", None, True)).ok is False  # 36 h as well
    assert check_fresh(tmp_path, max_age_seconds("2d", None, True)).ok


def test_max_age_default_lives_in_settings_and_the_old_flag_is_hidden() -> None:
    from hf_cache.readers.command import doctor

    flags = {p.name: p for p in doctor.params if isinstance(p, click.Option)}
    assert flags["max_age"].default == settings.DOCTOR_MAX_AGE and not flags["max_age"].hidden
    assert flags["max_age_hours"].hidden and flags["max_age_hours"].default is None


def _freshness(mountpoint: Path, *flags: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "hf_cache", "doctor", "--mountpoint", str(mountpoint), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stdout.splitlines() if "] freshness: " in ln]
    assert len(lines) == 1, result.stdout + result.stderr
    return lines[0]


def test_doctor_max_age_through_a_real_mount(mounted, s3_server: S3Server, bucket: str) -> None:
    status = {"ended": "now", "repos": [{"repo": "org/m", "state": "ok"}]}
    s3_server.client().put_object(Bucket=bucket, Key=layout.status_key("p"), Body=json.dumps(status).encode())
    written = time.time()
    m = mounted(bucket=bucket, prefix="p")
    assert _freshness(m.mountpoint, "--max-age", "1h").startswith("[ok] freshness: ")
    time.sleep(max(0.0, written + 3 - time.time()))  # the status is now older than 2 s
    assert "(more than --max-age 2s)" in _freshness(m.mountpoint, "--max-age", "2s")
    assert _freshness(m.mountpoint, "--max-age-hours", "0.0005").startswith("[FAIL] freshness: ")  # 1.8 s
    assert _freshness(m.mountpoint, "--max-age-hours", "1").startswith("[ok] freshness: ")
    bad = subprocess.run(
        [sys.executable, "-m", "hf_cache", "doctor", "--mountpoint", str(m.mountpoint), "--max-age", "36"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stdout == "", bad.stdout  # refused before any check ran
    assert bad.stderr.splitlines() == [
        "hf-cache: error: --max-age '36' has no unit: write 36s or 36m (e.g. 500ms, 90s, 30m, 1.5h, 7d, 2w)"
    ]


# -- mount --rclone-arg and its variable ------------------------------------------------------------------------------
def test_rclone_args_variable_arrives_whole_and_is_split_with_shell_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Click splits a repeatable flag's variable at spaces; HFCACHE_RCLONE_ARGS must keep its shell quoting."""
    from hf_cache.mount.checks import split_rclone_args
    from hf_cache.mount.command import mount

    monkeypatch.setenv("HFCACHE_RCLONE_ARGS", "--user-agent 'hf cache' --vfs-read-ahead 1G")
    ctx = mount.make_context("mount", ["--bucket", "b"])
    assert ctx.params["rclone_extra"] == ("--user-agent 'hf cache' --vfs-read-ahead 1G",)
    words = split_rclone_args(ctx.params["rclone_extra"], None)
    assert words == ("--user-agent", "hf cache", "--vfs-read-ahead", "1G")
    ctx = mount.make_context("mount", ["--bucket", "b", "--rclone-arg", "--a 1", "--rclone-arg", "--b"])
    assert ctx.params["rclone_extra"] == ("--a 1", "--b")  # the flag wins over the variable, as before


@pytest.mark.parametrize("from_env", [True, False])
def test_unbalanced_quotes_are_one_line_naming_where_they_were_written(from_env: bool) -> None:
    value = "--user-agent 'unclosed"
    env = {**os.environ, "HFCACHE_RCLONE_ARGS": value} if from_env else os.environ
    args = ["mount", "--bucket", "b", *([] if from_env else ["--rclone-arg", value])]
    result = subprocess.run(
        [sys.executable, "-m", "hf_cache", *args], env=env, capture_output=True, text=True, timeout=60
    )
    where = "HFCACHE_RCLONE_ARGS" if from_env else "--rclone-arg"
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f'hf-cache: error: {where} "{value}": No closing quotation; quote it as a shell would'
    ]
