"""Removing what models.txt no longer lists: planned purely, applied refs first.

A repo or revision dropped from models.txt is not deleted at once: jobs may still be reading it, and a mistaken
edit should be cheap to undo. It is recorded as de-listed (the time it was first seen missing is kept in
status.json) and removed only once it has been de-listed for ``--prune-after``. Refs go first (new opens stop
resolving it), then the manifest (it no longer claims completeness), then the tree listing and snapshot files.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cache import layout
from cache.errors import ConfigError
from cache.refresh.publish import Target

log = logging.getLogger("hf_cache.prune")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    m = _DURATION.match(text.strip())
    if not m:
        raise ConfigError(f"--prune-after {text!r}: use a number and a unit, e.g. 30m, 12h, 7d, 2w")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


@dataclass(frozen=True)
class Published:
    """What is in the bucket, by repo folder: its refs (name -> sha) and its snapshot shas."""

    refs: dict[str, dict[str, str]]
    snapshots: dict[str, set[str]]


@dataclass(frozen=True)
class PruneAction:
    kind: str  # "ref" | "snapshot"
    folder: str  # models--org--name
    name: str  # ref name or sha


def plan_prune(
    published: Published,
    keep_refs: set[tuple[str, str]],
    keep_snapshots: set[tuple[str, str]],
    delisted: dict[str, str],
    now: datetime,
    after: timedelta,
) -> tuple[list[PruneAction], dict[str, str]]:
    """Pure: which refs/snapshots to delete now, and the updated de-listed map (item id -> first seen missing)."""
    candidates: dict[str, PruneAction] = {}
    for folder, refs in published.refs.items():
        for name in refs:
            if (folder, name) not in keep_refs:
                candidates[f"ref:{folder}:{name}"] = PruneAction("ref", folder, name)
    for folder, shas in published.snapshots.items():
        for sha in shas:
            if (folder, sha) not in keep_snapshots:
                candidates[f"snapshot:{folder}:{sha}"] = PruneAction("snapshot", folder, sha)
    new_delisted: dict[str, str] = {}
    due: list[PruneAction] = []
    for item, action in sorted(candidates.items()):
        first = delisted.get(item, now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        new_delisted[item] = first
        first_dt = datetime.strptime(first, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if now - first_dt >= after:
            due.append(action)
    due.sort(key=lambda a: (a.kind != "ref", a.folder, a.name))  # refs first
    for action in due:
        new_delisted.pop(f"{action.kind}:{action.folder}:{action.name}", None)
    return due, new_delisted


def scan_published(target: Target) -> Published:
    """Read the refs and snapshot folders of every repo under ``<prefix>/hub/``."""
    hub = layout.join(target.prefix, layout.HUB_DIR) + "/"
    refs: dict[str, dict[str, str]] = {}
    snapshots: dict[str, set[str]] = {}
    for key in target.list(hub):
        rest = key[len(hub) :].split("/")
        if len(rest) < 3:
            continue
        folder, kind = rest[0], rest[1]
        if kind == "refs":
            data = target.get_bytes(key) or b""
            refs.setdefault(folder, {})["/".join(rest[2:])] = data.decode(errors="replace")
        elif kind == "snapshots":
            snapshots.setdefault(folder, set()).add(rest[2])
    return Published(refs, snapshots)


def apply_prune(target: Target, actions: list[PruneAction]) -> list[str]:
    """Delete refs first, then each snapshot's manifest, tree listing and files. Returns what was removed."""
    removed: list[str] = []
    hub = layout.join(target.prefix, layout.HUB_DIR)
    for action in actions:
        repo_root = layout.join(hub, action.folder)
        if action.kind == "ref":
            target.client.delete_object(Bucket=target.bucket, Key=layout.join(repo_root, "refs", action.name))
            removed.append(f"{action.folder} refs/{action.name}")
            continue
        meta = layout.join(target.prefix, layout.META_DIR, "manifests", action.folder, f"{action.name}.json")
        target.client.delete_object(Bucket=target.bucket, Key=meta)
        target.client.delete_object(Bucket=target.bucket, Key=layout.join(repo_root, "trees", f"{action.name}.json"))
        keys = list(target.list(layout.join(repo_root, "snapshots", action.name)))
        for i in range(0, len(keys), 1000):
            target.client.delete_objects(
                Bucket=target.bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
            )
        removed.append(f"{action.folder} snapshots/{action.name[:12]} ({len(keys)} files)")
    for line in removed:
        log.info("pruned %s", line)
    return removed


def keep_sets(results: list[Any]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """Refs and snapshots this run's entries hold on to."""
    refs: set[tuple[str, str]] = set()
    snaps: set[tuple[str, str]] = set()
    for r in results:
        folder = layout.repo_folder_name(r.entry.repo_id, r.entry.repo_type)
        if r.entry.ref_name:
            refs.add((folder, r.entry.ref_name))
        if r.sha:
            snaps.add((folder, r.sha))
    return refs, snaps
