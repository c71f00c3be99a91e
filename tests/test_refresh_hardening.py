"""Refresh under attack and at model scale (issue 9): hostile local folders, secrets in endpoints, one refused PUT,
corrupt status/manifests, objects overwritten in S3, files rewritten mid-run, files above the multipart threshold,
interrupted publishes, scratch use, multipart uploads left behind, and a dry run that is a real plan.

Everything runs the real CLI (or the real Publisher) against moto's S3 server and the Hub-compatible test server.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from hf_cache import layout
from hf_cache.lab.faultproxy import FaultProxy, Refuse
from hf_cache.lab.hubserver import HubServer
from hf_cache.lab.s3server import S3Server, via
from hf_cache.refresh.checksums import MULTIPART_THRESHOLD, PART_SIZE, b64_of_hex, composite, part_size_for
from hf_cache.refresh.plan import Action, Candidate, ObjectState, decide
from hf_cache.refresh.source import RepoFile
from tests.refresh_helpers import check_refs_complete, objects, read, run_cli, run_refresh, status

MiB = 1024 * 1024


@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    d = tmp_path / "repo"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"model_type": "gpt2", "n_layer": 2}\n')
    (d / "sub" / "nested.txt").write_text("nested file\n")
    (d / "weights.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    return d


def hub_env(s3: S3Server, hub: HubServer, token: str = "", endpoint: str | None = None) -> dict[str, str]:
    return {
        **s3.env(),
        "HF_ENDPOINT": endpoint or hub.endpoint,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "10",
        "HF_TOKEN": token,
    }


def everything_in(client, bucket: str) -> str:
    return "\n".join(read(client, bucket, k).decode(errors="replace") for k in objects(client, bucket))


# -- pure decisions ----------------------------------------------------------------------------------------------
def test_decide_leaves_copies_or_fetches_only_on_what_s3_vouches_for() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    f = RepoFile("a.bin", 1, sha, "blob")
    meta = {"sha256": sha, "blob-id": "blob"}
    good = ObjectState("k", 1, b64_of_hex(sha), meta)
    assert decide(f, good, None).action is Action.SKIP
    # Same size and metadata, but S3's checksum says other bytes (overwritten), or S3 keeps no checksum: fetch.
    other = b64_of_hex(hashlib.sha256(b"y").hexdigest())
    assert decide(f, ObjectState("k", 1, other, meta), None).action is Action.FETCH
    assert decide(f, ObjectState("k", 1, None, meta), None).action is Action.FETCH
    src = ObjectState("old/a.bin", 1, b64_of_hex(sha), meta)
    plan = decide(f, None, Candidate(src, sha, None, "blob"))
    assert (plan.action, plan.source_key) == (Action.COPY, "old/a.bin")
    tampered = decide(f, None, Candidate(ObjectState("old/a.bin", 1, other, meta), sha, None, "blob"))
    assert tampered.action is Action.FETCH and "cannot vouch" in tampered.reason
    # A multipart object is vouched for by the checksum recorded when its bytes were hashed.
    big = MULTIPART_THRESHOLD + 1
    comp = composite([b"1" * 32, b"2" * 32])
    bf = RepoFile("big.bin", big, sha, "blob")
    assert decide(bf, ObjectState("k", big, comp, {**meta, "s3-checksum": comp}), None).action is Action.SKIP
    assert decide(bf, ObjectState("k", big, comp, {**meta, "s3-checksum": "other-2"}), None).action is Action.FETCH
    # Small Hub files come with a git blob id only: our metadata maps it to the sha256 S3 vouches for.
    small = RepoFile("c.json", 1, None, "blob")
    assert decide(small, good, None).action is Action.SKIP
    assert decide(RepoFile("c.json", 1, None, "other"), good, None).action is Action.FETCH


def test_redaction_strips_url_userinfo_and_endpoint_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    from hf_cache.logs import redact, redact_url

    assert redact_url("http://user:pa55@mirror:8080/api?x=1") == "http://mirror:8080/api?x=1"
    assert redact_url("https://huggingface.co/org/x@main") == "https://huggingface.co/org/x@main"
    monkeypatch.setenv("HF_ENDPOINT", "http://me:s3cr%40t@mirror")
    said = redact("GET http://me:s3cr%40t@mirror/x failed; password s3cr@t; Authorization: Basic bWU6czNjcg==")
    assert "s3cr" not in said and "bWU6" not in said and "http://mirror/x" in said


def test_only_uploads_begun_before_this_run_are_stale() -> None:
    from datetime import UTC, datetime, timedelta

    from hf_cache.refresh.uploads import stale_uploads

    now = datetime.now(UTC)
    old = {"Key": "a", "Initiated": now - timedelta(hours=1)}
    new = {"Key": "b", "Initiated": now + timedelta(seconds=1)}
    assert stale_uploads([old, new], now) == [old]


def test_part_size_matches_s3_limits() -> None:
    assert part_size_for(300 * MiB) == PART_SIZE
    assert -(-(1024 * 1024 * MiB) // part_size_for(1024 * 1024 * MiB)) <= 10_000  # 1 TiB still fits 10,000 parts


# -- security: local folders -------------------------------------------------------------------------------------
def test_local_source_publishes_only_regular_files_inside_the_folder(
    s3_server: S3Server, bucket: str, tmp_path: Path, small_repo: Path
) -> None:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("root-only secret 7d1f3a\n")
    cases: dict[str, Path] = {}
    for name in ("link_out", "dir_link", "fifo", "devzero", "link_in", "badname"):
        d = tmp_path / name
        shutil.copytree(small_repo, d)
        cases[name] = d
    (cases["link_out"] / "leak.txt").symlink_to(secret)
    (cases["dir_link"] / "outside").symlink_to(secret.parent, target_is_directory=True)
    os.mkfifo(cases["fifo"] / "pipe")
    (cases["devzero"] / "zero.bin").symlink_to("/dev/zero")
    (cases["link_in"] / "alias.json").symlink_to(cases["link_in"] / "config.json")
    (cases["link_in"] / "dangling").symlink_to(cases["link_in"] / "gone")
    (cases["badname"] / os.fsdecode(b"caf\xe9.txt")).write_text("latin-1 name")
    models = tmp_path / "models.txt"
    models.write_text("".join(f"team/{name.replace('_', '-')} source=file://{d}\n" for name, d in cases.items()))
    t0 = time.monotonic()
    result = run_refresh(models, bucket, s3_server.env(), timeout=90)
    took = time.monotonic() - t0
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "Traceback" not in out
    assert took < 60, f"refresh took {took:.0f}s: something blocked on a FIFO or a device"
    client = s3_server.client()
    st = {r["repo"]: r for r in status(client, bucket)["repos"]}
    assert st["team/link-out"]["state"] == "failed"
    assert f"{cases['link_out'] / 'leak.txt'} is a link to {secret}, outside the source folder" in out
    assert st["team/dir-link"]["state"] == "failed"
    assert f"{cases['dir_link'] / 'outside'} is a link to {secret.parent}, outside the source folder" in out
    assert st["team/fifo"]["state"] == "failed" and f"{cases['fifo'] / 'pipe'} is a FIFO" in out
    assert st["team/devzero"]["state"] == "failed" and "zero.bin is a link to /dev/zero, outside" in out
    assert st["team/badname"]["state"] == "failed" and "is not UTF-8; rename it" in out
    # A link that stays inside the folder publishes its target's bytes; a dangling one is skipped.
    assert st["team/link-in"]["state"] == "ok"
    sha = st["team/link-in"]["sha"]
    alias = read(client, bucket, f"p/hub/models--team--link-in/snapshots/{sha}/alias.json")
    assert alias == (small_repo / "config.json").read_bytes()
    assert "root-only secret" not in everything_in(client, bucket)
    assert check_refs_complete(client, bucket) == 1


def test_root_filesystem_as_source_is_refused(tmp_path: Path) -> None:
    """models.txt validation refuses source=file:/// (exit 2); the source refuses it too, whoever calls it."""
    from hf_cache.errors import ConfigError, ModelsFileError
    from hf_cache.modelsfile import ModelEntry, parse_models_file
    from hf_cache.refresh.source import LocalSource

    models = tmp_path / "models.txt"
    models.write_text("team/root source=file:///\n")
    with pytest.raises(ModelsFileError):
        parse_models_file(str(models))
    entry = ModelEntry(repo_id="team/root", source=Path("/"))
    with pytest.raises(ConfigError, match="is the root filesystem"):
        LocalSource().resolve(entry)


