"""The published cache layout: one place that knows the names of things in the bucket and on the mount.

The bucket/prefix root is what job pods see as ``HF_HOME``; the Hugging Face hub cache is ``hub/`` below it,
laid out as huggingface_hub expects (symlink-free: snapshots hold real files, there is no ``blobs/``).
hf-cache's own files (manifests, status, lease) live under ``hf-cache/``, outside ``hub/``, so that
``scan_cache_dir`` never sees them.
"""

from __future__ import annotations

import re
from typing import Literal, TypeGuard

RepoType = Literal["model", "dataset"]
REPO_TYPES: tuple[RepoType, ...] = ("model", "dataset")

HUB_DIR = "hub"
META_DIR = "hf-cache"
# Inside a repo folder (huggingface_hub's names) and inside META_DIR (ours).
REFS_DIR = "refs"
SNAPSHOTS_DIR = "snapshots"
TREES_DIR = "trees"
BLOBS_DIR = "blobs"  # only in the node tier (cache/node/): the bucket is symlink-free and has none
MANIFESTS_DIR = "manifests"
STATUS_FILE = "status.json"
LEASE_FILE = "lease.json"
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_FOLDER_TYPES: dict[str, RepoType] = {f"{t}s": t for t in REPO_TYPES}


def is_repo_type(value: str) -> TypeGuard[RepoType]:
    """Whether a parsed word names a repo type; a ``RepoType`` from then on, so no caller needs a cast."""
    return value in REPO_TYPES


def join(*parts: str) -> str:
    """Join S3 key parts, dropping empty ones and stray slashes (a prefix may be "" or "a/b/")."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def repo_folder_name(repo_id: str, repo_type: RepoType = "model") -> str:
    """``models--org--name`` as huggingface_hub names a repo's cache folder."""
    return f"{repo_type}s--" + repo_id.replace("/", "--")


def parse_repo_folder(folder: str) -> tuple[RepoType, str] | None:
    """``models--org--name`` -> ("model", "org/name"); None for a folder not a repo's (repo ids hold no '--')."""
    kind, sep, rest = folder.partition("--")
    if not sep or kind not in _FOLDER_TYPES or not rest:
        return None
    return _FOLDER_TYPES[kind], rest.replace("--", "/")


# Paths relative to a repo folder: the same names in the bucket, on the mount and in the node tier.
def ref_path(name: str) -> str:
    return join(REFS_DIR, name)


def snapshot_path(sha: str, path: str = "") -> str:
    return join(SNAPSHOTS_DIR, sha, path)


def tree_path(sha: str) -> str:
    """huggingface_hub >= 2 reads ``trees/<sha>.json`` to tell a complete snapshot from a partial one."""
    return join(TREES_DIR, f"{sha}.json")


def manifest_path(folder: str, sha: str) -> str:
    """Relative to ``META_DIR``: hf-cache's own record of a snapshot, outside ``hub/``."""
    return join(MANIFESTS_DIR, folder, f"{sha}.json")


# S3 keys under a bucket prefix.
def hub_prefix(prefix: str) -> str:
    return join(prefix, HUB_DIR)


def folder_root(prefix: str, folder: str) -> str:
    return join(prefix, HUB_DIR, folder)


def repo_root(prefix: str, repo_id: str, repo_type: RepoType = "model") -> str:
    return folder_root(prefix, repo_folder_name(repo_id, repo_type))


def ref_key(prefix: str, repo_id: str, repo_type: RepoType, ref: str) -> str:
    return join(repo_root(prefix, repo_id, repo_type), ref_path(ref))


def snapshot_prefix(prefix: str, repo_id: str, repo_type: RepoType, sha: str) -> str:
    return join(repo_root(prefix, repo_id, repo_type), snapshot_path(sha))


def snapshot_key(prefix: str, repo_id: str, repo_type: RepoType, sha: str, path: str) -> str:
    return join(snapshot_prefix(prefix, repo_id, repo_type, sha), path)


def tree_key(prefix: str, repo_id: str, repo_type: RepoType, sha: str) -> str:
    return join(repo_root(prefix, repo_id, repo_type), tree_path(sha))


def manifest_key(prefix: str, repo_id: str, repo_type: RepoType, sha: str) -> str:
    return folder_manifest_key(prefix, repo_folder_name(repo_id, repo_type), sha)


def manifests_prefix(prefix: str, folder: str = "") -> str:
    """Every manifest (or one repo folder's): what ``ls`` and ``verify`` list."""
    return join(prefix, META_DIR, MANIFESTS_DIR, folder)


# The same keys for a repo known by its folder name (prune and rm work from a listing of the bucket).
def folder_ref_key(prefix: str, folder: str, ref: str) -> str:
    return join(folder_root(prefix, folder), ref_path(ref))


def folder_snapshot_prefix(prefix: str, folder: str, sha: str) -> str:
    return join(folder_root(prefix, folder), snapshot_path(sha))


def folder_tree_key(prefix: str, folder: str, sha: str) -> str:
    return join(folder_root(prefix, folder), tree_path(sha))


def folder_manifest_key(prefix: str, folder: str, sha: str) -> str:
    return join(prefix, META_DIR, manifest_path(folder, sha))


def status_key(prefix: str) -> str:
    return join(prefix, META_DIR, STATUS_FILE)


def lease_key(prefix: str) -> str:
    return join(prefix, META_DIR, LEASE_FILE)


def mount_hub_dir(mountpoint: str) -> str:
    """Where huggingface_hub's cache is on a node: ``HF_HUB_CACHE`` for a job pod."""
    return mountpoint.rstrip("/") + "/" + HUB_DIR
