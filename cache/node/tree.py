"""The tier's local Hugging Face cache: where each thing is, and where each snapshot entry's symlink points.

Layout, all under one node folder ``root`` (HF_HOME for job pods) that also holds the rclone mountpoint::

    root/hub/<repo folder>/refs/<name>              copied from the bucket (through the mount)
    root/hub/<repo folder>/trees/<sha>.json         copied: huggingface_hub tells complete snapshots apart by it
    root/hub/<repo folder>/snapshots/<sha>/<path>   a symlink: to ../blobs/<sha256> (hot) or into the mount (cold)
    root/hub/<repo folder>/blobs/<sha256>           verified local bytes
    root/<mount>/...                                the rclone mount of the bucket (the lazy path)
    root/.hf-cache-node/                            the agent's state (snapshot manifests, temp names)

Every link is RELATIVE and stays inside ``root``: a job pod mounts the node's ``root`` anywhere (read-only) and
every link resolves there exactly as on the node, without knowing the node's paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hf_cache import layout, settings
from hf_cache.errors import ConfigError
from hf_cache.layout import HUB_DIR, MANIFESTS_DIR, META_DIR, REFS_DIR, SHA_RE

STATE_DIR = ".hf-cache-node"


@dataclass(frozen=True)
class Entry:
    """One file of a published snapshot, as its manifest describes it."""

    repo: str  # repo folder, e.g. models--org--name
    sha: str  # commit
    path: str  # repo path, posix
    size: int
    sha256: str


@dataclass(frozen=True)
class Tier:
    root: Path
    mountpoint: Path

    @staticmethod
    def make(root: Path, mountpoint: Path) -> Tier:
        """Refuses a mountpoint outside ``root``: one pod volume must hold both for the cold links to resolve."""
        r, m = Path(os.path.abspath(root)), Path(os.path.abspath(mountpoint))
        if r == m or r not in m.parents:
            raise ConfigError(
                f"--tier-dir {root}: the mountpoint {mountpoint} must be inside it (e.g. --tier-dir"
                f" {settings.NODE_ROOT} --mountpoint {settings.NODE_MOUNTPOINT}), so that one read-only pod volume"
                " holds both"
            )
        return Tier(r, m)

    @property
    def hub(self) -> Path:
        return self.root / HUB_DIR

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    @property
    def mount_hub(self) -> Path:
        return self.mountpoint / HUB_DIR

    def manifest_on_mount(self, repo: str, sha: str) -> Path:
        return self.mountpoint / META_DIR / layout.manifest_path(repo, sha)

    def manifest_copy(self, repo: str, sha: str) -> Path:
        return self.state / layout.manifest_path(repo, sha)

    def link(self, e: Entry) -> Path:
        return self.hub / e.repo / layout.snapshot_path(e.sha, e.path)

    def blob(self, repo: str, sha256: str) -> Path:
        return self.hub / repo / layout.BLOBS_DIR / sha256

    def mount_file(self, e: Entry) -> Path:
        return self.mount_hub / e.repo / layout.snapshot_path(e.sha, e.path)

    def hot_target(self, e: Entry) -> str:
        return os.path.relpath(self.blob(e.repo, e.sha256), self.link(e).parent)

    def cold_target(self, e: Entry) -> str:
        return os.path.relpath(self.mount_file(e), self.link(e).parent)

    def is_hot(self, e: Entry) -> bool:
        try:
            return os.readlink(self.link(e)) == self.hot_target(e)
        except OSError:
            return False

    def tmp_name(self) -> Path:
        """A temp name on the tier's filesystem but outside hub/, so no reader ever lists a half-made entry."""
        tmp = self.state / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / uuid.uuid4().hex


def describe(tier: Tier) -> None:
    """Record where the mount is, relative to the tier, for readers of the tier (``node ls``, ``doctor``)."""
    info = json.dumps({"mount": os.path.relpath(tier.mountpoint, tier.root)}).encode()
    path = tier.state / "tier.json"
    if not path.is_file() or path.read_bytes() != info:
        write_atomic(tier, path, info)


def open_tier(root: Path) -> Tier | None:
    """The tier at ``root`` as its agent described it; None when ``root`` is not a tier (e.g. the mount itself)."""
    try:
        rel = str(json.loads((root / STATE_DIR / "tier.json").read_bytes())["mount"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Tier(root, root / rel)


def entries_from_manifest(repo: str, sha: str, raw: bytes) -> list[Entry]:
    """The files of a snapshot from its manifest; refuses paths that would leave the snapshot folder."""
    data = json.loads(raw)
    out = []
    for f in data["files"]:
        path = str(f["path"])
        parts = path.split("/")
        if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"manifest of {repo}@{sha[:12]} names an unsafe path {path!r}")
        sha256 = str(f["sha256"])
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"manifest of {repo}@{sha[:12]}: {path} has no valid sha256")
        out.append(Entry(repo, sha, path, int(f["size"]), sha256))
    return out