# -- security: credentials ---------------------------------------------------------------------------------------
def test_endpoint_userinfo_and_token_never_reach_logs_status_or_s3(
    s3_server: S3Server, bucket: str, hub_server: HubServer, tmp_path: Path, small_repo: Path
) -> None:
    password, token = "Pa55w0rdZq9", "hf_EndToEndSecretToken77"
    hub_server.add_repo("org/open", small_repo)
    hub_server.add_repo("org/echo", small_repo)
    hub_server.echo_credentials_in_errors("org/echo")
    endpoint = hub_server.endpoint.replace("http://", f"http://mirror-user:{password}@")
    models = tmp_path / "models.txt"
    models.write_text("org/open\norg/echo\norg/missing\n")
    result = run_refresh(models, bucket, hub_env(s3_server, hub_server, token, endpoint), "--verbose")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    client = s3_server.client()
    st = {r["repo"]: r for r in status(client, bucket)["repos"]}
    assert st["org/open"]["state"] == "ok"
    # The echoing server put the credentials into the error text; what was recorded and printed has them masked.
    assert "upstream refused the request" in st["org/echo"]["error"] and "***" in st["org/echo"]["error"]
    assert f"repository not found at {hub_server.endpoint}" in out
    manifest = json.loads(read(client, bucket, layout.manifest_key("p", "org/open", "model", st["org/open"]["sha"])))
    assert manifest["source"] == hub_server.endpoint
    recorded = out + everything_in(client, bucket)
    for secret in (password, token, "mirror-user:"):
        assert secret not in recorded, f"{secret!r} leaked"


