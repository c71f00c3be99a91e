"""The published cache layout: one place that knows the names of things in the bucket and on the mount.

The bucket/prefix root is what job pods see as ``HF_HOME``; the Hugging Face hub cache is ``hub/`` below it,
laid out as huggingface_hub expects (symlink-free: snapshots hold real files, there is no ``blobs/``).
hf-cache's own files (manifests, status, lease) live under ``hf-cache/``, outside ``hub/``, so that
``scan_cache_dir`` never sees them.
"""

from __future__ import annotations

import re
from typing import Literal

RepoType = Literal["model", "dataset"]
REPO_TYPES: tuple[RepoType, ...] = ("model", "dataset")

HUB_DIR = "hub"
META_DIR = "hf-cache"
SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def join(*parts: str) -> str:
    """Join S3 key parts, dropping empty ones and stray slashes (a prefix may be "" or "a/b/")."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def repo_folder_name(repo_id: str, repo_type: RepoType = "model") -> str:
    """``models--org--name`` as huggingface_hub names a repo's cache folder."""
    return f"{repo_type}s--" + repo_id.replace("/", "--")


def repo_root(prefix: str, repo_id: str, repo_type: RepoType = "model") -> str:
    return join(prefix, HUB_DIR, repo_folder_name(repo_id, repo_type))


def ref_key(prefix: str, repo_id: str, repo_type: RepoType, ref: str) -> str:
    return join(repo_root(prefix, repo_id, repo_type), "refs", ref)


def snapshot_prefix(prefix: str, repo_id: str, repo_type: RepoType, sha: str) -> str:
    return join(repo_root(prefix, repo_id, repo_type), "snapshots", sha)


def snapshot_key(prefix: str, repo_id: str, repo_type: RepoType, sha: str, path: str) -> str:
    return join(snapshot_prefix(prefix, repo_id, repo_type, sha), path)


def tree_key(prefix: str, repo_id: str, repo_type: RepoType, sha: str) -> str:
    """huggingface_hub >= 2 reads ``trees/<sha>.json`` to tell a complete snapshot from a partial one."""
    return join(repo_root(prefix, repo_id, repo_type), "trees", f"{sha}.json")


def manifest_key(prefix: str, repo_id: str, repo_type: RepoType, sha: str) -> str:
    return join(prefix, META_DIR, "manifests", repo_folder_name(repo_id, repo_type), f"{sha}.json")


def status_key(prefix: str) -> str:
    return join(prefix, META_DIR, "status.json")


def lease_key(prefix: str) -> str:
    return join(prefix, META_DIR, "lease.json")


def mount_hub_dir(mountpoint: str) -> str:
    """Where huggingface_hub's cache is on a node: ``HF_HUB_CACHE`` for a job pod."""
    return mountpoint.rstrip("/") + "/" + HUB_DIR