def swap_link(tier: Tier, link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically: a reader opening it sees the old target or the new, never nothing."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = tier.tmp_name()
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(tier: Tier, dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tier.tmp_name()
    tmp.write_bytes(data)
    os.replace(tmp, dest)


def load_entries(tier: Tier) -> list[Entry]:
    """Every snapshot entry the tier has built (from its manifest copies: no call on the mount)."""
    out: list[Entry] = []
    base = tier.state / MANIFESTS_DIR
    if not base.is_dir():
        return out
    for repo_dir in sorted(base.iterdir()):
        for m in sorted(repo_dir.glob("*.json")):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                out += entries_from_manifest(repo_dir.name, m.stem, m.read_bytes())
    return out


def read_refs(refs_dir: Path) -> dict[str, str]:
    """``{ref name: sha}`` of a repo's refs folder (names may contain '/'); entries that are not a sha are skipped."""
    out: dict[str, str] = {}
    if not refs_dir.is_dir():
        return out
    for p in refs_dir.rglob("*"):
        if p.is_file():
            value = p.read_text().strip()
            if SHA_RE.match(value):
                out[p.relative_to(refs_dir).as_posix()] = value
    return out


@dataclass
class SyncResult:
    snapshots_added: int = 0
    refs_changed: int = 0
    problems: list[str] | None = None
    mounted: bool = False  # the mount's hub/ was there to sync from


def sync(tier: Tier, relist: Callable[[list[str]], object] | None = None) -> SyncResult:
    """Bring the tier's refs, trees and snapshot folders in line with the mount (calls on the mount: run bounded).

    A new snapshot is built whole (every entry a link, hot if its blob is here, else cold, and its tree listing)
    before any ref names it; refs are then replaced atomically. So a ref in the tier always names a complete
    snapshot, as in the bucket. The mount re-lists refs/snapshots/trees after a refresh, not the manifests folder:
    a new commit's manifest missing from the listing is re-listed once through ``relist`` (rclone rc vfs/refresh).
    """
    res = SyncResult(problems=[])
    assert res.problems is not None
    describe(tier)
    if not tier.mount_hub.is_dir():
        return res
    res.mounted = True
    for repo_dir in sorted(tier.mount_hub.iterdir()):
        repo = repo_dir.name
        if not repo_dir.is_dir() or "--" not in repo:
            continue
        refs = read_refs(repo_dir / REFS_DIR)
        for sha in sorted(set(refs.values())):
            if tier.manifest_copy(repo, sha).is_file():
                continue
            try:
                try:
                    raw = tier.manifest_on_mount(repo, sha).read_bytes()
                except FileNotFoundError:
                    if relist is None:
                        raise
                    relist([layout.join(META_DIR, MANIFESTS_DIR), layout.join(META_DIR, MANIFESTS_DIR, repo)])
                    raw = tier.manifest_on_mount(repo, sha).read_bytes()
                entries = entries_from_manifest(repo, sha, raw)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                res.problems.append(f"{repo}@{sha[:12]}: no usable manifest ({exc}); served cold from the mount")
                continue
            for e in entries:
                blob = tier.blob(repo, e.sha256)
                swap_link(tier, tier.link(e), tier.hot_target(e) if blob.is_file() else tier.cold_target(e))
            (tier.hub / repo / layout.snapshot_path(sha)).mkdir(parents=True, exist_ok=True)  # an empty snapshot, too
            tree = repo_dir / layout.tree_path(sha)
            with contextlib.suppress(FileNotFoundError):
                write_atomic(tier, tier.hub / repo / layout.tree_path(sha), tree.read_bytes())
            write_atomic(tier, tier.manifest_copy(repo, sha), raw)
            res.snapshots_added += 1
        local = read_refs(tier.hub / repo / REFS_DIR)
        for name, sha in refs.items():
            if local.get(name) != sha and tier.manifest_copy(repo, sha).is_file():
                write_atomic(tier, tier.hub / repo / layout.ref_path(name), sha.encode())  # no newline, as published
                res.refs_changed += 1
        if (repo_dir / REFS_DIR).is_dir():  # a ref removed from the bucket (prune) goes; its snapshot stays readable
            for name in set(local) - set(refs):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tier.hub / repo / layout.ref_path(name))
                res.refs_changed += 1
    return res
