"""The repo grammar end to end, and acting on what verify finds: ad hoc refresh, verify --repair, rm, --json.

Real CLI in subprocesses, moto's S3 server and the Hub-compatible server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hf_cache import layout
from hf_cache.lab.hubserver import HubServer
from hf_cache.lab.s3server import S3Server
from tests.refresh_helpers import check_refs_complete, objects, read, run_cli, status


@pytest.fixture
def repo_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    d = tmp_path / "repo"
    shutil.copytree(tiny_model_dir, d)
    (d / "big.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB, an LFS file
    return d


def env_for(s3: S3Server, hub: HubServer) -> dict[str, str]:
    return {
        **s3.env(),
        "HF_ENDPOINT": hub.endpoint,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "10",
        "HF_TOKEN": "",
    }


def hf(env: dict[str, str], bucket: str, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli([command, "--bucket", bucket, "--prefix", "p", *args], env)


def test_ad_hoc_refresh_then_one_grammar_across_ls_verify_and_rm(
    s3_server: S3Server, bucket: str, hub_server: HubServer, repo_dir: Path, tmp_path: Path
) -> None:
    sha = hub_server.add_repo("org/tiny", repo_dir, revision_names=("main", "v1"))
    data_sha = hub_server.add_repo("team/data", repo_dir, repo_type="dataset")
    env = env_for(s3_server, hub_server)
    client = s3_server.client()
    # A scheduled run first, so the ad hoc one can be seen to leave its record alone.
    models = tmp_path / "models.txt"
    models.write_text("team/data type=dataset\n")
    scheduled = hf(env, bucket, "refresh", "--models", str(models))
    assert scheduled.returncode == 0, scheduled.stderr
    before = status(client, bucket)

    # The plan first, as JSON: what a run would upload, nothing written.
    plan = hf(env, bucket, "refresh", "org/tiny@v1", "--include", "*.json", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)["repos"][0]
    assert planned["repo"] == "org/tiny@v1" and planned["sha"] == sha and planned["ref_moves"]
    assert {f["path"] for f in planned["files"] if f["action"] == "upload"} == {
        p.name for p in repo_dir.iterdir() if p.name.endswith(".json")
    }
    assert not any("models--org--tiny" in k for k in objects(client, bucket))
    # Ad hoc, as `hf download` does: no models.txt edit, --include, recorded as ad hoc.
    adhoc = hf(env, bucket, "refresh", "org/tiny@v1", "--include", "*.json", "--json")
    assert adhoc.returncode == 0, adhoc.stderr
    summary = json.loads(adhoc.stdout)
    assert summary["ad_hoc"] and summary["repos"][0]["sha"] == sha and summary["repos"][0]["state"] == "ok"
    keys = objects(client, bucket)
    snap = f"p/hub/models--org--tiny/snapshots/{sha}/"
    assert {k[len(snap) :] for k in keys if k.startswith(snap)} == {
        p.name for p in repo_dir.iterdir() if p.name.endswith(".json")
    }
    assert read(client, bucket, "p/hub/models--org--tiny/refs/v1") == sha.encode()
    after = status(client, bucket)
    assert after["repos"] == before["repos"] and after["ended"] == before["ended"]  # the scheduled record is kept
    assert after["ad_hoc"][-1]["repos"][0]["repo"] == "org/tiny" and after["ad_hoc"][-1]["state"] == "ok"
    assert check_refs_complete(client, bucket) == 2
    again = hf(env, bucket, "refresh", "--models", str(models))  # the next scheduled run keeps the ad hoc record
    assert again.returncode == 0, again.stderr
    assert status(client, bucket)["ad_hoc"] == after["ad_hoc"]

    # ls prints the names every other command takes.
    rows = json.loads(hf(env, bucket, "ls", "--json").stdout)
    assert sorted(r["name"] for r in rows) == ["dataset:team/data", "org/tiny"]
    text = hf(env, bucket, "ls").stdout
    assert "dataset:team/data" in text
    for name in ("dataset:team/data", "org/tiny@v1", f"org/tiny@{sha}", f"dataset:team/data@{data_sha}"):
        result = hf(env, bucket, "verify", name, "--json")
        assert result.returncode == 0, (name, result.stderr)
        assert json.loads(result.stdout)["snapshots"] == 1 and json.loads(result.stdout)["problems"] == []
    one = hf(env, bucket, "verify", "org/tiny")
    assert "verified 1 snapshot," in one.stdout  # not "1 snapshots"
    # One repo, one spelling: a case-only match is an error naming the published spelling, for every command.
    for command in ("verify", "rm"):
        wrong = hf(env, bucket, command, "Org/Tiny")
        assert wrong.returncode == 2 and "published as org/tiny" in wrong.stderr, (command, wrong.stderr)
    wrong = hf(env, bucket, "refresh", "Org/Tiny")
    assert wrong.returncode == 2 and "published as org/tiny" in wrong.stderr
    assert not any("models--Org--Tiny" in k for k in objects(client, bucket))
    missing_ref = hf(env, bucket, "verify", "org/tiny@v9")
    assert missing_ref.returncode == 2 and "no ref 'v9'" in missing_ref.stderr

    # rm: refs first, then files; the last repo needs --force (prune's guard). --dry-run deletes nothing.
    keys_before = set(objects(client, bucket))
    dry = hf(env, bucket, "rm", "org/tiny@v1", "--dry-run")
    assert dry.returncode == 0 and "would remove ref org/tiny@v1" in dry.stdout, dry.stdout + dry.stderr
    assert set(objects(client, bucket)) == keys_before
    removed = hf(env, bucket, "rm", "org/tiny@v1", "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["actions"] == ["ref org/tiny@v1", f"snapshot org/tiny@{sha}"]
    assert not any(k.startswith("p/hub/models--org--tiny/") for k in objects(client, bucket))
    assert not any("manifests/models--org--tiny" in k for k in objects(client, bucket))
    last = hf(env, bucket, "rm", "dataset:team/data")
    assert last.returncode == 2 and "rm would remove 1 of 1 published repos" in last.stderr
    assert "Traceback" not in last.stderr
    assert check_refs_complete(client, bucket) == 1
    forced = hf(env, bucket, "rm", "dataset:team/data", "--force")
    assert forced.returncode == 0, forced.stderr
    assert not any(k.startswith("p/hub/") for k in objects(client, bucket))


def test_verify_repair_republishes_exactly_the_broken_files(
    s3_server: S3Server, bucket: str, hub_server: HubServer, repo_dir: Path, tmp_path: Path
) -> None:
    sha = hub_server.add_repo("org/tiny", repo_dir)
    env = env_for(s3_server, hub_server)
    client = s3_server.client()
    published = hf(env, bucket, "refresh", "org/tiny")
    assert published.returncode == 0, published.stderr
    assert "%|" not in published.stderr and "it/s" not in published.stderr, published.stderr  # no second bar
    snap = f"p/hub/models--org--tiny/snapshots/{sha}"
    client.put_object(Bucket=bucket, Key=f"{snap}/config.json", Body=b"{}")  # corrupt
    client.delete_object(Bucket=bucket, Key=f"{snap}/big.bin")  # missing
    found = hf(env, bucket, "verify", "org/tiny", "--json")
    assert found.returncode == 1
    problems = {(p["path"], p["problem"]) for p in json.loads(found.stdout)["problems"]}
    assert problems == {("config.json", "sha256 mismatch"), ("big.bin", "missing")}
    assert "verify --repair" in found.stderr

    hub_server.request_log.clear()
    repaired = hf(env, bucket, "verify", "org/tiny", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"REPAIRED org/tiny@{sha}: config.json (sha256 mismatch)" in repaired.stdout
    assert f"REPAIRED org/tiny@{sha}: big.bin (missing)" in repaired.stdout
    assert "all intact; repaired 2 files" in repaired.stdout
    downloads = {p.rsplit("/", 1)[1] for m, p in hub_server.request_log if m == "GET" and "/resolve/" in p}
    assert downloads == {"config.json", "big.bin"}  # exactly the broken files came from the Hub again
    assert check_refs_complete(client, bucket) == 1
    manifest = json.loads(read(client, bucket, layout.manifest_key("p", "org/tiny", "model", sha)))
    assert {f["path"] for f in manifest["files"]} == {
        p.relative_to(repo_dir).as_posix() for p in repo_dir.rglob("*") if p.is_file()
    }
    assert hf(env, bucket, "verify").returncode == 0


def test_refresh_progress_moves_with_bytes_during_one_upload_above_the_multipart_threshold(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    size = 210 * 1024 * 1024  # above the 200 MiB multipart threshold: 64 MiB parts
    with open(folder / "model.safetensors", "wb") as f:
        f.truncate(size)  # sparse: fast to make, no disk used
    models = tmp_path / "models.txt"
    models.write_text(f"team/big source=file://{folder}\n")
    env = {**s3_server.env(), "HFCACHE_PROGRESS_INTERVAL": "0.3"}
    try:
        result = run_cli(["refresh", "--models", str(models), "--bucket", bucket, "--prefix", "p"], env, timeout=300)
    finally:
        (folder / "model.safetensors").unlink()
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if "hf_cache.progress" in ln and "refresh:" in ln]
    during = [ln for ln in lines if "0/1 files" in ln and "/210.0 MiB" in ln and " 0 B/" not in ln]
    assert during, "\n".join(lines)  # bytes counted while the one file was still uploading, against the total
    assert any("ETA" in ln for ln in during)
    assert "1 file," in result.stdout  # "1 file", not "1 files"


def test_a_line_says_s3_is_being_retried_before_the_retries_give_up(s3_server: S3Server, bucket: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed: every connection is refused
    cmd = [sys.executable, "-m", "hf_cache", "ls", "--bucket", bucket, "--endpoint-url", f"http://127.0.0.1:{port}"]
    env = {**s3_server.env()}
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        seen = ""
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
            if "retrying in" in line:
                break
        assert "S3 did not answer or asked to slow down: retrying in" in seen, seen
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_demo_with_a_model_that_fails_shows_the_cause(hub_server: HubServer) -> None:
    env = {"HF_ENDPOINT": hub_server.endpoint, "HF_HUB_ETAG_TIMEOUT": "5", "HF_TOKEN": ""}
    result = run_cli(["demo", "--model", "org/no-such-model"], env, timeout=180)
    assert result.returncode == 1
    error = [ln for ln in result.stderr.splitlines() if ln.startswith("hf-cache: error:")]
    assert len(error) == 1, result.stderr
    assert "hf-cache refresh failed: org/no-such-model@main:" in error[0] and "not found" in error[0].lower()
    assert "['" not in error[0] and "Traceback" not in result.stderr


def test_doctor_and_warm_take_the_same_names_and_report_json(
    s3_server: S3Server, bucket: str, tmp_path: Path, repo_dir: Path, mounted
) -> None:
    models = tmp_path / "models.txt"
    models.write_text(f"team/ckpt source=file://{repo_dir}\nteam/data type=dataset source=file://{repo_dir}\n")
    assert hf(s3_server.env(), bucket, "refresh", "--models", str(models)).returncode == 0
    m = mounted(bucket=bucket, prefix="p")
    mp = ["--mountpoint", str(m.mountpoint)]
    names = [r["name"] for r in json.loads(hf(s3_server.env(), bucket, "ls", "--json").stdout)]
    assert sorted(names) == ["dataset:team/data", "team/ckpt"]
    # What ls prints, doctor and warm take (the dataset by its dataset: prefix, not a models.txt option).
    result = run_cli(["doctor", *mp, "--json", "dataset:team/data", "team/ckpt@main"], {})
    checks = [json.loads(line) for line in result.stdout.splitlines()]
    repos = {c["check"]: c for c in checks if c["check"].startswith("repo ")}
    assert set(repos) == {"repo dataset:team/data@main", "repo team/ckpt@main"}
    assert all(c["ok"] for c in repos.values()), checks
    warm = run_cli(["warm", *mp, "--json", "dataset:team/data"], {})
    assert warm.returncode == 0, warm.stderr
    doc = json.loads(warm.stdout)
    assert doc["snapshots"] == ["dataset:team/data@main"] and doc["files"] == len(list(repo_dir.rglob("*.*")))
    assert doc["problems"] == []
    one = run_cli(["warm", *mp, "team/ckpt"], {})
    assert one.returncode == 0 and "warmed 1 snapshot:" in one.stdout
    old = run_cli(["doctor", *mp, "team/data type=dataset"], {})
    assert old.returncode == 2 and "invalid repo id" in old.stderr and "Traceback" not in old.stderr
    missing = run_cli(["warm", *mp, "team/data"], {})  # the dataset named as a model
    assert missing.returncode == 1 and "team/data is not published" in missing.stderr


def test_on_a_terminal_refresh_draws_one_byte_bar(
    s3_server: S3Server, bucket: str, hub_server: HubServer, repo_dir: Path
) -> None:
    """stderr is a terminal (a pty): our bar, with bytes and total, and no per-file bar of huggingface_hub's."""
    import fcntl
    import pty
    import struct
    import termios

    hub_server.add_repo("org/tiny", repo_dir)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal 160 columns wide
    cmd = [sys.executable, "-m", "hf_cache", "refresh", "org/tiny", "--bucket", bucket, "--prefix", "p"]
    env = {**os.environ, **env_for(s3_server, hub_server)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the pty
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 0
    assert proc.stdout is not None and "ok      org/tiny@main" in proc.stdout.read()
    text = out.decode(errors="replace")
    frames = [f for f in text.replace("\n", "\r").split("\r") if f.strip()]
    assert any(f.startswith("refresh:") and "/2." in f and "B/s" in f for f in frames), frames
    assert not any(f.startswith(("config.json", "big.bin", "model.safetensors")) for f in frames), frames


def test_hub_download_bytes_are_counted_as_they_arrive(
    s3_server: S3Server, bucket: str, hub_server: HubServer, repo_dir: Path
) -> None:
    """A Hub file is downloaded, then uploaded: progress counts the download too (huggingface_hub's tqdm_class hook),
    so a long download is not a stalled line."""
    from hf_cache.progress import human_bytes

    hub_server.add_repo("org/tiny", repo_dir)
    total = sum(p.stat().st_size for p in repo_dir.rglob("*") if p.is_file())
    result = hf(env_for(s3_server, hub_server), bucket, "refresh", "org/tiny")
    assert result.returncode == 0, result.stderr
    done = next(ln for ln in result.stderr.splitlines() if "hf_cache.progress" in ln and "done in" in ln)
    shown = human_bytes(total)
    assert f"downloaded {shown}, {shown}/{shown}" in done, done
