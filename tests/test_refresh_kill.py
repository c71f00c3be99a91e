"""Atomic publish: a refresh SIGKILLed before any of its S3 writes never leaves a ref on an incomplete snapshot."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

from hf_cache.lab.s3server import S3Server
from tests.refresh_helpers import check_refs_complete, objects, read, run_refresh

SHARDS = 12


def test_kill_at_every_write_never_exposes_a_partial_snapshot(
    s3_server: S3Server, bucket: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Kill publish N (a new commit every time) before its N-th S3 write, for N = 0, 1, 2, ... until one completes.

    After every kill each ref must point at a complete, verified snapshot: the previous one, never the new one
    half-uploaded. A killed run cannot release its lease; the test removes it as its expiry would (the expiry is
    tested on its own).
    """
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, folder)
    models = tmp_path / "models.txt"
    models.write_text(f"team/ckpt source=file://{folder}\nteam/other source=file://{tiny_model_dir}\n")
    env = s3_server.env()
    client = s3_server.client()
    ref_key = "p/hub/models--team--ckpt/refs/main"

    def new_commit(n: int) -> None:
        for i in range(SHARDS):
            (folder / f"shard-{i}.bin").write_bytes(bytes([n % 256, i]) * 20_000)

    new_commit(255)
    assert run_refresh(models, bucket, env).returncode == 0
    published = read(client, bucket, ref_key)

    killed_at: list[int] = []
    moved_by_killed: list[int] = []
    for n in range(60):
        new_commit(n)
        result = run_refresh(models, bucket, {**env, "HFCACHE_TEST_KILL_AFTER": str(n)})
        assert check_refs_complete(client, bucket) == 2  # both refs, each on a complete snapshot
        if result.returncode != -signal.SIGKILL:
            assert result.returncode == 0, result.stderr
            assert read(client, bucket, ref_key) != published  # the finished run moved the ref
            break
        if read(client, bucket, ref_key) != published:
            moved_by_killed.append(n)  # killed after its last file, tree and manifest: the ref write is the commit
        killed_at.append(n)
        client.delete_object(Bucket=bucket, Key="p/hf-cache/lease.json")
    assert len(killed_at) >= 20, f"only {len(killed_at)} kill points exercised"
    assert killed_at == list(range(len(killed_at)))
    # Only the kills after the ref write (status.json, lease release) may find the ref moved.
    assert len(moved_by_killed) <= 2 and all(n >= len(killed_at) - 2 for n in moved_by_killed)
    assert not [k for k in objects(client, bucket) if k.endswith("lease.json")]
