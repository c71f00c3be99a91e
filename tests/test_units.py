"""One grammar for sizes and durations (cache/units.py): round trips, the spellings we promise, the bad inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hf_cache.errors import ConfigError
from hf_cache.units import (
    DURATION_UNITS,
    SIZE_UNITS,
    format_duration,
    format_size,
    parse_duration,
    parse_share,
    parse_size,
    parse_size_or_share,
)


@given(st.integers(min_value=0, max_value=2**62))
def test_a_formatted_size_parses_back_to_the_same_bytes(n: int) -> None:
    assert parse_size(format_size(n), "--x") == n


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(SIZE_UNITS)), st.sampled_from(["", "i", "iB"]))
def test_every_unit_spelling_is_binary(count: int, unit: str, suffix: str) -> None:
    text = f"{count}{unit}{suffix if unit != 'B' else ''}"
    assert parse_size(text, "--x") == count * SIZE_UNITS[unit]
    assert parse_size(text.lower(), "--x") == count * SIZE_UNITS[unit]


@given(st.integers(min_value=0, max_value=10**12))
def test_a_formatted_duration_parses_back_to_the_same_seconds(ms: int) -> None:
    assert parse_duration(format_duration(ms / 1000), "--x") == ms / 1000


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(DURATION_UNITS)))
def test_every_duration_unit(count: int, unit: str) -> None:
    assert parse_duration(f"{count}{unit}", "--x") == float(count * DURATION_UNITS[unit])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1.5h", 5400.0), ("1d", 86400.0), ("90s", 90.0), ("500ms", 0.5), ("2w", 14 * 86400.0), ("0s", 0.0)],
)
def test_durations_the_issue_names(text: str, seconds: float) -> None:
    assert parse_duration(text, "--x") == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("512M", 512 << 20), ("1.5GiB", 3 << 29), ("500G", 500 << 30), ("200Gi", 200 << 30), ("8m", 8 << 20)],
)
def test_sizes_the_issue_names(text: str, size: int) -> None:
    assert parse_size(text, "--x") == size


@pytest.mark.parametrize("text", ["", "h", "1.5", "-1s", "1x", "1 hour", "1h30m", "1e3s", "s1", "1.s", "nan", "inf"])
def test_bad_durations_name_the_flag_the_value_and_an_example(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text, "--prune-after")
    line = str(info.value)
    assert line.startswith(f"--prune-after {text!r}") and "1.5h" in line and "\n" not in line


@pytest.mark.parametrize("text", ["", "G", "1.5", "-1G", "1X", "1 gigabyte", "1e3M", "1.M", "75%"])
def test_bad_sizes_name_the_flag_the_value_and_an_example(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_size(text, "--chunk")
    line = str(info.value)
    assert line.startswith(f"--chunk {text!r}") and "512M" in line and "\n" not in line


def test_zero_needs_no_unit_other_bare_sizes_and_durations_do() -> None:
    """``--prefetch-fast-rate 0`` ("0 = always prefetch"), ``--read-ahead-near 0`` ("0 = always read ahead"): zero
    in any unit."""
    assert parse_size("0", "--x") == 0 and parse_size("0.0", "--x") == 0
    assert parse_duration("0", "--x") == 0 and parse_duration("0.0", "--x") == 0
    with pytest.raises(ConfigError, match=r"--x '1' has no unit: write 1G"):
        parse_size("1", "--x")
    with pytest.raises(ConfigError, match=r"--x '1' has no unit: write 1s"):
        parse_duration("1", "--x")


def test_a_bare_number_is_refused_with_both_readings() -> None:
    with pytest.raises(ConfigError, match=r"--freshness '30' has no unit: write 30s or 30m"):
        parse_duration("30", "--freshness")
    with pytest.raises(ConfigError, match=r"'75' has no unit: write 75% .* or 75G"):
        parse_size_or_share("75", "--cache-max-size")


def test_shares() -> None:
    assert parse_share("75%", "--x") == 0.75
    assert parse_share("100 %", "--x") == 1.0
    assert parse_share("500G", "--x") is None
    assert parse_size_or_share("500G", "--x") == 500 << 30
    for bad in ("0%", "101%"):
        with pytest.raises(ConfigError, match=rf"--x '{bad}': a share must be above 0% and at most 100%"):
            parse_share(bad, "--x")
    with pytest.raises(ConfigError, match=r"--cache-max-size 'lots': use a size like 512M.*or a share like 75%"):
        parse_size_or_share("lots", "--cache-max-size")


def test_the_cli_refuses_a_bad_duration_in_one_line(tmp_path: Path) -> None:
    """Before any S3 or Hub call: one line naming the flag, the value and what to write, exit 2, no traceback."""
    models = tmp_path / "models.txt"
    models.write_text("org/tiny\n")
    args = ["refresh", "--models", str(models), "--bucket", "b", "--prune-after", "7"]
    result = subprocess.run([sys.executable, "-m", "hf_cache", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "hf-cache: error: --prune-after '7' has no unit: write 7s or 7m (e.g. 500ms, 90s, 30m, 1.5h, 7d, 2w)"
    ]
