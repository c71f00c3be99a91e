"""The PrometheusRule and Grafana dashboard of `daemonset/podmonitor`: valid for promtool, each alert fires on its
fault and stays quiet without it (`promtool test rules`), and every metric they use is one the mount exports."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from hf_cache.mount.metrics import MountMetrics
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
MONITOR = ROOT / "daemonset" / "podmonitor"
# The node side's metric names (issue 10 item 13): the rules and the dashboard must use exactly these.
METRICS = {
    "hfcache_mount_up",
    "hfcache_rclone_restarts_total",
    "hfcache_cache_bytes",
    "hfcache_cache_max_bytes",
    "hfcache_s3_read_bytes_total",
    "hfcache_s3_errors_total",
    "hfcache_refresh_last_success_timestamp_seconds",
    "hfcache_refresh_last_run_timestamp_seconds",
    "hfcache_refresh_failed_repos",
    "hfcache_read_probe_seconds",
}
H = 3600


def rule_spec() -> dict:
    (doc,) = [d for d in yaml.safe_load_all((MONITOR / "prometheusrule.yaml").read_text()) if d]
    assert doc["kind"] == "PrometheusRule"
    return doc["spec"]


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_spec()))
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    require_tool("promtool")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_check_rules(rules_file: Path) -> None:
    result = promtool("check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"] for g in rule_spec()["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "HfCacheMountDown",
        "HfCacheRcloneRestarting",
        "HfCacheCacheAboveCap",
        "HfCacheRefreshStale",
        "HfCacheRefreshFailing",
    } <= alerts


def alert(name: str, at: str, *labels: dict) -> dict:
    return {
        "eval_time": at,
        "alertname": name,
        "exp_alerts": [
            {"exp_labels": {"severity": "critical" if name == "HfCacheMountDown" else "warning", **lab}}
            for lab in labels
        ],
    }


# Each case: input series, then per alert when it must be quiet and when it must fire (and for whom only).
UNIT_TESTS = [
    {  # node a's mount goes down at 1m and stays down; b stays up
        "interval": "1m",
        "input_series": [
            {"series": 'hfcache_mount_up{job="hf-cache", node="a"}', "values": "1 0x20"},
            {"series": 'hfcache_mount_up{job="hf-cache", node="b"}', "values": "1x20"},
        ],
        "alert_rule_test": [
            alert("HfCacheMountDown", "4m"),  # down 3 minutes: still pending
            alert("HfCacheMountDown", "10m", {"job": "hf-cache", "node": "a"}),
        ],
    },
    {  # a restarts 6 times in 6 minutes (a loop), b once (a healed kill -9)
        "interval": "1m",
        "input_series": [
            {"series": 'hfcache_rclone_restarts_total{job="hf-cache", node="a"}', "values": "0x5 1 2 3 4 5 6 6x10"},
            {"series": 'hfcache_rclone_restarts_total{job="hf-cache", node="b"}', "values": "0x5 1x16"},
        ],
        "alert_rule_test": [
            alert("HfCacheRcloneRestarting", "5m"),
            alert("HfCacheRcloneRestarting", "12m", {"job": "hf-cache", "node": "a"}),
        ],
    },
    {  # a holds 120% of its cap for 20 minutes, b 105%, c has no cap reported
        "interval": "1m",
        "input_series": [
            {"series": 'hfcache_cache_bytes{job="hf-cache", node="a"}', "values": "120x30"},
            {"series": 'hfcache_cache_max_bytes{job="hf-cache", node="a"}', "values": "100x30"},
            {"series": 'hfcache_cache_bytes{job="hf-cache", node="b"}', "values": "105x30"},
            {"series": 'hfcache_cache_max_bytes{job="hf-cache", node="b"}', "values": "100x30"},
            {"series": 'hfcache_cache_bytes{job="hf-cache", node="c"}', "values": "120x30"},
            {"series": 'hfcache_cache_max_bytes{job="hf-cache", node="c"}', "values": "0x30"},
        ],
        "alert_rule_test": [
            alert("HfCacheCacheAboveCap", "10m"),  # a brief overshoot (rclone evicts at its next poll) is normal
            alert("HfCacheCacheAboveCap", "20m", {"job": "hf-cache", "node": "a"}),
        ],
    },
    {  # S3 errors climbing on a; slow probe reads on b
        "interval": "1m",
        "input_series": [
            {"series": 'hfcache_s3_errors_total{job="hf-cache", node="a"}', "values": "0+5x20"},
            {"series": 'hfcache_s3_errors_total{job="hf-cache", node="b"}', "values": "0x20"},
            {"series": 'hfcache_read_probe_seconds{job="hf-cache", node="a"}', "values": "0.05x20"},
            {"series": 'hfcache_read_probe_seconds{job="hf-cache", node="b"}', "values": "30x20"},
        ],
        "alert_rule_test": [
            alert("HfCacheS3Errors", "12m", {"job": "hf-cache", "node": "a"}),
            alert("HfCacheReadSlow", "5m"),
            alert("HfCacheReadSlow", "15m", {"job": "hf-cache", "node": "b"}),
        ],
    },
    {  # the last success was at 1 h (epoch seconds 3600), seen by two nodes; nothing since
        "interval": "1m",
        "input_series": [
            {
                "series": f'hfcache_refresh_last_success_timestamp_seconds{{job="hf-cache", node="{n}"}}',
                "values": f"{H}x1000",
            }
            for n in "ab"
        ],
        "alert_rule_test": [
            alert("HfCacheRefreshStale", "13h"),  # 12 h old: a run or two late is not stale yet
            alert("HfCacheRefreshStale", "15h", {"job": "hf-cache"}),  # one alert for the cluster, not per node
        ],
        "promql_expr_test": [
            {
                "expr": "hfcache:refresh_last_success_age_seconds",
                "eval_time": "10h",
                "exp_samples": [{"labels": 'hfcache:refresh_last_success_age_seconds{job="hf-cache"}', "value": 9 * H}],
            }
        ],
    },
    {  # node a: all good; b: mount down; c: last run had a failed repo; d: last run failed as a whole
        "interval": "1m",
        "input_series": [
            *[
                {"series": f'hfcache_mount_up{{job="hf-cache", node="{n}"}}', "values": v}
                for n, v in (("a", "1x5"), ("b", "0x5"), ("c", "1x5"), ("d", "1x5"))
            ],
            *[
                {"series": f'hfcache_refresh_failed_repos{{job="hf-cache", node="{n}"}}', "values": v}
                for n, v in (("a", "0x5"), ("b", "0x5"), ("c", "1x5"), ("d", "0x5"))
            ],
            *[
                {"series": f'hfcache_refresh_last_run_timestamp_seconds{{job="hf-cache", node="{n}"}}', "values": v}
                for n, v in (("a", "100x5"), ("b", "100x5"), ("c", "100x5"), ("d", "200x5"))
            ],
            *[
                {
                    "series": f'hfcache_refresh_last_success_timestamp_seconds{{job="hf-cache", node="{n}"}}',
                    "values": "100x5",
                }
                for n in "abcd"
            ],
        ],
        "promql_expr_test": [
            {
                "expr": "hfcache:node_serving_published",
                "eval_time": "3m",
                "exp_samples": [
                    {"labels": f'hfcache:node_serving_published{{job="hf-cache", node="{n}"}}', "value": v}
                    for n, v in (("a", 1), ("b", 0), ("c", 0), ("d", 0))
                ],
            }
        ],
    },
    {  # no successful refresh ever (0); promtool's clock starts at 0, a real one is decades past 13 h
        "interval": "1m",
        "input_series": [
            {"series": 'hfcache_refresh_last_success_timestamp_seconds{job="hf-cache", node="a"}', "values": "0x900"},
        ],
        "alert_rule_test": [alert("HfCacheRefreshStale", "14h", {"job": "hf-cache"})],
    },
    {  # run 1 ended at 1h, all ok; run 2 ended at 2h with 2 failed repos
        "interval": "1m",
        "input_series": [
            {"series": 'hfcache_refresh_failed_repos{job="hf-cache", node="a"}', "values": "0x120 2x60"},
            {
                "series": 'hfcache_refresh_last_run_timestamp_seconds{job="hf-cache", node="a"}',
                "values": f"{H}x120 {2 * H}x60",
            },
            {
                "series": 'hfcache_refresh_last_success_timestamp_seconds{job="hf-cache", node="a"}',
                "values": f"{H}x180",
            },
        ],
        "alert_rule_test": [
            alert("HfCacheRefreshFailing", "110m"),  # all ok so far
            alert("HfCacheRefreshFailing", "150m", {"job": "hf-cache"}),
        ],
    },
    {  # a run that failed as a whole (ended after the last success) with no repo counted as failed
        "interval": "1m",
        "input_series": [
            {"series": 'hfcache_refresh_failed_repos{job="hf-cache", node="a"}', "values": "0x60"},
            {"series": 'hfcache_refresh_last_run_timestamp_seconds{job="hf-cache", node="a"}', "values": f"{2 * H}x60"},
            {"series": 'hfcache_refresh_last_success_timestamp_seconds{job="hf-cache", node="a"}', "values": f"{H}x60"},
        ],
        "alert_rule_test": [alert("HfCacheRefreshFailing", "30m", {"job": "hf-cache"})],
    },
]


def test_promtool_unit_tests_each_alert_fires_on_its_fault_only(tmp_path: Path) -> None:
    """When each alert fires. Annotations are dropped from this copy (promtool would compare their text too);
    `promtool check rules` above parses their templates."""
    spec = rule_spec()
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(spec))
    tests = rules_file.parent / "hf-cache.test.yaml"
    tests.write_text(
        yaml.safe_dump({"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": UNIT_TESTS})
    )
    result = promtool("test", "rules", tests.name, cwd=rules_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {t["alertname"] for case in UNIT_TESTS for t in case.get("alert_rule_test", [])}
    alerts = {r["alert"] for g in rule_spec()["groups"] for r in g["rules"] if "alert" in r}
    assert tested == alerts  # no alert goes untested


def exprs_of_dashboard() -> list[str]:
    dash = json.loads((MONITOR / "grafana-dashboard.json").read_text())
    assert dash["uid"] == "hf-cache" and dash["panels"]
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool has no offline query parser: each panel query becomes a recording rule for `check rules`."""
    rules = [{"record": f"hfcache:dashboard_{i}", "expr": e} for i, e in enumerate(exprs_of_dashboard())]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bhfcache_[a-z0-9_]+\b", expr))


