"""Flags defined once (cache/options.py) behave the same wherever they are typed: the logging flags before or after
the command's name, a typed flag over its variable, ``doctor --max-age`` in the duration grammar of every other
flag. The CLI runs for real in a subprocess; what it set up is read back from that process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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
