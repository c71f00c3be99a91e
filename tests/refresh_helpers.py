"""Helpers shared by the refresh tests: run the real CLI in a subprocess and read back what it published."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hf_cache import layout


def run_refresh(
    models: Path, bucket: str, env: dict[str, str], *extra: str, prefix: str = "p", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    verbose = ["--verbose"] if "--verbose" in extra else []
    extra = tuple(a for a in extra if a != "--verbose")
    cmd = [
        sys.executable,
        "-m",
        "cache",
        *verbose,
        "refresh",
        "--models",
        str(models),
        "--bucket",
        bucket,
        "--prefix",
        prefix,
        "--workers",
        "2",
        *extra,
    ]
    return subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hf_cache", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def objects(client: Any, bucket: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj
    return out


def read(client: Any, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def status(client: Any, bucket: str, prefix: str = "p") -> dict[str, Any]:
    return json.loads(read(client, bucket, layout.status_key(prefix)))


def check_refs_complete(client: Any, bucket: str, prefix: str = "p") -> int:
    """Every ref under the prefix points at a snapshot whose manifest exists and whose files are all there intact.

    Returns how many refs were checked.
    """
    import hashlib

    objs = objects(client, bucket)
    hub = layout.join(prefix, layout.HUB_DIR) + "/"
    checked = 0
    for key in objs:
        if not key.startswith(hub) or "/refs/" not in key:
            continue
        folder = key[len(hub) :].split("/")[0]
        sha = read(client, bucket, key).decode()
        assert layout.SHA_RE.match(sha), f"{key} holds {sha!r}, not a bare sha"
        manifest_key = layout.join(prefix, layout.META_DIR, "manifests", folder, f"{sha}.json")
        assert manifest_key in objs, f"{key} -> {sha} has no manifest"
        manifest = json.loads(read(client, bucket, manifest_key))
        assert manifest["complete"]
        assert layout.join(hub, folder, "trees", f"{sha}.json") in objs
        for f in manifest["files"]:
            fkey = layout.join(hub, folder, "snapshots", sha, f["path"])
            assert fkey in objs, f"{key} -> {sha} misses {f['path']}"
            assert hashlib.sha256(read(client, bucket, fkey)).hexdigest() == f["sha256"]
        checked += 1
    return checked
