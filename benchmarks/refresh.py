"""hf-cache refresh vs rclone copy: publish the same tree to the same loopback S3, and the no-op rerun's cost.

python3 -m benchmarks.refresh [--files 3] [--size-mb 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import mb, s3, write_random
from hf_cache.mount.rclone import rclone_binary


def recorded_requests(endpoint: str, action: str) -> int:
    req = urllib.request.Request(
        f"{endpoint}/moto-api/recorder/{action}",
        method="POST" if "record" in action and "download" not in action else "GET",
    )
    with urllib.request.urlopen(req) as resp:
        body = resp.read().decode()
    return len([line for line in body.splitlines() if line.strip()])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
    tree = work / "tree"
    for i in range(args.files):
        write_random(tree / f"model-{i:05d}-of-{args.files:05d}.safetensors", args.size_mb * 1_000_000)
    for name in ("config.json", "tokenizer.json", "generation_config.json"):
        (tree / name).write_text(json.dumps({"name": name, "pad": "x" * 2000}))
    total = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    models = work / "models.txt"
    models.write_text(f"bench/model source=file://{tree}\n")
    with s3() as server:
        env = {**os.environ, **server.env()}
        rclone_env = {
            **env,
            "RCLONE_CONFIG_B_TYPE": "s3",
            "RCLONE_CONFIG_B_PROVIDER": "Other",
            "RCLONE_CONFIG_B_ENV_AUTH": "true",
            "RCLONE_CONFIG_B_ENDPOINT": server.endpoint,
            "RCLONE_CONFIG_B_FORCE_PATH_STYLE": "true",
            "RCLONE_CONFIG_B_REGION": "us-east-1",
        }
        t_refresh, t_rclone = [], []
        for r in range(args.rounds):  # alternate who goes first: the machine is shared and noisy
            order = ["refresh", "rclone"] if r % 2 == 0 else ["rclone", "refresh"]
            for who in order:
                bucket = server.new_bucket(who[:6])
                t0 = time.perf_counter()
                if who == "refresh":
                    subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "cache",
                            "refresh",
                            "--models",
                            str(models),
                            "--bucket",
                            bucket,
                            "--workers",
                            "4",
                        ],
                        env=env,
                        check=True,
                        capture_output=True,
                    )
                    t_refresh.append(time.perf_counter() - t0)
                    last_bucket = bucket
                else:
                    subprocess.run(
                        [
                            rclone_binary(),
                            "copy",
                            str(tree),
                            f"b:{bucket}/hub/models--bench--model/x",
                            "--transfers",
                            "4",
                            "--s3-upload-concurrency",
                            "4",
                        ],
                        env=rclone_env,
                        check=True,
                        capture_output=True,
                    )
                    t_rclone.append(time.perf_counter() - t0)
        recorded_requests(server.endpoint, "reset-recording")
        recorded_requests(server.endpoint, "start-recording")
        t0 = time.perf_counter()
        rerun = subprocess.run(
            [sys.executable, "-m", "hf_cache", "refresh", "--models", str(models), "--bucket", last_bucket],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        t_noop = time.perf_counter() - t0
        recorded_requests(server.endpoint, "stop-recording")
        requests = recorded_requests(server.endpoint, "download-recording")
        status = json.loads(server.client().get_object(Bucket=last_bucket, Key="hf-cache/status.json")["Body"].read())
    best_refresh, best_rclone = min(t_refresh), min(t_rclone)
    print(f"tree: {args.files} x {args.size_mb} MB + 3 json = {mb(total)}; rounds {args.rounds}, best of each")
    print(
        f"hf-cache refresh : {best_refresh:.2f}s ({total / best_refresh / 1e6:.0f} MB/s)  all: "
        f"{', '.join(f'{t:.2f}' for t in t_refresh)}"
    )
    print(
        f"rclone copy      : {best_rclone:.2f}s ({total / best_rclone / 1e6:.0f} MB/s)  all: "
        f"{', '.join(f'{t:.2f}' for t in t_rclone)}"
    )
    print(f"ratio refresh/rclone throughput: {best_rclone / best_refresh:.2f}x (goal >= 0.9)")
    print(
        f"no-op rerun: {t_noop:.2f}s, {requests} S3 requests (incl. lease and status.json), "
        f"{status['repos'][0]['bytes_uploaded']} model bytes uploaded"
    )
    assert rerun.returncode == 0


if __name__ == "__main__":
    main()
