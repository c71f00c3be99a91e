"""The node tier end to end: real refresh, real rclone mount2 on moto, the real supervisor with ``--tier-dir``.

The tier is a standard Hugging Face cache on local disk whose snapshot entries are relative symlinks: to a local
verified blob (hot) or into the rclone mount (cold).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from hf_cache.lab.s3server import S3Server
from hf_cache.node import evict as ev
from tests.node_helpers import is_hot, mount_tier, publish, wait_for
from tests.refresh_helpers import run_cli

REPO = "models--org--m"


def make_repo(folder: Path, big_mib: int = 0) -> dict[str, bytes]:
    files = {
        "config.json": b'{"model_type": "gpt2"}',
        "weights.bin": os.urandom(3 * 1024 * 1024 + 17),
        "nested/deeper/notes.txt": b"nested file",
        "same-a.txt": b"identical bytes",
        "same-b.txt": b"identical bytes",
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    if big_mib:
        with open(folder / "big.safetensors", "wb") as f:  # above refresh's 200 MiB multipart threshold
            chunk = os.urandom(1024 * 1024)
            for i in range(big_mib):
                f.write(chunk[:-8] + i.to_bytes(8, "big"))
    return files


def snapshot(root: Path) -> Path:
    sha = (root / "hub" / REPO / "refs" / "main").read_text()
    return root / "hub" / REPO / "snapshots" / sha


def test_tier_builds_the_hf_layout_and_promotes_what_the_node_read(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = make_repo(src)
    publish(s3_server, bucket, src)
    root = tmp_path / "node"
    m = mount_tier(s3_server, bucket, root)
    try:
        wait_for("refs/main in the tier", lambda: (root / "hub" / REPO / "refs" / "main").is_file(), mount=m)
        snap = snapshot(root)
        assert (root / "hub" / REPO / "trees" / f"{snap.name}.json").is_file()
        for rel in files:
            link = snap / rel
            target = os.readlink(link)
            assert not target.startswith("/"), target  # relative: resolves wherever a pod mounts the node folder
            assert not is_hot(link) and "/mnt/hub/" in target
            assert os.path.realpath(link).startswith(str(root) + "/")
        assert (snap / "config.json").read_bytes() == files["config.json"]  # cold read, through the mount
        wait_for("config.json hot", lambda: is_hot(snap / "config.json"), mount=m)
        blob = root / "hub" / REPO / "blobs" / hashlib.sha256(files["config.json"]).hexdigest()
        assert os.path.realpath(snap / "config.json") == str(blob) and blob.read_bytes() == files["config.json"]
        assert not is_hot(snap / "weights.bin")  # nothing read it
        assert (snap / "same-a.txt").read_bytes() == files["same-a.txt"]
        wait_for("both links of one blob hot", lambda: is_hot(snap / "same-a.txt") and is_hot(snap / "same-b.txt"))
        metrics = m.metrics()
        assert metrics["hfcache_node_promoted_total"] >= 2 and metrics["hfcache_node_promote_refused_total"] == 0
        assert metrics["hfcache_node_hot_files"] == 2
    finally:
        m.stop()


def test_corrupt_object_in_s3_is_never_promoted(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_repo(src)
    publish(s3_server, bucket, src)
    client = s3_server.client()
    key = next(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"] if o["Key"].endswith("/weights.bin"))
    bad = bytearray(files["weights.bin"])
    bad[1_000_000] ^= 0xFF  # one flipped byte, same size
    client.put_object(Bucket=bucket, Key=key, Body=bytes(bad))
    root = tmp_path / "node"
    m = mount_tier(s3_server, bucket, root)
    try:
        wait_for("refs/main in the tier", lambda: (root / "hub" / REPO / "refs" / "main").is_file(), mount=m)
        snap = snapshot(root)
        (snap / "weights.bin").read_bytes()  # the cold path serves what S3 has
        (snap / "config.json").read_bytes()
        wait_for("config.json hot", lambda: is_hot(snap / "config.json"), mount=m)
        wait_for("refusal counted", lambda: m.metrics()["hfcache_node_promote_refused_total"] >= 1, mount=m)
        time.sleep(2)  # more ticks: still refused, not retried on the same bytes
        assert not is_hot(snap / "weights.bin")
        assert m.metrics()["hfcache_node_promote_refused_total"] == 1
        assert not any(p.read_bytes() == bytes(bad) for p in (root / "hub" / REPO / "blobs").iterdir())
        assert "not promoted" in m.log() and "weights.bin" in m.log()
    finally:
        m.stop()


READER = """
import sys, time
paths, until = sys.argv[1:-1], float(sys.argv[-1])
reads = fails = 0
while time.time() < until:
    for p in paths:
        try:
            with open(p, "rb") as f:
                f.read()
            reads += 1
        except OSError as exc:
            fails += 1
            print("FAIL", p, exc, file=sys.stderr)
