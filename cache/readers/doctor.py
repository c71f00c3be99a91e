"""``hf-cache doctor``: check, one line each, everything a job pod needs to read models from the mount.

Each failed check says the cause and the fix in one sentence, so the person reading a pod's log knows what to do.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cache.mount import fusemount
from cache.readers.envvars import reader_env
from cache.readers.warm import resolve_snapshot


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


def check_mount(mountpoint: Path) -> list[Check]:
    if not mountpoint.is_dir() and fusemount.mount_fstype(mountpoint) is None:
        return [
            Check(
                "mount",
                False,
                f"{mountpoint} does not exist; mount the node path into the pod "
                "(label the workload hf-cache.io/mount=true) and check the hf-cache DaemonSet runs on this node",
            )
        ]
    if fusemount.is_stale(mountpoint, 5.0):
        return [
            Check(
                "mount",
                False,
                f"{mountpoint} is stale (Transport endpoint is not connected); the DaemonSet "
                "repairs it within 30 s - if it persists, check `kubectl -n hf-cache logs ds/hf-cache-mount`",
            )
        ]
    if not fusemount.is_fuse(mountpoint):
        return [
            Check(
                "mount",
                False,
                f"{mountpoint} is a plain folder, not the hf-cache mount; mount it with "
                "mountPropagation: HostToContainer so the DaemonSet's FUSE mount shows through",
            )
        ]
    checks = [Check("mount", True, f"{mountpoint} is a live FUSE mount")]
    st = os.statvfs(mountpoint)
    read_only = bool(st.f_flag & os.ST_RDONLY) or not os.access(mountpoint, os.W_OK)
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


def check_fresh(mountpoint: Path, max_age_hours: float, now: Callable[[], float] = time.time) -> Check:
    status = mountpoint / "hf-cache" / "status.json"
    try:
        data = json.loads(status.read_text())
    except (OSError, ValueError):
        return Check(
            "freshness",
            False,
            f"no {status}: refresh has never completed into this bucket/prefix; run "
            "the hf-cache-refresh CronJob (kubectl -n hf-cache create job --from=cronjob/hf-cache-refresh x)",
        )
    age_h = (now() - status.stat().st_mtime) / 3600
    failed = [r["repo"] for r in data.get("repos", []) if r.get("state") != "ok"]
    if age_h > max_age_hours:
        return Check(
            "freshness",
            False,
            f"the last refresh ended {age_h:.1f} h ago; check the CronJob's schedule and its last Job's logs",
        )
    if failed:
        return Check("freshness", False, f"the last refresh failed for {', '.join(failed)}; see its Job's logs")
    return Check("freshness", True, f"last refresh {data.get('ended', '?')} ({age_h:.1f} h ago), all ok")


def check_repo(hub_dir: Path, repo_id: str, revision: str | None, repo_type: str) -> Check:
    resolved = resolve_snapshot(hub_dir, repo_id, revision, repo_type)
    if resolved.snapshot is None:
        return Check(f"repo {resolved.spec}", False, f"{resolved.problem}; add it to models.txt and re-run refresh")
    sha = resolved.snapshot.name
    tree = resolved.snapshot.parent.parent / "trees" / f"{sha}.json"
    try:
        listed = json.loads(tree.read_text())["files"]
    except (OSError, ValueError, KeyError):
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
            f"{len(missing)} files missing from {sha[:12]} (e.g. "
            f"{missing[0]}); re-run refresh, then `hf-cache verify {repo_id}`",
        )
    return Check(f"repo {resolved.spec}", True, f"{sha[:12]}, {len(listed)} files, complete")