# -- one failure stays one failure -------------------------------------------------------------------------------
def test_s3_refusing_one_put_fails_only_that_repo(
    s3_server: S3Server, bucket: str, tmp_path: Path, small_repo: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(small_repo, other)
    (other / "extra.txt").write_text("x")
    models = tmp_path / "models.txt"
    models.write_text(f"team/bad source=file://{small_repo}\nteam/good source=file://{other}\n")
    rules = [Refuse("PUT", "models--team--bad/snapshots/", 403)]
    with FaultProxy(s3_server.endpoint, rules) as proxy:
        env = via(s3_server.env(), proxy.endpoint)
        result = run_refresh(models, bucket, env)
    out = result.stdout + result.stderr
    assert proxy.refused, "the proxy refused nothing: the test did not test anything"
    assert result.returncode == 1, out
    assert "Traceback" not in out
    assert "team/bad@main" in result.stderr and "AccessDenied" in out
    client = s3_server.client()
    st = status(client, bucket)
    assert [(r["repo"], r["state"]) for r in st["repos"]] == [("team/bad", "failed"), ("team/good", "ok")]
    assert "p/hub/models--team--bad/refs/main" not in objects(client, bucket)
    assert check_refs_complete(client, bucket) == 1


def test_corrupt_status_and_manifest_are_reported_and_replaced(
    s3_server: S3Server, bucket: str, tmp_path: Path, small_repo: Path
) -> None:
    models = tmp_path / "models.txt"
    models.write_text(f"team/ckpt source=file://{small_repo}\n")
    env = s3_server.env()
    assert run_refresh(models, bucket, env).returncode == 0
    client = s3_server.client()
    sha = status(client, bucket)["repos"][0]["sha"]
    mkey = layout.manifest_key("p", "team/ckpt", "model", sha)
    client.put_object(Bucket=bucket, Key="p/hf-cache/status.json", Body=b'{"repos": [{"re')  # truncated
    client.put_object(Bucket=bucket, Key=mkey, Body=b"\x00garbage")
    for cmd in (["ls", "--bucket", bucket, "--prefix", "p"], ["verify", "--bucket", bucket, "--prefix", "p"]):
        res = run_cli(cmd, env)
        assert "Traceback" not in res.stderr and "is corrupt" in res.stdout + res.stderr, res.stderr
    assert run_cli(["verify", "--bucket", bucket, "--prefix", "p"], env).returncode == 1
    result = run_refresh(models, bucket, env)
    assert result.returncode == 0, result.stderr
    assert "is not valid JSON" in result.stderr and "Traceback" not in result.stderr
    assert status(client, bucket)["state"] == "ok"
    assert json.loads(read(client, bucket, mkey))["complete"] is True
    assert run_cli(["verify", "--bucket", bucket, "--prefix", "p"], env).returncode == 0


# -- bytes we can vouch for --------------------------------------------------------------------------------------
def test_object_overwritten_in_s3_is_republished_and_never_copied(
    s3_server: S3Server, bucket: str, tmp_path: Path, small_repo: Path
) -> None:
    models = tmp_path / "models.txt"
    models.write_text(f"team/ckpt source=file://{small_repo}\n")
    env = s3_server.env()
    assert run_refresh(models, bucket, env).returncode == 0
    client = s3_server.client()
    sha = status(client, bucket)["repos"][0]["sha"]
    key = f"p/hub/models--team--ckpt/snapshots/{sha}/weights.bin"
    meta = client.head_object(Bucket=bucket, Key=key)["Metadata"]
    client.put_object(Bucket=bucket, Key=key, Body=b"\0" * MiB, Metadata=meta)  # same size, same metadata
    assert run_cli(["verify", "--bucket", bucket, "--prefix", "p"], env).returncode == 1

    rerun = run_refresh(models, bucket, env)
    assert rerun.returncode == 0, rerun.stderr
    assert "cannot vouch for weights.bin" in rerun.stderr
    st = status(client, bucket)["repos"][0]
    assert (st["files_uploaded"], st["bytes_uploaded"]) == (1, MiB)
    assert run_cli(["verify", "--bucket", bucket, "--prefix", "p"], env).returncode == 0

    # Overwritten again, then a new commit: the corrupt object must not be copied into the new snapshot.
    client.put_object(Bucket=bucket, Key=key, Body=b"\1" * MiB, Metadata=meta)
    (small_repo / "config.json").write_text('{"model_type": "gpt2", "n_layer": 3}\n')
    result = run_refresh(models, bucket, env)
    assert result.returncode == 0, result.stderr
    st = status(client, bucket)["repos"][0]
    assert st["files_copied"] == 1 and st["files_uploaded"] == 2  # nested.txt copied; weights.bin fetched again
    new = f"p/hub/models--team--ckpt/snapshots/{st['sha']}/weights.bin"
    assert read(client, bucket, new) == (small_repo / "weights.bin").read_bytes()


def test_local_file_rewritten_during_the_run_is_not_published_with_its_old_hash(
    s3_server: S3Server, bucket: str, tmp_path: Path, small_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer rewrites weights.bin (same size) after refresh hashed it and before it uploads it."""
    from hf_cache.modelsfile import parse_models_file
    from hf_cache.refresh.publish import Publisher
    from hf_cache.refresh.source import HubSource, LocalSource
    from hf_cache.refresh.store import Target

    real_fetch = LocalSource.fetch

    def fetch_then_rewrite(self, entry, snapshot, file, dest_dir, on_bytes=None):
        fetched = real_fetch(self, entry, snapshot, file, dest_dir, on_bytes)
        if file.path == "weights.bin":
            fetched.path.write_bytes(b"\7" * fetched.path.stat().st_size)
        return fetched

    monkeypatch.setattr(LocalSource, "fetch", fetch_then_rewrite)
    models = tmp_path / "models.txt"
    models.write_text(f"team/ckpt source=file://{small_repo}\n")
    (entry,) = parse_models_file(str(models))
    client = s3_server.client()
    publisher = Publisher(Target(client, bucket, "p"), HubSource(), tmp_path, workers=2)
    result = publisher.publish(entry)
    assert result.state == "failed", "published bytes other than the ones hashed"
    assert "weights.bin changed while it was being published" in (result.error or "")
    assert not [k for k in objects(client, bucket) if "/refs/" in k or "/manifests/" in k]


def test_copy_above_the_multipart_threshold_keeps_metadata_and_checksum(
    s3_server: S3Server, bucket: str, tmp_path: Path, small_repo: Path
) -> None:
    big = small_repo / "model.safetensors"
    size = MULTIPART_THRESHOLD + 3 * MiB + 17  # 4 parts of 64 MiB, the last one short
    with big.open("wb") as f:  # sparse, with distinct bytes in every part
        f.truncate(size)
        for off in range(0, size, PART_SIZE):
            f.seek(off)
            f.write(os.urandom(4096))
    try:
        models = tmp_path / "models.txt"
        models.write_text(f"team/big source=file://{small_repo}\n")
        env = s3_server.env()
        first = run_refresh(models, bucket, env, timeout=300)
        assert first.returncode == 0, first.stderr
        client = s3_server.client()
        (small_repo / "config.json").write_text('{"model_type": "gpt2", "n_layer": 4}\n')
        # S3 refuses one part of the multipart copy: that repo fails, and the copy's upload is aborted, not left.
        with FaultProxy(s3_server.endpoint, [Refuse("PUT", ("model.safetensors?", "partNumber=2"), 403)]) as proxy:
            penv = via(env, proxy.endpoint)
            refused = run_refresh(models, bucket, penv, timeout=300)
        assert proxy.refused and refused.returncode == 1, refused.stderr
        assert "Traceback" not in refused.stderr
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        second = run_refresh(models, bucket, env, timeout=300)
        assert second.returncode == 0, second.stderr
        st = status(client, bucket)["repos"][0]
        # The big file is copied; the small ones landed in the refused run and are left (resumed, not re-sent).
        assert st["files_uploaded"] == 0 and st["bytes_copied"] >= size
        key = f"p/hub/models--team--big/snapshots/{st['sha']}/model.safetensors"
        head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        sha256 = hashlib.sha256()
        with big.open("rb") as f:
            while chunk := f.read(8 * MiB):
                sha256.update(chunk)
        assert head["ContentLength"] == size and head["Metadata"]["sha256"] == sha256.hexdigest()
        assert head["ChecksumSHA256"].split("-")[0] == head["Metadata"]["s3-checksum"].split("-")[0]
        # A third run, nothing changed: nothing moves, and the copied object is vouched for.
        third = run_refresh(models, bucket, env, timeout=300)
        assert third.returncode == 0 and status(client, bucket)["repos"][0]["bytes_uploaded"] == 0
    finally:
        big.unlink(missing_ok=True)
        for k in objects(s3_server.client(), bucket):
            s3_server.client().delete_object(Bucket=bucket, Key=k)


# -- verification, resumption, scratch ---------------------------------------------------------------------------
def test_small_file_with_wrong_git_blob_id_fails_that_repo(
    s3_server: S3Server, bucket: str, hub_server: HubServer, tmp_path: Path, small_repo: Path
) -> None:
    hub_server.add_repo("org/blob", small_repo)
    good = (small_repo / "config.json").read_bytes()
    hub_server.corrupt("org/blob", "config.json", good.replace(b"2", b"3"))  # same size, other bytes
    models = tmp_path / "models.txt"
    models.write_text("org/blob\n")
    result = run_refresh(models, bucket, hub_env(s3_server, hub_server))
    assert result.returncode == 1
    assert "org/blob@main: config.json git blob id" in result.stdout + result.stderr
    assert not [k for k in objects(s3_server.client(), bucket) if "/refs/" in k]


def test_resuming_a_half_published_snapshot_does_not_send_files_again(
    s3_server: S3Server, bucket: str, hub_server: HubServer, tmp_path: Path
) -> None:
    repo = tmp_path / "shards"
    repo.mkdir()
    for i in range(6):
        (repo / f"shard-{i}.bin").write_bytes(bytes([i]) * (2 * MiB))
    hub_server.add_repo("org/shards", repo)
    models = tmp_path / "models.txt"
    models.write_text("org/shards\n")
    env = hub_env(s3_server, hub_server)
    killed = run_refresh(models, bucket, {**env, "HFCACHE_TEST_KILL_AFTER": "4"})  # the lease, then some files
    assert killed.returncode == -signal.SIGKILL
    client = s3_server.client()
    there = [k for k in objects(client, bucket) if "/snapshots/" in k]
    assert 1 <= len(there) < 6
    client.delete_object(Bucket=bucket, Key="p/hf-cache/lease.json")  # the killed run's lease
    hub_server.request_log.clear()
    result = run_refresh(models, bucket, env)
    assert result.returncode == 0, result.stderr
    st = status(client, bucket)["repos"][0]
    assert st["files_uploaded"] == 6 - len(there) and st["bytes_skipped"] == len(there) * 2 * MiB
    downloaded = {p.rsplit("/", 1)[-1] for m, p in hub_server.request_log if m == "GET" and "/resolve/" in p}
    assert downloaded.isdisjoint({k.rsplit("/", 1)[-1] for k in there})
    assert check_refs_complete(client, bucket) == 1


def test_scratch_holds_at_most_workers_times_the_largest_file(
    s3_server: S3Server, bucket: str, hub_server: HubServer, tmp_path: Path
) -> None:
    repo = tmp_path / "many"
    repo.mkdir()
    for i in range(8):
        (repo / f"part-{i}.bin").write_bytes(bytes([i]) * (3 * MiB))
    hub_server.add_repo("org/many", repo)
    models = tmp_path / "models.txt"
    models.write_text("org/many\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            total = 0
            for dirpath, _, names in os.walk(scratch):
                for n in names:
                    with contextlib.suppress(FileNotFoundError):
                        total += os.lstat(os.path.join(dirpath, n)).st_size
            peak[0] = max(peak[0], total)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = run_refresh(models, bucket, hub_env(s3_server, hub_server), "--scratch-dir", str(scratch))
    finally:
        stop.set()
        sampler.join()
    assert result.returncode == 0, result.stderr
    workers, largest = 2, 3 * MiB  # run_refresh passes --workers 2
    assert peak[0] > 0, "the sampler never saw a download: the test measured nothing"
    assert peak[0] <= workers * largest + 64 * 1024, f"scratch peaked at {peak[0]} bytes"
    assert list(scratch.iterdir()) == []


def test_multipart_uploads_left_by_a_dead_run_are_aborted(
    s3_server: S3Server, bucket: str, tmp_path: Path, small_repo: Path
) -> None:
    client = s3_server.client()
    stale = client.create_multipart_upload(Bucket=bucket, Key="p/hub/models--team--x/snapshots/abc/big.bin")
    outside = client.create_multipart_upload(Bucket=bucket, Key="other-prefix/big.bin")
    models = tmp_path / "models.txt"
    models.write_text(f"team/ckpt source=file://{small_repo}\n")
    result = run_refresh(models, bucket, s3_server.env())
    assert result.returncode == 0, result.stderr
    left = {u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    assert stale["UploadId"] not in left
    assert outside["UploadId"] in left  # not ours: another prefix
    client.abort_multipart_upload(Bucket=bucket, Key="other-prefix/big.bin", UploadId=outside["UploadId"])


def test_dry_run_prints_the_real_plan_and_writes_nothing(
    s3_server: S3Server, bucket: str, tmp_path: Path, small_repo: Path
) -> None:
    models = tmp_path / "models.txt"
    models.write_text(f"team/ckpt source=file://{small_repo}\n")
    env = s3_server.env()
    assert run_refresh(models, bucket, env).returncode == 0
    client = s3_server.client()
    old_sha = status(client, bucket)["repos"][0]["sha"]
    before = {k: o["ETag"] for k, o in objects(client, bucket).items()}
    (small_repo / "config.json").write_text('{"model_type": "gpt2", "n_layer": 5, "pad": 0}\n')
    size = (small_repo / "config.json").stat().st_size
    result = run_refresh(models, bucket, env, "--dry-run", "--prune", "--prune-after", "0s")
    assert result.returncode == 0, result.stderr
    head = result.stdout.splitlines()[0]
    assert "(moves)" in head and f"upload 1 file ({size} B)" in head, result.stdout
    assert "copy 2 files (1.0 MiB)" in head and "leave 0 files" in head
    assert f"  upload config.json ({size} B)" in result.stdout
    assert f"prune: snapshot models--team--ckpt {old_sha}" in result.stdout  # the ref moves off it, due at once
    assert {k: o["ETag"] for k, o in objects(client, bucket).items()} == before


def test_s3_checksum_of_a_multipart_object_is_the_composite_publish_computes(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The expected checksum of a >= threshold file must equal what S3 computes for our multipart upload."""
    from boto3.s3.transfer import TransferConfig

    from hf_cache.refresh.checksums import hash_fd

    path = tmp_path / "f.bin"
    size = 3 * 5 * MiB + 123
    path.write_bytes(os.urandom(size))
    part = 5 * MiB
    digests = [hashlib.sha256(path.read_bytes()[i : i + part]).digest() for i in range(0, size, part)]
    client = s3_server.client()
    client.upload_file(
        str(path),
        bucket,
        "f",
        ExtraArgs={"ChecksumAlgorithm": "SHA256"},
        Config=TransferConfig(multipart_threshold=part, multipart_chunksize=part),
    )
    got = client.head_object(Bucket=bucket, Key="f", ChecksumMode="ENABLED")["ChecksumSHA256"]
    assert got.split("-")[0] == composite(digests).split("-")[0]
    fd = os.open(path, os.O_RDONLY)
    try:
        d = hash_fd(fd)
    finally:
        os.close(fd)
    assert d.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and d.size == size
    assert base64.b64decode(d.s3_checksum) == hashlib.sha256(path.read_bytes()).digest()  # below the threshold
