"""Sizes and durations as people write them: one grammar for every flag, env var and values.json key.

Three hand-written parsers used to disagree (``--prune-after 1.5h`` and ``--freshness 1d`` were refused while
other flags took them). rclone's own option types are the model: binary size units (``500G`` is 500 GiB, as rclone
reads ``--vfs-cache-max-size``), and one duration syntax with a unit on every number.

A bare number is refused everywhere: ``75`` was meant as 75% (or 75 s, or 75 min) more often than as 75 bytes.
Exact arithmetic (``Fraction``) so that ``1.5GiB`` is exactly 1.5 x 2^30 bytes and a formatted value parses back.
"""

from __future__ import annotations

import re
from fractions import Fraction

from hf_cache.errors import ConfigError

KiB, MiB, GiB = 1024, 1024**2, 1024**3  # the binary units code uses for its own constants (rclone counts in them too)
SIZE_UNITS: dict[str, int] = {"B": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1024**4, "P": 1024**5}
DURATION_UNITS: dict[str, Fraction] = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
    "w": Fraction(7 * 86400),
}
SIZE_EXAMPLE = "512M, 1.5GiB, 500G, 1T"
DURATION_EXAMPLE = "500ms, 90s, 30m, 1.5h, 7d, 2w"

_NUMBER = r"(\d+(?:\.\d+)?)"
# 500G, 200Gi, 1.5GiB, 8m, 100B, 4 KiB (case-insensitive, like rclone's SizeSuffix)
_SIZE = re.compile(rf"^{_NUMBER}\s*(?:([KMGTP])(?:iB|i|B)?|(B))$", re.IGNORECASE)
_DURATION = re.compile(rf"^{_NUMBER}\s*(ms|s|m|h|d|w)$")
_BARE = re.compile(rf"^{_NUMBER}$")
_SHARE = re.compile(rf"^{_NUMBER}\s*%$")


def parse_size(text: str, flag: str) -> int:
    """Bytes in ``text`` (binary units); ``flag`` names where it came from in the one-line error."""
    value = text.strip()
    if m := _SIZE.match(value):
        unit = (m.group(2) or m.group(3)).upper()
        return int(Fraction(m.group(1)) * SIZE_UNITS[unit])
    if _BARE.match(value):
        if Fraction(value) == 0:  # zero is zero in any unit ("0 = off" flags)
            return 0
        raise ConfigError(f"{flag} {text!r} has no unit: write {value}G for a size (e.g. {SIZE_EXAMPLE})")
    raise ConfigError(f"{flag} {text!r} is not a size: write a number and a unit, e.g. {SIZE_EXAMPLE}")


def parse_share(text: str, flag: str) -> float | None:
    """A share like ``75%`` as a fraction of 1, or None when ``text`` is not a share (then it may be a size)."""
    m = _SHARE.match(text.strip())
    if m is None:
        return None
    share = Fraction(m.group(1)) / 100
    if not 0 < share <= 1:
        raise ConfigError(f"{flag} {text!r}: a share must be above 0% and at most 100%, e.g. 75%")
    return float(share)


def parse_size_or_share(text: str, flag: str) -> int | float:
    """``500G`` (bytes, an int) or ``75%`` (a float share of some total the caller knows: a disk, say)."""
    share = parse_share(text, flag)
    if share is not None:
        return share
    value = text.strip()
    if _BARE.match(value):
        raise ConfigError(
            f"{flag} {text!r} has no unit: write {value}% for a share of the cache disk, or {value}G for a size"
        )
    try:
        return parse_size(value, flag)
    except ConfigError:
        raise ConfigError(f"{flag} {text!r}: use a size like {SIZE_EXAMPLE}, or a share like 75%") from None


def parse_duration(text: str, flag: str) -> float:
    """Seconds in ``text``: a number and one unit (ms, s, m, h, d, w); fractions allowed (``1.5h``)."""
    value = text.strip()
    if m := _DURATION.match(value):
        return float(Fraction(m.group(1)) * DURATION_UNITS[m.group(2)])
    if _BARE.match(value):
        if Fraction(value) == 0:  # zero is zero in any unit ("0 = off" flags)
            return 0.0
        raise ConfigError(f"{flag} {text!r} has no unit: write {value}s or {value}m (e.g. {DURATION_EXAMPLE})")
    raise ConfigError(f"{flag} {text!r} is not a duration: write a number and a unit, e.g. {DURATION_EXAMPLE}")


def format_size(n: int) -> str:
    """The shortest exact spelling of ``n`` bytes that :func:`parse_size` reads back (``1536M``, ``3G``, ``7B``)."""
    for unit in ("P", "T", "G", "M", "K"):
        if n and n % SIZE_UNITS[unit] == 0:
            return f"{n // SIZE_UNITS[unit]}{unit}"
    return f"{n}B"


def format_duration(seconds: float | Fraction) -> str:
    """An exact spelling of ``seconds`` that :func:`parse_duration` reads back (largest unit that divides it)."""
    exact = Fraction(seconds)
    for unit in ("w", "d", "h", "m", "s", "ms"):
        count = exact / DURATION_UNITS[unit]
        if count.denominator == 1:
            return f"{count.numerator}{unit}"
    return f"{float(exact)}s"
