"""hf-cache refresh end to end: the real CLI against the loopback Hub-compatible server and moto's S3 server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hf_cache import layout
from hf_cache.lab.hubserver import HubServer
from hf_cache.lab.s3server import S3Server
from tests.refresh_helpers import check_refs_complete, objects, read, run_cli, run_refresh, status

TOKEN = "hf_TopSecretToken4242"


@pytest.fixture
def repo_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    d = tmp_path / "repo"
    shutil.copytree(tiny_model_dir, d)
    (d / "sub").mkdir()
    (d / "sub" / "nested.txt").write_text("nested file\n")
    (d / "big.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB: an "LFS" file, multipart-free
    return d


def hub_env(s3: S3Server, hub: HubServer, token: str | None = None) -> dict[str, str]:
    env = {
        **s3.env(),
        "HF_ENDPOINT": hub.endpoint,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "10",
        "HF_TOKEN": token or "",
    }
    return env


def test_publishes_symlink_free_layout_then_noop_rerun(
    s3_server: S3Server, bucket: str, hub_server: HubServer, repo_dir: Path, tmp_path: Path
) -> None:
    sha = hub_server.add_repo("org/tiny", repo_dir, revision_names=("main", "v1"))
    local = tmp_path / "local"
    shutil.copytree(repo_dir, local)
    models = tmp_path / "models.txt"
    models.write_text(
        f"org/tiny\norg/tiny@v1 exclude=big.bin\norg/tiny@{sha}\nteam/ckpt source=file://{local}  # fine-tuned\n"
    )
    env = hub_env(s3_server, hub_server)
    result = run_refresh(models, bucket, env)
    assert result.returncode == 0, result.stderr

    client = s3_server.client()
    objs = objects(client, bucket)
    root = "p/hub/models--org--tiny"
    assert read(client, bucket, f"{root}/refs/main") == sha.encode()  # bare sha, no newline
    assert read(client, bucket, f"{root}/refs/v1") == sha.encode()
    assert not any("/blobs/" in k for k in objs)
    for path in ("config.json", "model.safetensors", "sub/nested.txt", "big.bin", "tokenizer.json"):
        assert read(client, bucket, f"{root}/snapshots/{sha}/{path}") == (repo_dir / path).read_bytes()
    tree = json.loads(read(client, bucket, f"{root}/trees/{sha}.json"))
    assert tree["format_version"] == 1 and tree["files"]["big.bin"]["lfs_sha256"]
    assert set(tree["files"]) == {p.relative_to(repo_dir).as_posix() for p in repo_dir.rglob("*") if p.is_file()}
    manifest = json.loads(read(client, bucket, layout.manifest_key("p", "org/tiny", "model", sha)))
    assert manifest["source"] == hub_server.endpoint and manifest["hf_cache_version"]
    assert {f["path"] for f in manifest["files"]} == set(tree["files"])
    local_sha = read(client, bucket, "p/hub/models--team--ckpt/refs/main").decode()
    assert layout.SHA_RE.match(local_sha)
    assert check_refs_complete(client, bucket) == 3
    st = status(client, bucket)
    assert st["state"] == "ok" and [r["state"] for r in st["repos"]] == ["ok"] * 4
    assert st["repos"][0]["bytes_uploaded"] > 0

    # Second run, nothing changed: no file bytes move, no object but status.json is rewritten.
    hub_server.request_log.clear()
    again = run_refresh(models, bucket, env)
    assert again.returncode == 0, again.stderr
    after = objects(client, bucket)
    changed = [
        k for k in after if after[k]["ETag"] != objs[k]["ETag"] or after[k]["LastModified"] != objs[k]["LastModified"]
    ]
    assert changed == ["p/hf-cache/status.json"]
    assert not [p for m, p in hub_server.request_log if "/resolve/" in p]
    st = status(client, bucket)
    assert all(r["bytes_uploaded"] == 0 and r["bytes_skipped"] > 0 for r in st["repos"])
    # The same local folder gives the same commit: deterministic.
    assert read(client, bucket, "p/hub/models--team--ckpt/refs/main").decode() == local_sha

    listing = run_cli(["ls", "--bucket", bucket, "--prefix", "p", "--json"], env)
    rows = json.loads(listing.stdout)
    assert {(r["repo"], tuple(r["refs"])) for r in rows} == {("org/tiny", ("main", "v1")), ("team/ckpt", ("main",))}
    assert run_cli(["verify", "--bucket", bucket, "--prefix", "p"], env).returncode == 0


def test_moved_ref_and_changed_local_folder_publish_new_snapshot(
    s3_server: S3Server, bucket: str, tmp_path: Path, repo_dir: Path
) -> None:
    models = tmp_path / "models.txt"
    models.write_text(f"team/ckpt source=file://{repo_dir}\n")
    env = s3_server.env()
    assert run_refresh(models, bucket, env).returncode == 0
    client = s3_server.client()
    first = read(client, bucket, "p/hub/models--team--ckpt/refs/main")
    (repo_dir / "config.json").write_text('{"changed": true}')
    result = run_refresh(models, bucket, env)
    assert result.returncode == 0, result.stderr
    second = read(client, bucket, "p/hub/models--team--ckpt/refs/main")
    assert second != first
    st = status(client, bucket)["repos"][0]
    # A new commit is a new snapshot folder, but unchanged bytes are copied inside S3, not sent again.
    assert (st["files"], st["files_uploaded"], st["files_copied"]) == (7, 1, 6)
    assert st["bytes_uploaded"] == len('{"changed": true}')
    assert first.decode() in {k.split("/")[4] for k in objects(client, bucket) if "/snapshots/" in k}
    assert check_refs_complete(client, bucket) == 1


def test_gated_repo_needs_token_and_token_never_leaks(
    s3_server: S3Server, bucket: str, hub_server: HubServer, repo_dir: Path, tmp_path: Path
) -> None:
    hub_server.add_repo("org/open", repo_dir)
    hub_server.add_repo("meta/gated", repo_dir, gated=True, token=TOKEN)
    models = tmp_path / "models.txt"
    models.write_text("meta/gated\norg/open\n")

    no_token = run_refresh(models, bucket, hub_env(s3_server, hub_server))
    assert no_token.returncode == 1
    assert "meta/gated@main: the repo is gated or private; set HF_TOKEN" in no_token.stdout + no_token.stderr
    client = s3_server.client()
    st = status(client, bucket)
    assert [r["state"] for r in st["repos"]] == ["failed", "ok"]  # one failure does not stop the others

    with_token = run_refresh(models, bucket, hub_env(s3_server, hub_server, TOKEN), "--verbose")
    assert with_token.returncode == 0, with_token.stderr
    assert check_refs_complete(client, bucket) == 2
    everything = with_token.stdout + with_token.stderr + read(client, bucket, "p/hf-cache/status.json").decode()
    everything += "".join(
        read(client, bucket, k).decode(errors="replace") for k in objects(client, bucket) if k.startswith("p/hf-cache/")
    )
    assert TOKEN not in everything

    wrong = run_refresh(models, bucket, hub_env(s3_server, hub_server, "hf_wrongwrongwrong"))
    assert "the token was refused" in wrong.stdout + wrong.stderr and "hf_wrongwrongwrong" not in wrong.stderr


def test_server_without_metadata_falls_back_to_head_and_corruption_fails_only_that_repo(
    s3_server: S3Server, bucket: str, hub_server: HubServer, repo_dir: Path, tmp_path: Path
) -> None:
    hub_server.set_omit_metadata(True)
    hub_server.add_repo("org/plain", repo_dir)
    hub_server.add_repo("org/broken", repo_dir)
    hub_server.corrupt("org/broken", "big.bin", b"\0" * (2 * 1024 * 1024))  # same size, other bytes
    models = tmp_path / "models.txt"
    models.write_text("org/broken\norg/plain\n")
    result = run_refresh(models, bucket, hub_env(s3_server, hub_server))
    assert result.returncode == 1
    assert "org/broken@main: big.bin sha256" in result.stdout + result.stderr
    client = s3_server.client()
    keys = objects(client, bucket)
    assert "p/hub/models--org--plain/refs/main" in keys
    assert "p/hub/models--org--broken/refs/main" not in keys  # never visible
    assert check_refs_complete(client, bucket) == 1


def test_hostile_file_names_are_refused(
    s3_server: S3Server, bucket: str, hub_server: HubServer, repo_dir: Path, tmp_path: Path
) -> None:
    hub_server.add_repo("org/evil", repo_dir)
    hub_server.add_hostile_path("org/evil", "../../escape.txt")
    models = tmp_path / "models.txt"
    models.write_text("org/evil\n")
    result = run_refresh(models, bucket, hub_env(s3_server, hub_server))
    assert result.returncode == 1 and "refusing unsafe file name '../../escape.txt'" in result.stdout + result.stderr
    assert not [k for k in objects(s3_server.client(), bucket) if "escape" in k or "/refs/" in k]


def test_invalid_models_file_publishes_nothing(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    models = tmp_path / "models.txt"
    models.write_text("org/fine\norg/bad--id\norg/x wat=1\n")
    result = run_refresh(models, bucket, s3_server.env())
    assert result.returncode == 2
    assert f"{models}:2:" in result.stderr and f"{models}:3:" in result.stderr
    assert "Traceback" not in result.stderr
    assert objects(s3_server.client(), bucket) == {}


def test_missing_bucket_is_one_clear_line(s3_server: S3Server, s3_env: dict[str, str], tmp_path: Path) -> None:
    models = tmp_path / "models.txt"
    models.write_text("org/x\n")
    result = run_refresh(models, "no-such-bucket-here", s3_server.env())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("hf-cache: error: bucket 'no-such-bucket-here'")


def test_second_concurrent_run_is_refused_by_the_lease(
    s3_server: S3Server, bucket: str, tmp_path: Path, repo_dir: Path
) -> None:
    from hf_cache.refresh.lease import Lease

    models = tmp_path / "models.txt"
    models.write_text(f"team/ckpt source=file://{repo_dir}\n")
    holder = Lease(s3_server.client(), bucket, "p", ttl=600)
    holder.acquire()
    try:
        result = run_refresh(models, bucket, s3_server.env())
        assert result.returncode == 1
        assert "another refresh is running" in result.stderr
        assert not [k for k in objects(s3_server.client(), bucket) if "/refs/" in k]
    finally:
        holder.release()
    assert run_refresh(models, bucket, s3_server.env()).returncode == 0


def test_expired_lease_of_a_killed_run_is_taken_over(s3_server: S3Server, bucket: str) -> None:
    from hf_cache.refresh.lease import Lease

    dead = Lease(s3_server.client(), bucket, "p", ttl=-1)  # as if its holder died long ago
    assert dead._create()
    fresh = Lease(s3_server.client(), bucket, "p", ttl=60)
    fresh.acquire()
    fresh.release()
    assert "p/hf-cache/lease.json" not in objects(s3_server.client(), bucket)


def test_prune_waits_for_prune_after_then_removes_refs_and_snapshots(
    s3_server: S3Server, bucket: str, tmp_path: Path, repo_dir: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(repo_dir, other)
    (other / "extra.txt").write_text("x")
    models = tmp_path / "models.txt"
    models.write_text(f"team/keep source=file://{repo_dir}\nteam/drop source=file://{other}\n")
    env = s3_server.env()
    assert run_refresh(models, bucket, env).returncode == 0
    client = s3_server.client()
    models.write_text(f"team/keep source=file://{repo_dir}\n")

    assert run_refresh(models, bucket, env, "--prune", "--prune-after", "1h").returncode == 0
    keys = objects(client, bucket)
    assert "p/hub/models--team--drop/refs/main" in keys  # de-listed, not yet due
    delisted = status(client, bucket)["delisted"]
    assert any("models--team--drop" in k for k in delisted)

    result = run_refresh(models, bucket, env, "--prune", "--prune-after", "0s")
    assert result.returncode == 0, result.stderr
    keys = objects(client, bucket)
    assert not [k for k in keys if "team--drop" in k]
    assert "p/hub/models--team--keep/refs/main" in keys
    assert check_refs_complete(client, bucket) == 1


def test_verify_detects_a_tampered_object(s3_server: S3Server, bucket: str, tmp_path: Path, repo_dir: Path) -> None:
    models = tmp_path / "models.txt"
    models.write_text(f"team/ckpt source=file://{repo_dir}\n")
    env = s3_server.env()
    assert run_refresh(models, bucket, env).returncode == 0
    client = s3_server.client()
    key = next(k for k in objects(client, bucket) if k.endswith("/config.json") and "/snapshots/" in k)
    client.put_object(Bucket=bucket, Key=key, Body=b"{}")
    result = run_cli(["verify", "--bucket", bucket, "--prefix", "p"], env)
    assert result.returncode == 1 and "config.json sha256 mismatch" in result.stdout


def test_dry_run_writes_nothing(s3_server: S3Server, bucket: str, tmp_path: Path, repo_dir: Path) -> None:
    models = tmp_path / "models.txt"
    models.write_text(f"team/ckpt source=file://{repo_dir} exclude=*.bin\norg/x@v2\n")
    result = run_refresh(models, bucket, s3_server.env(), "--dry-run")
    # A plan that cannot resolve an entry (no Hub reachable here) says so and exits 1, like the run would.
    assert result.returncode == 1
    assert (
        "team/ckpt@main: from local" in result.stdout
        and "org/x@v2: from https://huggingface.co: cannot resolve" in result.stdout
    )
    assert objects(s3_server.client(), bucket) == {}


def test_tree_listing_makes_offline_snapshot_download_refuse_an_incomplete_snapshot(
    s3_server: S3Server, bucket: str, tmp_path: Path, repo_dir: Path
) -> None:
    """With the published trees/<sha>.json, the installed huggingface_hub raises IncompleteSnapshotError for a
    snapshot that lost a file, instead of silently returning the partial folder."""
    import subprocess
    import sys

    models = tmp_path / "models.txt"
    models.write_text(f"team/ckpt source=file://{repo_dir}\n")
    assert run_refresh(models, bucket, s3_server.env()).returncode == 0
    client = s3_server.client()
    home = tmp_path / "home"
    for key in objects(client, bucket):
        if key.startswith("p/hub/"):
            dest = home / key[len("p/") :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(read(client, bucket, key))
    code = (
        "import json\nfrom huggingface_hub import snapshot_download\n"
        "try:\n print(json.dumps({'ok': snapshot_download('team/ckpt')}))\n"
        "except Exception as e:\n print(json.dumps({'error': type(e).__name__}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}

    def attempt() -> dict:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    complete = attempt()
    assert complete.get("ok", "").endswith(read(client, bucket, "p/hub/models--team--ckpt/refs/main").decode())
    next((home / "hub/models--team--ckpt/snapshots").glob("*/sub/nested.txt")).unlink()
    assert attempt() == {"error": "IncompleteSnapshotError"}
    next((home / "hub/models--team--ckpt/trees").glob("*.json")).unlink()
    assert "ok" in attempt()  # without the tree listing the partial folder would be returned silently
