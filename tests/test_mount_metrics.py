"""Every node's /metrics says how fresh the published cache is, under the names the alert rules use."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from hf_cache.lab.s3server import S3Server
from tests.test_mount import ROOT, SHA1, publish, wait_for

NAMES = {
    "hfcache_refresh_last_success_timestamp_seconds": "gauge",
    "hfcache_refresh_last_run_timestamp_seconds": "gauge",
    "hfcache_refresh_failed_repos": "gauge",
    "hfcache_s3_errors": "counter",
    "hfcache_read_probe_seconds": "gauge",
    "hfcache_mount_up": "gauge",
    "hfcache_rclone_restarts": "counter",
    "hfcache_cache_bytes": "gauge",
    "hfcache_cache_max_bytes": "gauge",
    "hfcache_s3_read_bytes": "counter",
}


def _families(m) -> dict[str, tuple[str, dict[str, float]]]:
    return {
        f.name: (f.type, {s.name: s.value for s in f.samples})
        for f in text_string_to_metric_families(m.get("/metrics")[1])
    }


def _status(ended: str, states: list[str]) -> bytes:
    repos = [{"repo": f"org/r{i}", "state": s} for i, s in enumerate(states)]
    return json.dumps({"ended": ended, "state": "ok" if set(states) <= {"ok"} else "failed", "repos": repos}).encode()


def test_freshness_of_the_published_cache_reaches_every_node(mounted, s3_server: S3Server, bucket: str) -> None:
    client = s3_server.client()
    publish(client, bucket, {f"{ROOT}/refs/main": SHA1.encode()})
    client.put_object(
        Bucket=bucket, Key="p/hf-cache/status.json", Body=_status("2026-11-27T08:00:00+00:00", ["ok", "failed"])
    )
    m = mounted(bucket=bucket, prefix="p", extra_args=("--freshness", "1s"))
    wait_for(lambda: _families(m)["hfcache_refresh_last_run_timestamp_seconds"][1], timeout=10)
    wait_for(lambda: _families(m)["hfcache_refresh_failed_repos"][1]["hfcache_refresh_failed_repos"] == 1, 10)
    fams = _families(m)
    for name, kind in NAMES.items():
        assert fams[name][0] == kind, name
    assert fams["hfcache_refresh_last_run_timestamp_seconds"][1] == {
        "hfcache_refresh_last_run_timestamp_seconds": 1795766400.0
    }
    # the last run failed a repo and this node saw no success before: no success time to report
    assert (
        fams["hfcache_refresh_last_success_timestamp_seconds"][1]["hfcache_refresh_last_success_timestamp_seconds"] == 0
    )
    wait_for(lambda: _families(m)["hfcache_read_probe_seconds"][1]["hfcache_read_probe_seconds"] > 0, timeout=10)

    client.put_object(Bucket=bucket, Key="p/hf-cache/status.json", Body=_status("2026-11-27T09:00:00Z", ["ok", "ok"]))
    success = "hfcache_refresh_last_success_timestamp_seconds"
    wait_for(lambda: _families(m)[success][1][success] == 1795770000.0, timeout=10)
    fams = _families(m)
    assert fams["hfcache_refresh_failed_repos"][1]["hfcache_refresh_failed_repos"] == 0
    assert fams["hfcache_refresh_last_run_timestamp_seconds"][1]["hfcache_refresh_last_run_timestamp_seconds"] == (
        1795770000.0
    )
