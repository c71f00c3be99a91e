"""The lab stays out of the product's way, and reading /metrics is one parser; probes change no metric.

Probes (/readyz every few seconds from the kubelet, /healthz) must only read what the supervisor's loop decided: a
probe that changes a metric makes the metrics depend on how often Kubernetes probes, and a probe that does work on
the mount can hang on it.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from hf_cache.lab.metrics import samples, scrape
from hf_cache.lab.net import free_port
from hf_cache.mount.config import MountConfig
from hf_cache.mount.health import start_health_server
from hf_cache.mount.supervisor import Supervisor

PROBES = 50


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_probes_change_no_metric(tmp_path: Path) -> None:
    port = free_port()
    cfg = MountConfig(
        bucket="probe-bucket",
        mountpoint=tmp_path / "mnt",  # not mounted: a probe that looked at the mount would see "gone"
        cache_dir=tmp_path / "cache",
        health_addr="127.0.0.1",
        health_port=port,
        rc_port=free_port(),  # nothing listens: /metrics keeps the values it has
    )
    sv = Supervisor(cfg)
    server = start_health_server(cfg.health_addr, port, sv.ready, sv.alive, sv.metrics, sv.refresh_metrics)
    base = f"http://127.0.0.1:{port}"
    try:
        for verdict, code in ((True, 200), (False, 503)):
            sv._set_ready(verdict)  # what the loop does after its own probe of the mount
            before = scrape(base)
            assert before["hfcache_mount_up"] == (1.0 if verdict else 0.0)
            for _ in range(PROBES):
                assert _status(base + "/readyz") == code
                assert _status(base + "/healthz") == 200
            assert scrape(base) == before, f"{PROBES} /readyz and /healthz probes changed a metric"
    finally:
        server.shutdown()
        server.server_close()


def test_samples_reads_counters_gauges_and_labels_with_prometheus_client() -> None:
    text = (
        "# HELP hfcache_s3_read_bytes_total Bytes read\n# TYPE hfcache_s3_read_bytes_total counter\n"
        "hfcache_s3_read_bytes_total 1.5e+06\n"
        "# HELP hfcache_mount_up up\n# TYPE hfcache_mount_up gauge\nhfcache_mount_up 1.0\n"
    )
    assert samples(text) == {"hfcache_s3_read_bytes_total": 1.5e6, "hfcache_mount_up": 1.0}


def _imported_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_lab_imports_no_heavy_test_dependency() -> None:
    mods = _imported_after(
        "import hf_cache.lab, hf_cache.lab.s3server, hf_cache.lab.s3link, hf_cache.lab.hubserver, "
        "hf_cache.lab.faultproxy, hf_cache.lab.mounting, hf_cache.lab.metrics, hf_cache.lab.net, "
        "hf_cache.demo.tinymodel"
    )
    assert not {"moto", "transformers", "torch"} & mods


def test_cli_help_loads_no_lab_server() -> None:
    mods = _imported_after(
        "import sys; sys.argv = ['hf-cache', '--help']\nfrom hf_cache.cli import cli\n"
        "try:\n    cli.main(standalone_mode=False)\nexcept SystemExit:\n    pass"
    )
    assert not {m for m in mods if m.startswith(("hf_cache.lab", "moto", "transformers"))}
