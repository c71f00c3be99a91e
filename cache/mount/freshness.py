"""What a node tells Prometheus about the published cache's freshness, from refresh's ``status.json``.

Alert rules (the ``podmonitor`` component) key on these numbers, so every node answers "am I serving what
models.txt says, and since when?" from what it can read itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from hf_cache.refresh.status import RepoState, RunState


@dataclass(frozen=True)
class Freshness:
    last_run: float | None  # end of the last refresh run (unix seconds)
    last_success: float | None  # end of the last run whose repos all succeeded, when known
    failed_repos: int


def _ts(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_status(raw: bytes | str, previous_success: float | None = None) -> Freshness:
    """``previous_success`` carries the last success this node saw across runs that failed, since status.json
    holds the last run only (unless refresh writes ``last_success``, which wins)."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("status.json is not an object")
    ended = _ts(data.get("ended"))
    repos = data.get("repos") or []
    failed = sum(1 for r in repos if isinstance(r, dict) and r.get("state") != RepoState.OK)
    ok = data.get("state", RunState.OK if failed == 0 else RunState.FAILED) == RunState.OK and failed == 0
    success = _ts(data.get("last_success"))
    if success is None:
        success = ended if ok else previous_success
    elif previous_success is not None:
        success = max(success, previous_success)
    return Freshness(last_run=ended, last_success=success, failed_repos=failed)
