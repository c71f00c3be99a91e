"""Prune loses nothing it should keep: refs go before snapshot files, no prune in a failed run, and a models.txt
emptied by mistake cannot empty the bucket without ``--force``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hf_cache.lab.s3server import S3Server
from hf_cache.refresh.prune import (
    PruneAction,
    Published,
    apply_prune,
    keep_refused,
    pending_actions,
    plan_prune,
    prune_refusal,
    removed_repos,
)
from hf_cache.refresh.store import Target
from tests.refresh_helpers import check_refs_complete, objects, read, run_refresh, status

NOW = datetime(2026, 1, 10, tzinfo=UTC)
A, B, C = "models--o--a", "models--o--b", "models--o--c"
SHA1, SHA2, SHA3 = "1" * 40, "2" * 40, "3" * 40


def _published() -> Published:
    return Published(
        refs={A: {"main": SHA1}, B: {"main": SHA2}, C: {"main": SHA3}},
        snapshots={A: {SHA1, "a" * 40}, B: {SHA2}, C: {SHA3}},
    )


def test_plan_puts_refs_first_and_waits_for_prune_after() -> None:
    pub = _published()
    keep_refs = {(A, "main"), (C, "main")}
    keep_snaps = {(A, SHA1), (C, SHA3)}
    due, delisted = plan_prune(pub, keep_refs, keep_snaps, {}, NOW, timedelta(days=1))
    assert due == [] and set(delisted) == {f"ref:{B}:main", f"snapshot:{B}:{SHA2}", f"snapshot:{A}:{'a' * 40}"}
    due, delisted = plan_prune(pub, keep_refs, keep_snaps, delisted, NOW + timedelta(days=1), timedelta(days=1))
    assert [a.kind for a in due] == ["ref", "snapshot", "snapshot"] and delisted == {}


def test_refusal_counts_whole_repos_removed_not_superseded_snapshots() -> None:
    pub = _published()
    everything = [PruneAction("ref", f, "main") for f in (A, B, C)] + [
        PruneAction("snapshot", f, s) for f, shas in pub.snapshots.items() for s in shas
    ]
    assert removed_repos(everything, pub) == {A, B, C}
    refusal = prune_refusal(everything, pub, 1.0, force=False)
    assert refusal and "every published repo (3)" in refusal and "--force" in refusal
    assert prune_refusal(everything, pub, 1.0, force=True) is None

    two = [a for a in everything if a.folder in (B, C)]
    refusal = prune_refusal(two, pub, 0.5, force=False)
    assert refusal and "2 of 3 published repos (67%)" in refusal
    assert prune_refusal(two, pub, 0.7, force=False) is None
    assert prune_refusal([a for a in everything if a.folder == B], pub, 0.3, force=False) == (
        "--prune would remove 1 of 3 published repos (33%), more than --max-share 30% allows; nothing was "
        "pruned. Check models.txt; if that is meant, rerun with --force"
    )
    # superseded snapshots of listed repos and refs of dropped revisions are routine: never refused
    routine = [PruneAction("snapshot", A, "a" * 40), PruneAction("ref", B, "main")]
    assert removed_repos(routine, pub) == set() and prune_refusal(routine, pub, 0.0, force=False) is None
    _, waiting = plan_prune(pub, set(), set(), {}, NOW, timedelta(days=7))  # not due yet: what a later run prunes
    assert sorted(pending_actions(waiting), key=repr) == sorted(everything, key=repr)


def test_refused_items_stay_delisted_since_first_seen() -> None:
    refused = [PruneAction("ref", B, "main"), PruneAction("snapshot", B, SHA2)]
    before = {f"ref:{B}:main": "2026-01-01T00:00:00Z"}
    out = keep_refused({"other": "x"}, refused, before, NOW)
    assert out == {
        "other": "x",
        f"ref:{B}:main": "2026-01-01T00:00:00Z",
        f"snapshot:{B}:{SHA2}": "2026-01-10T00:00:00Z",
    }


def _repo(root: Path, name: str, files: int = 2) -> Path:
    folder = root / name
    (folder / "sub").mkdir(parents=True)
    for i in range(files):
        (folder / "sub" / f"w{i}.bin").write_bytes(name.encode() * (100 + i))
    (folder / "config.json").write_text(json.dumps({"name": name}))
    return folder


def _models(path: Path, root: Path, names: list[str]) -> Path:
    path.write_text("".join(f"team/{n} source=file://{root / n}\n" for n in names))
    return path


def _repos(client: Any, bucket: str) -> set[str]:
    hub = "p/hub/"
    return {k[len(hub) :].split("/")[0] for k in objects(client, bucket) if k.startswith(hub)}


def test_emptied_models_file_cannot_prune_everything_without_force(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    env, client = s3_server.env(), s3_server.client()
    names = ["a", "b", "c"]
    for n in names:
        _repo(tmp_path, n)
    models = _models(tmp_path / "models.txt", tmp_path, names)
    assert run_refresh(models, bucket, env).returncode == 0
    before = objects(client, bucket)

    models.write_text("# emptied by mistake\n")
    early = run_refresh(models, bucket, env, "--prune", "--prune-after", "7d")  # not due: de-listed, and warned
    assert early.returncode == 0, early.stderr
    status_after_early = status(client, bucket)
    assert "models.txt de-lists 3 of 3 published repos; when due, that prune is refused without --force" in early.stderr
    plan = run_refresh(models, bucket, env, "--dry-run", "--prune", "--prune-after", "0s")
    assert plan.returncode == 0, plan.stderr
    assert "prune: a run would refuse: --prune would remove every published repo (3)" in plan.stdout
    assert "prune: ref models--team--a main" in plan.stdout
    result = run_refresh(models, bucket, env, "--prune", "--prune-after", "0s")
    assert result.returncode == 2, result.stderr
    assert "hf-cache: error: --prune would remove every published repo (3)" in result.stderr
    assert "Traceback" not in result.stderr
    assert {k for k in objects(client, bucket) if k.startswith("p/hub/")} == {
        k for k in before if k.startswith("p/hub/")
    }
    st = status(client, bucket)
    assert st["pruned"] == [] and "every published repo" in st["prune_refused"]
    assert len([k for k in st["delisted"] if k.startswith("ref:")]) == 3  # still counted as de-listed
    assert set(st["delisted"].values()) == set(status_after_early["delisted"].values())  # since first seen

    _models(models, tmp_path, ["a"])  # 2 of 3 repos dropped: above the default 50%
    result = run_refresh(models, bucket, env, "--prune", "--prune-after", "0s")
    assert result.returncode == 2 and "2 of 3 published repos (67%)" in result.stderr
    assert _repos(client, bucket) == {"models--team--a", "models--team--b", "models--team--c"}
    result = run_refresh(models, bucket, env, "--prune", "--prune-after", "0s", "--max-share", "60")
    assert result.returncode == 2 and "more than --max-share 60% allows" in result.stderr
    # --prune-max-share, refresh's old spelling of --max-share, still works (hidden) for existing CronJobs
    result = run_refresh(models, bucket, env, "--prune", "--prune-after", "0.5s", "--prune-max-share", "70")
    assert result.returncode == 0, result.stderr
    assert _repos(client, bucket) == {"models--team--a"}

    models.write_text("")
    result = run_refresh(models, bucket, env, "--prune", "--prune-after", "0s", "--force")
    assert result.returncode == 0, result.stderr
    assert _repos(client, bucket) == set()


def test_no_prune_in_a_run_where_a_repo_failed(s3_server: S3Server, bucket: str, tmp_path: Path, hub_server) -> None:
    env = {**s3_server.env(), "HF_ENDPOINT": hub_server.endpoint, "HF_HUB_ETAG_TIMEOUT": "5"}
    client = s3_server.client()
    for n in ("keep", "drop"):
        _repo(tmp_path, n)
    models = _models(tmp_path / "models.txt", tmp_path, ["keep", "drop"])
    assert run_refresh(models, bucket, env).returncode == 0
    models.write_text(f"team/keep source=file://{tmp_path / 'keep'}\norg/not-on-the-hub\n")
    result = run_refresh(models, bucket, env, "--prune", "--prune-after", "0s")
    assert result.returncode == 1 and "org/not-on-the-hub" in result.stderr
    assert _repos(client, bucket) == {"models--team--keep", "models--team--drop"}
    assert status(client, bucket)["pruned"] == []
    models.write_text(f"team/keep source=file://{tmp_path / 'keep'}\n")  # the failure fixed: now it prunes
    assert run_refresh(models, bucket, env, "--prune", "--prune-after", "0s").returncode == 0
    assert _repos(client, bucket) == {"models--team--keep"}


def test_apply_removes_refs_then_manifest_then_tree_then_files(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The order readers depend on, seen on the wire: each DELETE as the S3 server received it."""
    env, client = s3_server.env(), s3_server.client()
    for n in ("keep", "x", "y"):
        _repo(tmp_path, n)
    assert run_refresh(_models(tmp_path / "m.txt", tmp_path, ["keep", "x", "y"]), bucket, env).returncode == 0
    target = Target(client, bucket, "p")
    deleted: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        if "Key" in params:
            deleted.append(params["Key"])
        else:
            deleted.extend(o["Key"] for o in params["Delete"]["Objects"])

    client.meta.events.register("before-parameter-build.s3.DeleteObject", record)
    client.meta.events.register("before-parameter-build.s3.DeleteObjects", record)
    from hf_cache.refresh.prune import scan_published

    pub = scan_published(target)
    keep = "models--team--keep"
    due, _ = plan_prune(pub, {(keep, "main")}, {(keep, s) for s in pub.snapshots[keep]}, {}, NOW, timedelta(0))
    apply_prune(target, due)
    assert _repos(client, bucket) == {keep}

    def kind(key: str) -> str:
        return (
            "ref" if "/refs/" in key else "manifest" if "/manifests/" in key else "tree" if "/trees/" in key else "file"
        )

    kinds = [kind(k) for k in deleted]
    assert kinds[:2] == ["ref", "ref"], kinds  # every ref before any snapshot of any repo
    for folder in ("models--team--x", "models--team--y"):
        mine = [kind(k) for k in deleted if folder in k]
        assert mine[:3] == ["ref", "manifest", "tree"] and set(mine[3:]) == {"file"}, mine


