"""``hf-cache doctor``: check, one line each, everything a job pod needs to read models from the mount.

Each failed check says the cause and the fix in one sentence, so the person reading a pod's log knows what to do.
Every check that touches the mount is bounded (a hung mount or an unreachable S3 is a failed check, not a hang),
and no OS error escapes as a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_cache import layout, treelisting
from hf_cache.errors import ConfigError
from hf_cache.mount import fusemount
from hf_cache.mount.bounded import BoundedWorker, Outcome
from hf_cache.progress import plural
from hf_cache.readers.envvars import reader_env
from hf_cache.readers.warm import resolve_snapshot
from hf_cache.refresh.status import RepoState
from hf_cache.reponame import format_repo
from hf_cache.units import format_duration, parse_duration


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"[{'ok' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


def check_env(mountpoint: str, env: dict[str, str]) -> Check:
    wanted = reader_env(mountpoint)
    wrong = [k for k in ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE") if env.get(k) != wanted[k]]
    if wrong:
        have = ", ".join(f"{k}={env.get(k, '(unset)')}" for k in wrong)
        return Check("environment", False, f"{have}; set them as `hf-cache env --mountpoint {mountpoint}` prints")
    return Check("environment", True, f"HF_HOME={wanted['HF_HOME']}, offline")


PROBE_TIMEOUT = 10.0  # seconds any one check may wait on the mount
_worker: BoundedWorker | None = None


def _on_mount(fn: Callable[[], Any], timeout: float = PROBE_TIMEOUT) -> Outcome:
    """Every call that touches the mount, bounded: a hung mount makes each check fail fast instead of hanging
    doctor (one worker thread: once a call hangs, later checks do not queue behind it)."""
    global _worker
    if _worker is None:
        _worker = BoundedWorker("doctor")
    return _worker.run(fn, timeout)


def _no_answer(mountpoint: Path, outcome: Outcome) -> str:
    if outcome.timed_out:
        return (
            f"{mountpoint} did not answer within {PROBE_TIMEOUT:.0f}s: the mount is hung or S3 is unreachable; the "
            "DaemonSet replaces a hung mount - if it persists, check `kubectl -n hf-cache logs ds/hf-cache-mount`"
        )
    return f"{mountpoint}: {outcome.error}"


def check_mount(mountpoint: Path) -> list[Check]:
    fstype = fusemount.mount_fstype(mountpoint)  # reads /proc only: never blocks on the mount
    if fstype is None:
        exists = _on_mount(mountpoint.is_dir)
        if not (exists.ok and exists.value):
            return [
                Check(
                    "mount",
                    False,
                    f"{mountpoint} does not exist; mount the node path into the pod "
                    "(label the workload hf-cache.io/mount=true) and check the hf-cache DaemonSet runs on this node",
                )
            ]
    if fstype is None or not fstype.startswith("fuse"):
        return [
            Check(
                "mount",
                False,
                f"{mountpoint} is a plain folder, not the hf-cache mount; mount it with "
                "mountPropagation: HostToContainer so the DaemonSet's FUSE mount shows through",
            )
        ]
    st = _on_mount(lambda: (os.statvfs(mountpoint), os.access(mountpoint, os.W_OK)))
    if not st.ok:
        if isinstance(st.error, OSError) and st.error.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO):
            return [
                Check(
                    "mount",
                    False,
                    f"{mountpoint} is stale (Transport endpoint is not connected); the DaemonSet "
                    "repairs it within 30 s - if it persists, check `kubectl -n hf-cache logs ds/hf-cache-mount`",
                )
            ]
        return [Check("mount", False, _no_answer(mountpoint, st))]
    checks = [Check("mount", True, f"{mountpoint} is a live FUSE mount")]
    stat, writable = st.value
    read_only = bool(stat.f_flag & os.ST_RDONLY) or not writable
    checks.append(
        Check(
            "read-only",
            read_only,
            "yes"
            if read_only
            else "the mount is writable; mount it readOnly: true so no job can corrupt the shared cache",
        )
    )
    return checks


def max_age_seconds(max_age: str, max_age_hours: float | None, max_age_typed: bool = False) -> float:
    """How old the last refresh may be, from ``--max-age`` (a duration, as every other flag takes one) or the hidden
    ``--max-age-hours`` (a float: the old spelling, kept so existing probes and scripts still run).
    ``max_age_typed``: --max-age was given, not defaulted (then the two flags contradict each other)."""
    if max_age_hours is not None:
        if max_age_typed:
            raise ConfigError("give --max-age or --max-age-hours, not both (--max-age-hours is the old spelling)")
        return max_age_hours * 3600
    seconds = parse_duration(max_age, "--max-age")
    if seconds <= 0:
        raise ConfigError(f"--max-age {max_age!r} must be above 0, e.g. 36h or 1.5d")
    return seconds


def check_fresh(mountpoint: Path, max_age: float, now: Callable[[], float] = time.time) -> Check:
    """``max_age``: seconds (:func:`max_age_seconds`)."""
    status = mountpoint / layout.status_key("")
    got = _on_mount(lambda: (status.read_text(), status.stat().st_mtime))
    if got.timed_out:
        return Check("freshness", False, _no_answer(mountpoint, got))
    try:
        if not got.ok:
            raise got.error  # type: ignore[misc]  # not ok and not timed out (handled above): error is set
        text, mtime = got.value
        data = json.loads(text)
    except (OSError, ValueError):
        return Check(
            "freshness",
            False,
            f"no {status}: refresh has never completed into this bucket/prefix; run "
            "the hf-cache-refresh CronJob (kubectl -n hf-cache create job --from=cronjob/hf-cache-refresh x)",
        )
    age_h = (now() - mtime) / 3600
    failed = [r["repo"] for r in data.get("repos", []) if r.get("state") != RepoState.OK]
    if age_h * 3600 > max_age:
        return Check(
            "freshness",
            False,
            f"the last refresh ended {age_h:.1f} h ago (more than --max-age {format_duration(round(max_age, 3))});"
            " check the CronJob's schedule and its last Job's logs",
        )
    if failed:
        return Check("freshness", False, f"the last refresh failed for {', '.join(failed)}; see its Job's logs")
    return Check("freshness", True, f"last refresh {data.get('ended', '?')} ({age_h:.1f} h ago), all ok")


def check_repo(hub_dir: Path, repo_id: str, revision: str | None, repo_type: layout.RepoType) -> Check:
    got = _on_mount(lambda: _check_repo(hub_dir, repo_id, revision, repo_type), PROBE_TIMEOUT * 3)
    if got.ok and isinstance(got.value, Check):  # an Outcome's value is Any; _check_repo returns a Check
        return got.value
    spec = format_repo(repo_id, repo_type, revision)
    if got.timed_out:
        return Check(f"repo {spec}", False, _no_answer(hub_dir, got))
    return Check(f"repo {spec}", False, f"cannot read it from the mount: {got.error}")


def _check_repo(hub_dir: Path, repo_id: str, revision: str | None, repo_type: layout.RepoType) -> Check:
    resolved = resolve_snapshot(hub_dir, repo_id, revision, repo_type)
    if resolved.snapshot is None:
        return Check(f"repo {resolved.spec}", False, f"{resolved.problem}; add it to models.txt and re-run refresh")
    sha = resolved.snapshot.name
    tree = resolved.snapshot.parent.parent / layout.tree_path(sha)
    try:
        listed = treelisting.decode(tree.read_bytes())
    except OSError:
        listed = None
    if listed is None:
        return Check(
            f"repo {resolved.spec}",
            False,
            f"no tree listing for {sha[:12]}: it was not published by hf-cache refresh; re-run refresh",
        )
    missing = [p for p in listed if not (resolved.snapshot / p).is_file()]
    if missing:
        return Check(
            f"repo {resolved.spec}",
            False,
            f"{plural(len(missing), 'file')} missing from {sha[:12]} (e.g. "
            f"{missing[0]}); re-publish them with `hf-cache verify --repair {resolved.spec}`",
        )
    return Check(f"repo {resolved.spec}", True, f"{sha[:12]}, {plural(len(listed), 'file')}, complete")
