"""Warm reads through HF_HOME at the node tier vs local files, in one run (issue 12's goals).

    python3 -m benchmarks.tier [--big-mb 2000] [--layers 12] [--embd 1024] [--rounds 3]

Publishes a multi-GB file and a safetensors GPT-2 to a loopback S3 server (``rclone serve s3``: ranges from disk),
runs ``hf-cache mount --tier-dir``, warms both repos with ``hf-cache warm`` and waits until the tier has promoted
every file. Then, each in a fresh process, alternating, median of ``--rounds``: (1) read() of the big file through
HF_HOME (the tier's symlink to a local blob) vs the same bytes from a local copy, both with a hot page cache, and
through the rclone mount for reference; (2) ``from_pretrained`` with HF_HOME at the tier vs from a local folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import read_in_subprocess, s3, start_mount, write_random
from benchmarks.load import load, make_model
from hf_cache.readers.envvars import reader_env

SHA_BIG, SHA_MODEL = "b" * 40, "c" * 40


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while b := f.read(16 << 20):
            h.update(b)
    return h.hexdigest()


def publish(client, bucket: str, repo: str, sha: str, folder: Path) -> list[Path]:  # type: ignore[no-untyped-def]
    """The published layout by hand (rclone serve s3 keeps no SHA-256 checksums, which refresh requires)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    entries = []
    for p in files:
        rel = p.relative_to(folder).as_posix()
        client.upload_file(str(p), bucket, f"hub/{repo}/snapshots/{sha}/{rel}")
        entries.append({"path": rel, "size": p.stat().st_size, "sha256": sha256(p)})
    client.put_object(Bucket=bucket, Key=f"hf-cache/manifests/{repo}/{sha}.json", Body=json.dumps({"files": entries}))
    client.put_object(Bucket=bucket, Key=f"hub/{repo}/refs/main", Body=sha.encode())
    return files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-mb", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--embd", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-tier-"))
    try:
        big_dir, model = work / "big", work / "model"
        write_random(big_dir / "big.bin", args.big_mb * 1_000_000)
        size = make_model(model, args.layers, args.embd)
        with s3("rclone") as server:
            client = server.client()
            bucket = server.new_bucket("tier")
            publish(client, bucket, "models--bench--big", SHA_BIG, big_dir)
            publish(client, bucket, "models--bench--gpt2", SHA_MODEL, model)
            node = work / "node"
            m = start_mount(
                bucket=bucket,
                prefix="",
                env=server.env(),
                mountpoint=node / "mnt",
                cache_dir=work / "rclone-cache",
                extra_args=("--tier-dir", str(node), "--cache-max-size", "50G", "--freshness", "1s"),
            )
            try:
                links = [node / f"hub/models--bench--big/snapshots/{SHA_BIG}/big.bin"]
                deadline = time.monotonic() + 60
                while not links[0].parent.is_dir() and time.monotonic() < deadline:
                    time.sleep(0.2)
                env = {**os.environ, **server.env(), "HFCACHE_MOUNTPOINT": str(node / "mnt")}
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "hf_cache", "warm", "bench/big", "bench/gpt2"], env=env, check=True
                )
                links += [p for p in (node / f"hub/models--bench--gpt2/snapshots/{SHA_MODEL}").rglob("*")]
                while not all("/blobs/" in "/" + os.readlink(p) for p in links if p.is_symlink()):
                    if time.monotonic() - t0 > 900:
                        raise SystemExit(f"not hot within 900 s:\n{m.log()}")
                    time.sleep(0.2)
                t_hot = time.perf_counter() - t0
                promoted = m.metrics()["hfcache_node_promoted_bytes_total"]
                tier_file = links[0]
                mount_file = node / "mnt" / tier_file.relative_to(node)
                local_file = big_dir / "big.bin"
                for p in (tier_file, local_file, mount_file):
                    read_in_subprocess([p])  # hot page cache for the files that can keep one
                reads: dict[str, list[float]] = {"tier": [], "local": [], "mount": []}
                for _ in range(args.rounds):
                    reads["tier"].append(read_in_subprocess([tier_file]))
                    reads["local"].append(read_in_subprocess([local_file]))
                    reads["mount"].append(read_in_subprocess([mount_file]))
                reader = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
                reader.update(reader_env(str(node), str(work / "scratch")))
                local_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
                load("bench/gpt2", reader)  # untimed: page caches hot, imports warm
                load(str(model), local_env)
                loads: dict[str, list[float]] = {"tier": [], "local": []}
                for _ in range(args.rounds):
                    loads["tier"].append(load("bench/gpt2", reader))
                    loads["local"].append(load(str(model), local_env))
            finally:
                m.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    r = {k: statistics.median(v) for k, v in reads.items()}
    ld = {k: statistics.median(v) for k, v in loads.items()}
    gb = args.big_mb / 1000
    print(
        f"big file {gb:.1f} GB, model GPT-2 {args.layers}x{args.embd} {size / 1e9:.2f} GB fp32; "
        f"medians of {args.rounds}"
    )
    print(f"warm + promote both repos: {t_hot:.1f}s ({promoted / 1e9:.2f} GB verified into the tier)")
    print(f"read() new process, HF_HOME tier : {r['tier']:.2f}s ({gb / r['tier']:.1f} GB/s)")
    print(f"read() new process, local copy   : {r['local']:.2f}s ({gb / r['local']:.1f} GB/s)")
    print(f"read() new process, rclone mount : {r['mount']:.2f}s ({gb / r['mount']:.1f} GB/s)")
    print(
        f"read() tier/local throughput = {r['local'] / r['tier']:.2f}x (goal >= 0.8x); mount/local = "
        f"{r['local'] / r['mount']:.2f}x"
    )
    print(f"from_pretrained HF_HOME tier     : {ld['tier']:.2f}s")
    print(f"from_pretrained local folder     : {ld['local']:.2f}s")
    print(f"from_pretrained tier/local = {ld['tier'] / ld['local']:.2f}x the time (goal <= 1.05x)")


if __name__ == "__main__":
    main()
