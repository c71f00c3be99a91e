"""Every reader test of tests/test_readers.py, unchanged, with HF_HOME at the node tier instead of the mount.

The tier is fully hot here (every snapshot entry a symlink to a verified local blob), so huggingface_hub,
transformers (trust_remote_code included) and datasets read local files through standard HF-cache symlinks.
The same functions are imported and collected here; only the ``published`` fixture differs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hf_cache.lab.hubserver import HubServer
from hf_cache.lab.s3server import S3Server
from tests.node_helpers import is_hot, mount_tier, wait_for
from tests.refresh_helpers import run_refresh
from tests.test_readers import (
    Published,
    make_remote_code_repo,
    test_datasets_load_dataset_from_the_mount,
    test_huggingface_hub_resolves_every_way_offline,
    test_transformers_loads_and_generates_through_the_mount,
    test_trust_remote_code_model_runs_from_the_mount,
)

__all__ = [
    "test_datasets_load_dataset_from_the_mount",
    "test_huggingface_hub_resolves_every_way_offline",
    "test_transformers_loads_and_generates_through_the_mount",
    "test_trust_remote_code_model_runs_from_the_mount",
]


@dataclass
class TierHome:
    """What the reader tests use of a mount: the folder that is HF_HOME (here the tier, not the rclone mount)."""

    mountpoint: Path


@pytest.fixture(scope="module")
def published(
    s3_server: S3Server, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Published]:
    root = tmp_path_factory.mktemp("node-readers")
    repo = root / "src" / "tiny"
    shutil.copytree(tiny_model_dir, repo)
    (repo / "nested" / "deeper").mkdir(parents=True)
    (repo / "nested" / "deeper" / "notes.txt").write_text("nested file")
    hub = HubServer()
    sha = hub.add_repo("org/tiny", repo, revision_names=("main", "v1.0"))
    remote = make_remote_code_repo(tiny_model_dir, root / "src" / "remote")
    data = root / "src" / "data"
    data.mkdir()
    (data / "train.csv").write_text("text,label\nhello,1\nworld,0\nmodels,1\n")
    models = root / "models.txt"
    models.write_text(
        f"org/tiny\norg/tiny@v1.0\norg/remote-code source=file://{remote}\norg/data type=dataset source=file://{data}\n"
    )
    bucket = s3_server.new_bucket()
    result = run_refresh(models, bucket, {**s3_server.env(), "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": ""}, prefix="hf")
    assert result.returncode == 0, result.stderr
    tier = root / "node"
    mount = mount_tier(s3_server, bucket, tier)
    try:
        hub_dir = tier / "hub"
        refs = ["models--org--tiny/refs/main", "models--org--tiny/refs/v1.0", "models--org--remote-code/refs/main"]
        refs.append("datasets--org--data/refs/main")
        wait_for("every ref in the tier", lambda: all((hub_dir / r).is_file() for r in refs), mount=mount)
        links = [p for p in hub_dir.glob("*/snapshots/*/**/*") if p.is_symlink()]
        for link in links:
            link.read_bytes()  # the node reads each file once (cold, through the mount)
        wait_for("every file hot", lambda: all(is_hot(p) for p in links), timeout=60, mount=mount)
        yield Published(TierHome(tier), sha, root / "scratch", hub)  # type: ignore[arg-type]
    finally:
        mount.stop()
        hub.stop()