print(reads, fails)
"""


def test_kill_9_of_rclone_hot_files_never_fail_cold_files_heal(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = make_repo(src)
    publish(s3_server, bucket, src)
    root = tmp_path / "node"
    m = mount_tier(s3_server, bucket, root)
    try:
        wait_for("refs/main in the tier", lambda: (root / "hub" / REPO / "refs" / "main").is_file(), mount=m)
        snap = snapshot(root)
        hot = [snap / "config.json", snap / "weights.bin"]
        for p in hot:
            p.read_bytes()
        wait_for("files hot", lambda: all(is_hot(p) for p in hot), mount=m)
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, *map(str, hot), str(time.time() + 6)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)
        os.kill(m.rclone_pid(), signal.SIGKILL)
        killed = time.monotonic()
        out, err = reader.communicate(timeout=30)
        reads, fails = map(int, out.split())
        assert fails == 0 and reads > 10, err
        wait_for(
            "cold file readable after the self-heal",
            lambda: _reads(snap / "nested/deeper/notes.txt") == files["nested/deeper/notes.txt"],
            timeout=30,
            mount=m,
        )
        healed = time.monotonic() - killed
        assert healed < 30 and m.metrics()["hfcache_rclone_restarts_total"] >= 1
        print(f"{reads} hot reads, {fails} failed; cold file readable {healed:.1f}s after the kill")
        os.killpg(m.proc.pid, signal.SIGKILL)  # the whole DaemonSet container: supervisor, agent and rclone
        m.proc.wait(timeout=10)
        assert [p.read_bytes() for p in hot] == [files["config.json"], files["weights.bin"]]
    finally:
        m.stop()


def _reads(p: Path) -> bytes | None:
    try:
        return p.read_bytes()
    except OSError:
        return None


def test_one_cap_for_hot_tier_and_rclone_cache_holds_while_promoting(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Eight 2 MiB files read with a 12 MiB node cap, rclone's own LRU limit 3 MiB of it. Sampled every 20 ms all
    along, blobs being written included: the tier never takes rclone's share, so hot tier + rclone cache stay under
    the cap but for rclone's own overshoot between its eviction polls. Evicted entries point back into the mount and
    still read."""
    src = tmp_path / "src"
    src.mkdir()
    data = {f"shard-{i}.bin": os.urandom(2 * 1024 * 1024) for i in range(8)}
    for name, b in data.items():
        (src / name).write_bytes(b)
    publish(s3_server, bucket, src)
    root = tmp_path / "node"
    cache = tmp_path / "node-rclone-cache"
    cap, rclone_cap = 12 * 1024 * 1024, 3 * 1024 * 1024
    m = mount_tier(s3_server, bucket, root, "--cache-poll", "1s", cache_max="12M")
    worst = {"tier": 0, "total": 0, "rclone_over": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            tier = ev.usage(root / "hub") + ev.usage(root / ".hf-cache-node")  # blobs + blobs being written
            rclone = ev.usage(cache / "vfs")
            worst["tier"] = max(worst["tier"], tier)
            worst["total"] = max(worst["total"], tier + rclone)
            worst["rclone_over"] = max(worst["rclone_over"], rclone - rclone_cap)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        wait_for("refs/main in the tier", lambda: (root / "hub" / REPO / "refs" / "main").is_file(), mount=m)
        snap = snapshot(root)
        sampler.start()
        for name, b in data.items():
            assert (snap / name).read_bytes() == b
            wait_for(f"{name} hot", lambda n=name: is_hot(snap / n), mount=m)
        time.sleep(3)  # rclone's poll (1 s) + its handle window
        stop.set()
        sampler.join()
        metrics = m.metrics()
        assert metrics["hfcache_node_evicted_total"] >= 2
        assert metrics["hfcache_node_cap_bytes"] == cap
        assert worst["tier"] + rclone_cap <= cap, worst
        assert worst["total"] <= cap + max(0, worst["rclone_over"]), worst
        cold = [n for n in data if not is_hot(snap / n)]
        assert cold, "something must have been evicted"
        for name in data:  # evicted ones read again through the mount
            assert (snap / name).read_bytes() == data[name]
        print(
            f"worst: tier {worst['tier'] / 2**20:.1f} MiB, tier+rclone {worst['total'] / 2**20:.1f} MiB, rclone over "
            f"its own limit {worst['rclone_over'] / 2**20:.1f} MiB; cap {cap / 2**20:.0f} MiB"
        )
    finally:
        stop.set()
        m.stop()


def test_a_file_above_every_size_threshold_is_promoted_verified(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """210 MiB: above refresh's 200 MiB multipart threshold, the promote block (8 MiB) and fetch segment (64 MiB)."""
    src = tmp_path / "src"
    make_repo(src, big_mib=210)
    want = hashlib.sha256((src / "big.safetensors").read_bytes()).hexdigest()
    publish(s3_server, bucket, src)
    (src / "big.safetensors").unlink()
    root = tmp_path / "node"
    m = mount_tier(s3_server, bucket, root)
    try:
        wait_for("refs/main in the tier", lambda: (root / "hub" / REPO / "refs" / "main").is_file(), mount=m)
        snap = snapshot(root)
        with open(snap / "big.safetensors", "rb") as f:
            f.read(1024 * 1024)  # the node read a part: the agent fetches the rest through the mount
        wait_for("big file hot", lambda: is_hot(snap / "big.safetensors"), timeout=120, mount=m)
        h = hashlib.sha256()
        with open(snap / "big.safetensors", "rb") as f:
            while b := f.read(8 * 1024 * 1024):
                h.update(b)
        assert h.hexdigest() == want
    finally:
        m.stop()


def test_warm_makes_a_snapshot_hot_and_node_ls_shows_it(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_repo(src)
    publish(s3_server, bucket, src)
    root = tmp_path / "node"
    m = mount_tier(s3_server, bucket, root)
    try:
        wait_for("refs/main in the tier", lambda: (root / "hub" / REPO / "refs" / "main").is_file(), mount=m)
        snap = snapshot(root)
        before = run_cli(["node", "ls", "--tier-dir", str(root)], {})
        assert before.returncode == 0, before.stderr
        assert f"org/m@{snap.name[:12]} (main): hot 0 files 0 B, cold 5 files" in before.stdout
        warmed = run_cli(["warm", "org/m"], {"HFCACHE_MOUNTPOINT": str(root / "mnt")})
        assert warmed.returncode == 0, warmed.stderr
        wait_for("every file hot after warm", lambda: all(is_hot(snap / rel) for rel in files), mount=m)
        after = run_cli(["node", "ls", "--tier-dir", str(root), "--json"], {})
        (row,) = [json.loads(line) for line in after.stdout.splitlines()]
        assert row["hot_files"] == 5 and row["cold_files"] == 0 and row["refs"] == ["main"]
        assert row["hot_bytes"] == sum(len(b) for b in files.values())
        for rel, data in files.items():
            assert (snap / rel).read_bytes() == data
    finally:
        m.stop()


def test_tier_that_does_not_contain_the_mountpoint_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cli(
        ["mount", "--bucket", "b", "--mountpoint", str(tmp_path / "mnt"), "--tier-dir", str(tmp_path / "tier")], {}
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("hf-cache: error: --tier-dir") and "must be inside it" in result.stderr
    result = run_cli(["node", "ls", "--tier-dir", str(tmp_path)], {})
    assert result.returncode == 2 and "is not a node tier" in result.stderr


def test_a_moved_ref_reaches_the_tier_within_the_freshness_bound(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Refresh publishes a new commit: the tier's refs/main names it within a few seconds (mount --freshness 1 s,
    then the agent's sync every --freshness), and only once its snapshot is built; the old snapshot still reads."""
    src = tmp_path / "src"
    files = make_repo(src)
    publish(s3_server, bucket, src)
    root = tmp_path / "node"
    m = mount_tier(s3_server, bucket, root)
    try:
        ref = root / "hub" / REPO / "refs" / "main"
        wait_for("refs/main in the tier", ref.is_file, mount=m)
        old = ref.read_text()
        (src / "config.json").write_bytes(b'{"model_type": "gpt2", "v": 2}')
        publish(s3_server, bucket, src)
        published = time.monotonic()
        wait_for("the new commit in the tier", lambda: ref.read_text() != old, timeout=30, mount=m)
        took = time.monotonic() - published
        new = ref.read_text()
        assert (root / "hub" / REPO / "snapshots" / new / "config.json").read_bytes().endswith(b'"v": 2}')
        assert (root / "hub" / REPO / "trees" / f"{new}.json").is_file()
        assert (root / "hub" / REPO / "snapshots" / old / "config.json").read_bytes() == files["config.json"]
        assert took < 10, f"ref reached the tier {took:.1f}s after the refresh"
        print(f"moved ref in the tier {took:.1f}s after the refresh ended")
    finally:
        m.stop()


def test_doctor_explains_the_tier_in_a_pod_environment(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    """HF_HOME is the tier (as `hf-cache env` sets it in a job pod): doctor says what is hot and cold, checks the
    rclone mount below it (not HF_HOME, which is a plain folder now), and resolves repos in the tier."""
    from hf_cache.readers.envvars import reader_env

    src = tmp_path / "src"
    make_repo(src)
    publish(s3_server, bucket, src)
    root = tmp_path / "node"
    m = mount_tier(s3_server, bucket, root)
    try:
        wait_for("refs/main in the tier", lambda: (root / "hub" / REPO / "refs" / "main").is_file(), mount=m)
        snap = snapshot(root)
        (snap / "config.json").read_bytes()
        wait_for("config.json hot", lambda: is_hot(snap / "config.json"), mount=m)
        pod = {**reader_env(str(root)), "HFCACHE_MOUNTPOINT": str(root)}
        result = run_cli(["doctor", "org/m"], pod)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert any(ln.startswith(f"[ok] tier: {root} is this node's tier: 1 files hot") for ln in lines), lines
        assert any(ln.startswith(f"[ok] mount: {root / 'mnt'} is a live FUSE mount") for ln in lines), lines
        assert any(ln.startswith("[ok] repo org/m") and "complete" in ln for ln in lines), lines
    finally:
        m.stop()


def test_a_starting_node_fills_its_tier_at_once_not_after_the_freshness_interval(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The agent starts before rclone has mounted: it syncs as soon as the mount is there, not a --freshness (30 s,
    the default) later, so pods starting with the node find their models."""
    src = tmp_path / "src"
    make_repo(src)
    publish(s3_server, bucket, src)
    root = tmp_path / "node"
    m = mount_tier(s3_server, bucket, root, "--freshness", "30s")
    try:
        took = wait_for("refs/main in the tier", lambda: (root / "hub" / REPO / "refs" / "main").is_file(), mount=m)
        assert took < 10, took
    finally:
        m.stop()
