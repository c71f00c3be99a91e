"""Reading a Prometheus /metrics page, with prometheus_client's own parser (one reader for demo, tests, benchmarks).

The mount's metrics carry no labels, so a sample's name (``hfcache_s3_read_bytes_total``, ``..._created``) is
enough to tell them apart.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[str, float]:
    """Every sample of an exposition page by its sample name (counters appear as ``<name>_total``)."""
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(base_url: str, timeout: float = 5.0) -> dict[str, float]:
    """``samples`` of ``<base_url>/metrics``."""
    with urllib.request.urlopen(base_url.rstrip("/") + "/metrics", timeout=timeout) as resp:
        return samples(resp.read().decode())
