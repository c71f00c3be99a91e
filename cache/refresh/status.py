"""What a refresh run records in ``hf-cache/status.json``: one row per repo, and the run's outcome.

Every node reads this file (``mount/freshness.py`` exports it to Prometheus, ``doctor`` reports it), so its values
are enums shared by the writer and the readers: a value renamed on one side cannot silently become "not ok" on the
other. They are ``StrEnum`` so the JSON holds the same plain strings as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from hf_cache import __version__

if TYPE_CHECKING:
    from hf_cache.modelsfile import ModelEntry


class RepoState(StrEnum):
    """One repo's outcome in a run (``repos[].state``)."""

    PENDING = "pending"  # not finished yet; never written by a run that ends
    OK = "ok"
    FAILED = "failed"


class RunState(StrEnum):
    """A run's outcome (``state``, and ``ad_hoc[].state``): ok only when every repo of the run is."""

    OK = "ok"
    FAILED = "failed"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RepoResult:
    """What happened to one models.txt entry; becomes a row of status.json."""

    entry: ModelEntry
    sha: str | None = None
    state: RepoState = RepoState.PENDING
    error: str | None = None
    files: int = 0
    bytes_total: int = 0
    files_uploaded: int = 0
    bytes_uploaded: int = 0
    bytes_skipped: int = 0
    files_copied: int = 0
    bytes_copied: int = 0
    started: str = field(default_factory=now_iso)
    ended: str | None = None

    @property
    def ok(self) -> bool:
        return self.state is RepoState.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "repo": self.entry.repo_id,
            "type": self.entry.repo_type,
            "requested_revision": self.entry.requested_revision,
            "ref": self.entry.ref_name,
            "source": "local" if self.entry.source else "hub",
            "sha": self.sha,
            "state": self.state,
            "error": self.error,
            "files": self.files,
            "bytes": self.bytes_total,
            "files_uploaded": self.files_uploaded,
            "bytes_uploaded": self.bytes_uploaded,
            "bytes_skipped": self.bytes_skipped,
            "files_copied": self.files_copied,
            "bytes_copied": self.bytes_copied,
            "started": self.started,
            "ended": self.ended,
        }


def run_state(results: Iterable[RepoResult]) -> RunState:
    return RunState.OK if all(r.ok for r in results) else RunState.FAILED


AD_HOC_RUNS_KEPT = 20  # `refresh ORG/NAME` runs remembered in status.json, newest last


def scheduled_run(
    previous: Mapping[str, Any],
    results: Sequence[RepoResult],
    *,
    models_file: str,
    started: str,
    ended: str,
    seconds: float,
    delisted: dict[str, str],
    pruned: list[str],
    prune_refused: str | None,
) -> dict[str, Any]:
    """status.json after a models.txt run, from the one it replaces (``previous``: {} when absent or corrupt).

    ``last_success`` is the end of the last run whose repos all published, kept across failed runs: a node that
    starts after a failed run still knows how fresh the cache is (``mount/freshness.py`` exports it). The ad-hoc
    runs' record is carried over untouched.
    """
    last_success = ended if run_state(results) is RunState.OK else previous.get("last_success")
    return {
        "hf_cache_version": __version__,
        "models_file": models_file,
        "started": started,
        "ended": ended,
        "last_success": last_success if isinstance(last_success, str) else None,
        "seconds": round(seconds, 3),
        "state": run_state(results),
        "repos": [r.to_json() for r in results],
        "delisted": delisted,
        "pruned": pruned,
        "prune_refused": prune_refused,
        "ad_hoc": previous.get("ad_hoc", []),
    }


def with_ad_hoc_run(
    previous: Mapping[str, Any], results: Sequence[RepoResult], *, started: str, ended: str
) -> dict[str, Any]:
    """status.json after ``refresh ORG/NAME``: the run appended to ``ad_hoc`` (the last AD_HOC_RUNS_KEPT kept), and
    everything the scheduled run recorded left as it was (ad-hoc runs do not speak for models.txt)."""
    kept = previous.get("ad_hoc")
    runs = kept[-(AD_HOC_RUNS_KEPT - 1) :] if isinstance(kept, list) else []
    run = {"started": started, "ended": ended, "state": run_state(results), "repos": [r.to_json() for r in results]}
    return {**previous, "ad_hoc": [*runs, run]}