def test_killed_at_every_prune_write_every_ref_still_resolves(
    s3_server: S3Server, s3_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL before each S3 write of a pruning run: every ref left points at a complete snapshot, and no manifest
    claims files that are gone (a later run would trust it and skip the upload)."""
    client = s3_server.client()
    for n in ("keep", "drop"):
        _repo(tmp_path, n)
    both = _models(tmp_path / "both.txt", tmp_path, ["keep", "drop"])
    keep_only = _models(tmp_path / "keep.txt", tmp_path, ["keep"])
    kills = 0
    for n in range(1, 30):
        bucket = s3_server.new_bucket("prunekill")
        assert run_refresh(both, bucket, s3_env).returncode == 0
        env = {**s3_env, "HFCACHE_TEST_KILL_AFTER": str(n)}
        result = run_refresh(keep_only, bucket, env, "--prune", "--prune-after", "0s")
        check_refs_complete(client, bucket)
        for key in objects(client, bucket):
            if "/manifests/" in key:
                manifest = json.loads(read(client, bucket, key))
                folder = key.split("/")[-2]
                for f in manifest["files"]:
                    assert f"p/hub/{folder}/snapshots/{manifest['sha']}/{f['path']}" in objects(client, bucket)
        if result.returncode == 0:
            break
        assert result.returncode < 0, result.stderr  # killed, not failed
        kills += 1
    else:
        raise AssertionError("the pruning run never completed")
    assert kills >= 4  # lease, ref, manifest, tree, files, status: each was a kill point
    assert _repos(client, bucket) == {"models--team--keep"}
