"""Validation of a cluster's values.json and Terraform outputs, before anything is rendered.

A value that only fails on the node (a cache size rclone cannot read, a schedule the API server refuses) would
surface as a crash-looping DaemonSet or a rejected apply far from its cause; each check here names the file, the
key and what to write instead. The cache size goes through the mount's own parser, so render accepts exactly what
``hf-cache mount`` accepts.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from hf_cache import settings
from hf_cache.errors import ConfigError
from hf_cache.units import parse_size_or_share

# Docker/OCI reference: [host[:port]/]path[:tag][@digest]; lowercase path components as the registry requires.
_IMAGE = re.compile(
    r"^(?:(?P<host>[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::\d+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# The same rule as terraform/modules/cluster's `prefix` validation: no IAM wildcard (* ?) or policy variable ($).
_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9!_.'()-]+$")
_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")

# Kubernetes CronJob schedules (robfig/cron's standard parser): 5 fields or one of these macros.
_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTHS = {m: i + 1 for i, m in enumerate(_MONTH_NAMES)}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
# (name, lowest, highest, names allowed for values)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)


def _bad(where: str, key: str, value: Any, what: str) -> ConfigError:
    return ConfigError(f"{where}: {key} {value!r}: {what}")


def check_image(value: Any, where: str) -> str:
    """An image reference, used as written: ``myimage`` stays ``myimage`` (not a tag of the default image)."""
    if not isinstance(value, str) or not _IMAGE.match(value):
        raise _bad(where, "image", value, "not an image reference; write e.g. registry.example.com/hf-cache:0.1.0")
    return value


def check_cron(value: Any, where: str) -> str:
    """A schedule the API server accepts for a CronJob: 5 fields (minute hour day month weekday) or a macro."""
    hint = 'use 5 cron fields like "17 */6 * * *" (minute hour day-of-month month day-of-week) or @daily'
    if not isinstance(value, str):
        raise _bad(where, "refresh_schedule", value, hint)
    text = value.strip()
    if text.startswith("@"):
        if text not in _MACROS:
            raise _bad(where, "refresh_schedule", value, f"unknown macro; {hint}")
        return text
    fields = text.split()
    if len(fields) != 5 or "TZ=" in text:
        raise _bad(where, "refresh_schedule", value, hint)
    for field, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        for part in field.split(","):
            rng, _, step = part.partition("/")
            if step and not (step.isdigit() and int(step) > 0):
                raise _bad(where, "refresh_schedule", value, f"{name} step {step!r} is not a positive number")
            if rng in ("*", "?"):
                continue
            bounds = rng.split("-")
            if len(bounds) > 2 or not all(bounds):
                raise _bad(where, "refresh_schedule", value, f"{name} {part!r} is not N, N-M, */N or a list; {hint}")
            nums = []
            for b in bounds:
                n = names.get(b.upper()) if not b.isdigit() else int(b)
                if n is None or not low <= n <= high:
                    raise _bad(where, "refresh_schedule", value, f"{name} {b!r} is outside {low}-{high}")
                nums.append(n)
            if nums[0] > nums[-1]:
                raise _bad(where, "refresh_schedule", value, f"{name} range {rng!r} runs backwards")
    return text


def check_size(value: Any, where: str) -> str:
    """What ``hf-cache mount --cache-max-size`` accepts (cache/units.py, the one grammar): a size or a share in %."""
    if not isinstance(value, str):
        raise _bad(where, "cache_max_size", value, 'write a string like "75%" or "500G"')
    try:
        parse_size_or_share(value, "cache_max_size")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return value.strip()


def check_host_path(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or ".." in PurePosixPath(value).parts:
        raise _bad(where, key, value, f"write an absolute node path without .., e.g. {settings.CACHE_DIR}")
    if value.rstrip("/") in ("", "/proc", "/sys", "/dev", "/etc", "/var", "/var/lib"):
        raise _bad(
            where, key, value, f"a system folder, not a cache folder; use a dedicated one like {settings.CACHE_DIR}"
        )
    return str(PurePosixPath(value))


def check_node_selector(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(where, "node_selector", value, 'write an object of labels, e.g. {"nvidia.com/gpu.present": "true"}')
    for key, label in value.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not _DNS_SUBDOMAIN.match(prefix)) or not _LABEL_NAME.match(name):
            raise _bad(where, "node_selector key", key, "not a Kubernetes label name (e.g. nvidia.com/gpu.present)")
        if not isinstance(label, str) or (label and not _LABEL_NAME.match(label)):
            raise _bad(where, f"node_selector[{key}]", label, "label values are strings of at most 63 [A-Za-z0-9_.-]")
    return dict(value)


def check_namespace(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not _DNS_LABEL.match(value):
        raise _bad(where, key, value, "not a namespace name (lowercase letters, digits and -, at most 63)")
    return value


def check_terraform_outputs(tf: dict[str, str], where: str) -> dict[str, str]:
    """The outputs the overlay uses, checked so a hand-edited or truncated output file fails here."""
    if not _BUCKET.match(tf["bucket"]) or ".." in tf["bucket"]:
        raise _bad(where, "bucket", tf["bucket"], "not an S3 bucket name (3-63 lowercase letters, digits, . and -)")
    prefix = tf["prefix"].strip("/")
    if prefix and not all(_PREFIX_SEGMENT.match(s) and s not in (".", "..") for s in prefix.split("/")):
        raise _bad(where, "prefix", tf["prefix"], "S3 key segments of [A-Za-z0-9!_.'()-] joined by /, no wildcard")
    if not _REGION.match(tf["region"]):
        raise _bad(where, "region", tf["region"], "not an AWS region like us-east-1")
    for key in ("mount_role_arn", "refresh_role_arn"):
        if not _ROLE_ARN.match(tf[key]):
            raise _bad(where, key, tf[key], "not an IAM role ARN (arn:aws:iam::<12 digits>:role/<name>)")
    return {**tf, "prefix": prefix}
