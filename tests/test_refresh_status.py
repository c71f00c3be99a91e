"""status.json remembers the last successful run, so a node that starts after a failed run knows how fresh it is.

Each node exports ``hfcache_refresh_last_success_timestamp_seconds`` from status.json (cache/mount/freshness.py).
status.json describes the last run; without ``last_success`` a node that (re)started after a failed run could not
tell when the cache was last fully published, and the "refresh stale" alert would see 0.
"""

from __future__ import annotations

import json
from pathlib import Path

from hf_cache.lab.s3server import S3Server
from hf_cache.mount.freshness import parse_status
from tests.refresh_helpers import run_refresh, status


def test_last_success_survives_a_failed_run_and_reaches_a_restarted_node(
    s3_server: S3Server, bucket: str, tmp_path: Path, hub_server
) -> None:
    env = {**s3_server.env(), "HF_ENDPOINT": hub_server.endpoint, "HF_HUB_ETAG_TIMEOUT": "5"}
    client = s3_server.client()
    folder = tmp_path / "keep"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"name": "keep"}))
    models = tmp_path / "models.txt"
    models.write_text(f"team/keep source=file://{folder}\n")

    assert run_refresh(models, bucket, env).returncode == 0
    first = status(client, bucket)
    assert first["state"] == "ok" and first["last_success"] == first["ended"]

    models.write_text(f"team/keep source=file://{folder}\norg/not-on-the-hub\n")
    assert run_refresh(models, bucket, env).returncode == 1
    second = status(client, bucket)
    assert second["state"] == "failed" and second["ended"] >= first["ended"]
    assert second["last_success"] == first["ended"]

    raw = client.get_object(Bucket=bucket, Key="p/hf-cache/status.json")["Body"].read()
    fresh = parse_status(raw, previous_success=None)  # a node that just started: it has seen no earlier run
    assert fresh.failed_repos == 1
    assert fresh.last_success == parse_status(json.dumps({"ended": first["ended"]})).last_success
