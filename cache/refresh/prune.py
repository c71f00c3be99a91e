"""Removing what models.txt no longer lists: planned purely, applied refs first.

A repo or revision dropped from models.txt is not deleted at once: jobs may still be reading it, and a mistaken
edit should be cheap to undo. It is recorded as de-listed (the time it was first seen missing is kept in
status.json) and removed only once it has been de-listed for ``--prune-after``. Refs go first (new opens stop
resolving it), then the manifest (it no longer claims completeness), then the tree listing and snapshot files.

A models.txt emptied or truncated by mistake must not empty the bucket: ``prune_refusal`` refuses a prune that
would remove everything published, or more than a stated share of it, unless the operator says ``--force``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hf_cache import layout
from hf_cache.refresh.store import Target

log = logging.getLogger(__name__)


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


def removed_repos(actions: list[PruneAction], published: Published) -> set[str]:
    """Pure: the repo folders these deletions leave with no ref and no snapshot at all."""
    folders = set(published.refs) | set(published.snapshots)
    gone = {(a.kind, a.folder, a.name) for a in actions}
    return {
        f
        for f in folders
        if all(("ref", f, n) in gone for n in published.refs.get(f, {}))
        and all(("snapshot", f, sha) in gone for sha in published.snapshots.get(f, set()))
    }


def prune_refusal(actions: list[PruneAction], published: Published, max_share: float, force: bool) -> str | None:
    """Pure: why these deletions need ``--force``, or None.

    Counted in whole repos removed, not snapshots: dropping a listed repo's superseded snapshots is routine (a repo
    updated daily has many), while removing every repo, or more than ``max_share`` of them, is what an emptied or
    truncated models.txt does.
    """
    if force or not actions:
        return None
    repos = set(published.refs) | set(published.snapshots)
    gone = removed_repos(actions, published)
    if not gone:
        return None
    if gone == repos:
        what = f"every published repo ({len(gone)})"
    elif len(gone) / len(repos) > max_share:
        what = f"{len(gone)} of {len(repos)} published repos ({100 * len(gone) / len(repos):.0f}%)"
    else:
        return None
    return (
        f"--prune would remove {what}, more than --max-share {100 * max_share:.0f}% allows; nothing was "
        "pruned. Check models.txt; if that is meant, rerun with --force"
    )


def keep_refused(
    delisted_after: dict[str, str], refused: list[PruneAction], before: dict[str, str], now: datetime
) -> dict[str, str]:
    """Pure: the de-listed map when a prune was refused: the refused items stay de-listed since they first were."""
    out = dict(delisted_after)
    for a in refused:
        item = f"{a.kind}:{a.folder}:{a.name}"
        out[item] = before.get(item, now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return out


def scan_published(target: Target) -> Published:
    """Read the refs and snapshot folders of every repo under ``<prefix>/hub/``."""
    hub = layout.hub_prefix(target.prefix) + "/"
    refs: dict[str, dict[str, str]] = {}
    snapshots: dict[str, set[str]] = {}
    for key in target.list(hub):
        rest = key[len(hub) :].split("/")
        if len(rest) < 3:
            continue
        folder, kind = rest[0], rest[1]
        if kind == layout.REFS_DIR:
            data = target.get_bytes(key) or b""
            refs.setdefault(folder, {})["/".join(rest[2:])] = data.decode(errors="replace")
        elif kind == layout.SNAPSHOTS_DIR:
            snapshots.setdefault(folder, set()).add(rest[2])
    return Published(refs, snapshots)


def apply_prune(target: Target, actions: list[PruneAction]) -> list[str]:
    """Delete refs first, then each snapshot's manifest, tree listing and files. Returns what was removed."""
    removed: list[str] = []
    prefix = target.prefix
    for action in actions:
        if action.kind == "ref":
            target.client.delete_object(
                Bucket=target.bucket, Key=layout.folder_ref_key(prefix, action.folder, action.name)
            )
            removed.append(f"{action.folder} {layout.ref_path(action.name)}")
            continue
        meta = layout.folder_manifest_key(prefix, action.folder, action.name)
        target.client.delete_object(Bucket=target.bucket, Key=meta)
        target.client.delete_object(
            Bucket=target.bucket, Key=layout.folder_tree_key(prefix, action.folder, action.name)
        )
        keys = list(target.list(layout.folder_snapshot_prefix(prefix, action.folder, action.name)))
        for i in range(0, len(keys), 1000):
            target.client.delete_objects(
                Bucket=target.bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
            )
        removed.append(f"{action.folder} {layout.snapshot_path(action.name[:12])} ({len(keys)} files)")
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


def run_prune(
    target: Target,
    results: list[Any],
    delisted: dict[str, str],
    now: datetime,
    after: timedelta,
    max_share: float,
    force: bool,
) -> tuple[list[str], dict[str, str], str | None]:
    """Plan, guard and apply one run's prune: (what was removed, the new de-listed map, why it was refused)."""
    published = scan_published(target)
    refs, snaps = keep_sets(results)
    actions, after_map = plan_prune(published, refs, snaps, delisted, now, after)
    refused = prune_refusal(actions, published, max_share, force)
    if refused is not None:
        log.error("%s", refused)
        return [], keep_refused(after_map, actions, delisted, now), refused
    waiting = pending_actions(after_map)
    if prune_refusal(waiting, published, max_share, force) is not None:
        gone = removed_repos(waiting, published)
        log.warning(
            "models.txt de-lists %d of %d published repos; when due, that prune is refused without --force",
            len(gone),
            len(set(published.refs) | set(published.snapshots)),
        )
    return apply_prune(target, actions), after_map, None


def pending_actions(delisted: dict[str, str]) -> list[PruneAction]:
    """Pure: the de-listed items not yet due, as the actions a later prune would take."""
    out = []
    for item in delisted:
        kind, _, rest = item.partition(":")
        folder, _, name = rest.partition(":")
        if kind in ("ref", "snapshot") and folder and name:
            out.append(PruneAction(kind, folder, name))
    return out