def test_rules_and_dashboard_use_exactly_the_metrics_the_mount_exports() -> None:
    exported = {
        line.split()[2]
        for line in generate_latest(MountMetrics(cache_max_bytes=1).registry).decode().splitlines()
        if line.startswith("# TYPE")
    }
    exported |= {f"{name}_total" for name in exported}  # counters are exposed with _total
    rule_exprs = [r["expr"] for g in rule_spec()["groups"] for r in g["rules"]]
    used = set().union(*map(metric_names, rule_exprs + exprs_of_dashboard()))
    assert used <= METRICS, used - METRICS
    assert exported >= METRICS, METRICS - exported
    assert set().union(*map(metric_names, exprs_of_dashboard())) == METRICS  # the dashboard shows each one


def test_component_ships_rule_dashboard_and_node_label(tmp_path: Path) -> None:
    require_tool("kubectl")
    rel = os.path.relpath(ROOT / "daemonset", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(f"resources: [{rel}]\ncomponents: [{rel}/podmonitor]\n")
    out = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    assert docs[("PrometheusRule", "hf-cache")]["spec"] == rule_spec()
    dashboard = docs[("ConfigMap", "hf-cache-grafana-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["hf-cache.json"]) == json.loads(
        (MONITOR / "grafana-dashboard.json").read_text()
    )
    (endpoint,) = docs[("PodMonitor", "hf-cache-mount")]["spec"]["podMetricsEndpoints"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"} in endpoint["relabelings"]
