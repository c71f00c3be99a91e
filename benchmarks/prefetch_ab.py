"""Prefetch on vs off on plain loopback: the old benchmarks as a regression guard, in one run, rounds alternating.

    python3 -m benchmarks.prefetch_ab [--rounds 2] [--link loopback|s3] [-- extra args for benchmarks.mount]

Runs ``benchmarks.mount`` and ``benchmarks.load`` with the mount's prefetch on (the default, 16 streams) and off
(``HFCACHE_PREFETCH_STREAMS=0``, which every mount they start inherits), alternating which goes first, and prints
the median of each timed figure per side and their ratio (off / on: > 1 means prefetch made it faster). Prefetch
must make nothing slower where one connection is already fast (issue 11: "nothing gets slower on loopback").
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

MOUNT_ROW = re.compile(r"^(big file|model dir)\s+\d+ MB\s+([\d.]+)s\s+([\d.]+)s\s+([\d.]+)s\s+([\d.]+)s", re.M)
LOAD_COLD = re.compile(r"from_pretrained cold through the mount : ([\d.]+)s")
LOAD_WARM = re.compile(r"from_pretrained warm through the mount : ([\d.]+)s")
CONCURRENT = re.compile(r"4 concurrent cold readers of big.bin: ([\d.]+)s, S3 bytes / file size = ([\d.]+)")


def run(module: str, args: list[str], prefetch: bool) -> str:
    env = {**os.environ, "HFCACHE_PREFETCH_STREAMS": "16" if prefetch else "0"}
    out = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{module} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def figures(mount_out: str, load_out: str) -> dict[str, float]:
    """Seconds by name from the two benchmarks' printed tables."""
    got: dict[str, float] = {}
    for label, _boto3, cold, warm, _local in MOUNT_ROW.findall(mount_out):
        got[f"{label} cold read"] = float(cold)
        got[f"{label} warm read"] = float(warm)
    if m := CONCURRENT.search(mount_out):
        got["4 readers cold"] = float(m.group(1))
        got["4 readers S3 bytes/size"] = float(m.group(2))
    if m := LOAD_COLD.search(load_out):
        got["from_pretrained cold"] = float(m.group(1))
    if m := LOAD_WARM.search(load_out):
        got["from_pretrained warm"] = float(m.group(1))
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--link", choices=["loopback", "s3"], default="loopback")
    ap.add_argument("--big-mb", default="1000")
    ap.add_argument("--shards", default="3")
    ap.add_argument("--shard-mb", default="300")
    ap.add_argument("--layers", default="16")
    ap.add_argument("--embd", default="1024")
    args = ap.parse_args()
    mount_args = ["--link", args.link, "--big-mb", args.big_mb, "--shards", args.shards, "--shard-mb", args.shard_mb]
    load_args = ["--link", args.link, "--layers", args.layers, "--embd", args.embd]
    print(f"link: {args.link}; benchmarks.mount {' '.join(mount_args)}; benchmarks.load {' '.join(load_args)}")
    rounds: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for i in range(args.rounds):
        for prefetch in (True, False) if i % 2 == 0 else (False, True):
            got = figures(run("benchmarks.mount", mount_args, prefetch), run("benchmarks.load", load_args, prefetch))
            rounds[prefetch].append(got)
            print(
                f"round {i + 1} prefetch {'on ' if prefetch else 'off'}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in got.items()),
                flush=True,
            )
    print(f"median of {args.rounds} (seconds; S3 bytes as a ratio); off/on > 1: prefetch faster")
    for name in rounds[True][0]:
        on = statistics.median(r[name] for r in rounds[True])
        off = statistics.median(r[name] for r in rounds[False])
        print(f"{name:26} on {on:7.2f}  off {off:7.2f}  off/on {off / on:5.2f}")


if __name__ == "__main__":
    main()
