"""The one source of truth for a reader's environment.

``hf-cache env`` prints it, the Kubernetes job-pod component is generated from / tested against it, and
``hf-cache doctor`` checks a pod against it. In a job pod ``HF_HOME`` (/mnt/hf_cache) is the node's tier folder
(cache/node/: the standard HF cache, its snapshot entries relative symlinks to verified local blobs or into the
rclone mount at ``HF_HOME/mnt``); without the tier it is the mount itself (the bucket/prefix root). Either way the
hub cache is ``HF_HOME/hub`` and it is read-only, so everything huggingface/transformers/datasets would write under
``HF_HOME`` is moved to a writable scratch folder, and the Hub is never contacted.
"""

from __future__ import annotations

from hf_cache import layout, settings

DEFAULT_MOUNTPOINT = settings.MOUNTPOINT
DEFAULT_SCRATCH = settings.READER_SCRATCH


def reader_env(mountpoint: str = DEFAULT_MOUNTPOINT, scratch: str = DEFAULT_SCRATCH) -> dict[str, str]:
    """Environment variables, in a stable order, that make HF libraries read the mount and nothing else (why each:
    ``settings.READER_ENV_VARS``; a test keeps the two the same set)."""
    mount = mountpoint.rstrip("/") or "/"
    tmp = scratch.rstrip("/")
    return {
        "HF_HOME": mount,
        "HF_HUB_CACHE": layout.mount_hub_dir(mount),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        # Writers that would otherwise write under HF_HOME (read-only here):
        "HF_MODULES_CACHE": f"{tmp}/modules",
        "HF_DATASETS_CACHE": f"{tmp}/datasets",
        "HF_XET_CACHE": f"{tmp}/xet",
        "HF_ASSETS_CACHE": f"{tmp}/assets",
        "HF_TOKEN_PATH": f"{tmp}/token",
    }
