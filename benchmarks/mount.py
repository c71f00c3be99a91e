"""Reads through the hf-cache mount vs boto3 and local disk, in one run against one loopback S3 server.

    python3 -m benchmarks.mount [--big-mb 1000] [--shards 3] [--shard-mb 300] [--link s3|loopback]

(a) cold through the mount (empty node cache), (b) boto3 download_file, (c) warm through the mount in a new
process, (d) the same bytes from local disk in a new process, (e) 4 concurrent readers of one cold file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

from boto3.s3.transfer import TransferConfig

from benchmarks.common import mb, mounted, over_link, read_in_subprocess, s3, write_random
from hf_cache.lab.s3link import add_link_args

SHA = "b" * 40


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-mb", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--shard-mb", type=int, default=300)
    ap.add_argument("--server", choices=["rclone", "moto"], default="rclone", help="the loopback S3 server")
    add_link_args(ap)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mount-"))
    src = work / "src"
    files = {"big.bin": args.big_mb * 1_000_000}
    for i in range(args.shards):
        files[f"model/model-{i:05d}.safetensors"] = args.shard_mb * 1_000_000
    for path, size in files.items():
        write_random(src / path, size)
    for name in ("config.json", "tokenizer.json"):
        (src / "model" / name).write_text(json.dumps({"x": "y" * 5000}))
        files[f"model/{name}"] = (src / "model" / name).stat().st_size
    groups = {"big file": ["big.bin"], "model dir": [p for p in files if p.startswith("model/")]}
    results: dict[str, dict[str, float]] = {}
    try:
        with s3(args.server) as server, contextlib.ExitStack() as stack:
            bucket = server.new_bucket("bench")
            client = server.client()
            for path in files:
                client.upload_file(str(src / path), bucket, f"hub/models--b--m/snapshots/{SHA}/{path}")
            # readers (boto3 downloads, the mounts) go through the link from here
            server = stack.enter_context(over_link(server, args))
            client = server.client()
            key = f"hub/models--b--m/snapshots/{SHA}/" + "{}"
            # boto3's default parallel ranged download, except on moto (see below)
            boto_config = TransferConfig(multipart_threshold=1 << 40) if args.server == "moto" else TransferConfig()
            for label, paths in groups.items():
                size = sum(files[p] for p in paths)
                # (b) boto3 download_file. moto answers each ranged GET by slicing the whole object, so boto3's
                # parallel ranged download is pathological against it (76 s for 1 GB): one stream there.
                dl = work / "dl"
                t0 = time.perf_counter()
                for p in paths:
                    (dl / p).parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(bucket, key.format(p), str(dl / p), Config=boto_config)
                t_boto3 = time.perf_counter() - t0
                # (a) cold mount, (c) warm in a new process
                with mounted(server, bucket, "", work, label.replace(" ", "-")) as m:
                    snap = m.mountpoint / "hub/models--b--m/snapshots" / SHA
                    t_cold = read_in_subprocess([snap / p for p in paths])
                    t_warm = read_in_subprocess([snap / p for p in paths])
                # (d) local disk, new process
                t_local = read_in_subprocess([dl / p for p in paths])
                shutil.rmtree(dl)
                results[label] = {"size": size, "boto3": t_boto3, "cold": t_cold, "warm": t_warm, "local": t_local}
            # (e) 4 concurrent readers of one cold file
            with mounted(server, bucket, "", work, "concurrent") as m:
                target = m.mountpoint / "hub/models--b--m/snapshots" / SHA / "big.bin"
                before = m.metrics()["hfcache_s3_read_bytes_total"]
                threads = [threading.Thread(target=read_in_subprocess, args=([target],)) for _ in range(4)]
                t0 = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                t_conc = time.perf_counter() - t0
                fetched = m.metrics()["hfcache_s3_read_bytes_total"] - before
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'':10} {'size':>8} {'boto3':>7} {'cold':>7} {'warm':>7} {'local':>7}  cold/boto3  warm/local")
    for label, r in results.items():
        print(
            f"{label:10} {mb(r['size']):>8} {r['boto3']:6.2f}s {r['cold']:6.2f}s {r['warm']:6.2f}s "
            f"{r['local']:6.2f}s  {r['boto3'] / r['cold']:9.2f}x  {r['local'] / r['warm']:9.2f}x"
        )
    print("(ratios are throughput: >1 means the mount was faster; goals cold/boto3 >= 0.9, warm/local >= 0.8)")
    print(
        f"4 concurrent cold readers of big.bin: {t_conc:.2f}s, S3 bytes / file size = "
        f"{fetched / files['big.bin']:.3f} (goal <= 1.05)"
    )


if __name__ == "__main__":
    main()
