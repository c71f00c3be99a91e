"""The cold path over an S3-like link: the first read on a node, through the mount vs boto3, same run.

    python3 -m benchmarks.cold [--big-gb 2] [--layers 16 --embd 1024 --shard-mb 300] [--repeat 3]
                               [--patterns read,safe_open,from_pretrained,tp,warm,readers] [--link loopback]
                               [--mount-arg=--rclone-arg=--vfs-read-chunk-streams=16 ...]
                               [--variant-arg=--rclone-arg=--vfs-read-ahead=4M ...] [--no-prefetch]

Every cold run gets a fresh mount with an empty node cache; every baseline downloads into an empty folder. Rounds
rotate who goes first; each figure is the median of ``--repeat`` rounds. ``--variant-arg`` adds a second mount (the
same mount plus these arguments) to every round, so two flag sets are compared in one run on one server. The S3
server is ``rclone serve s3`` over a local folder (ranged GETs served from disk, like an object store); between it
and every client sits the S3-like link (cache/lab/s3link.py), which is the bottleneck, as the network is on a node.

Patterns (speed = baseline time / mount time, so > 1 means the mount was faster):
  read             sequential read() of the big file         vs boto3 download_file            goal >= 0.9
  safe_open        safe_open + get_tensor of every shard     vs boto3 download, then the same   goal >= 1.0
  from_pretrained  AutoModelForCausalLM.from_pretrained      vs boto3 download, then the same   goal >= 1.0
  tp               one process per shard, all at once        vs each process downloads + loads goal >= 1.0
  warm             hf-cache warm of the model                vs boto3 download of its files     goal >= 0.9
  readers          4 concurrent read() of one cold big file: S3 bytes fetched / file size       goal <= 1.05
  (readers runs ``--repeat`` rounds too; each side gets a fresh mount per round)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from boto3.s3.transfer import TransferConfig

from benchmarks.common import ROOT, RunningMount, s3
from hf_cache.lab.s3link import S3Link, add_link_args, link_params
from hf_cache.lab.s3server import S3Server, via
from hf_cache.readers.envvars import reader_env

T = TypeVar("T")
PATTERNS = ("read", "safe_open", "from_pretrained", "tp", "warm", "readers")
GOALS = {"read": 0.9, "safe_open": 1.0, "from_pretrained": 1.0, "tp": 1.0, "warm": 0.9}

READ = """
import os, sys, time
t = time.perf_counter()
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    while os.read(fd, 16 << 20):
        pass
    os.close(fd)
print(time.perf_counter() - t)
"""

SAFE_OPEN = """
import sys, time
from safetensors import safe_open
t = time.perf_counter()
for p in sys.argv[1:]:
    with safe_open(p, framework="pt") as f:
        for k in f.keys():
            f.get_tensor(k)
print(time.perf_counter() - t)
"""

# a tensor-parallel rank: optionally download its shard with boto3 first, then load it
RANK = """
import os, sys, time
t = time.perf_counter()
src, bucket, key = sys.argv[1:4]
if bucket:
    import boto3
    from botocore.config import Config
    boto3.client("s3", config=Config(s3={"addressing_style": "path"})).download_file(bucket, key, src)
from safetensors import safe_open
with safe_open(src, framework="pt") as f:
    for k in f.keys():
        f.get_tensor(k)
print(time.perf_counter() - t)
"""

FROM_PRETRAINED = """
import sys, time
from transformers import AutoModelForCausalLM
t = time.perf_counter()
AutoModelForCausalLM.from_pretrained(sys.argv[1])
print(time.perf_counter() - t)
"""

MAKE_MODEL = """
import sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
layers, embd, shard = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
m = GPT2LMHeadModel(GPT2Config(n_layer=layers, n_embd=embd, n_head=16, vocab_size=50257, n_positions=1024))
m.save_pretrained(sys.argv[1], safe_serialization=True, max_shard_size=shard)
"""


def py(code: str, *args: str, env: dict[str, str] | None = None) -> float:
    """Run a timing snippet in a fresh process (nothing cached in us); its last line is seconds."""
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def parallel(*calls: Callable[[], float]) -> float:
    """Wall time of running all calls at once."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(calls)) as pool:
        list(pool.map(lambda c: c(), calls))
    return time.perf_counter() - t0


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.root = work / "s3"
        self.server: S3Server
        self.endpoint = ""
        self.link: S3Link | None = None
        self.env: dict[str, str] = {}
        self.bucket = ""
        self.model_files: list[str] = []
        self.shards: list[str] = []
        self.big_size = 0
        self.model_size = 0
        self.n = 0
        self.big_snap = ""
        self.model_snap = ""
        self.last_mount: _Mounted | None = None
        # per pattern and side: [files prefetched or in flight, reads judged fast (left alone), bytes at the link,
        # read-ahead streams, bytes its parts fetched, bytes it passed through], summed over rounds
        self.prefetch: dict[str, dict[str, list[int]]] = {}

    # -- setup --------------------------------------------------------------------------------------------------
    def publish(self) -> None:
        src = self.work / "src"
        big = src / "big" / "big.bin"
        big.parent.mkdir(parents=True)
        self.big_size = int(self.args.big_gb * 1e9)
        block = os.urandom(16 << 20)
        with big.open("wb") as f:
            for i in range(0, self.big_size, len(block)):
                f.write(block[: min(len(block), self.big_size - i)])
        model = src / "model"
        subprocess.run(
            [sys.executable, "-c", MAKE_MODEL, str(model), str(self.args.layers), str(self.args.embd), self.args.shard],
            check=True,
            capture_output=True,
        )
        self.model_files = sorted(str(p.relative_to(model)) for p in model.rglob("*") if p.is_file())
        self.shards = [p for p in self.model_files if p.endswith(".safetensors")]
        self.model_size = sum((model / p).stat().st_size for p in self.model_files)
        models = self.work / "models.txt"
        models.write_text(f"bench/big source=file://{big.parent}\nbench/model source=file://{model}\n")
        # published by hf-cache refresh (to moto, which keeps the checksum metadata refresh verifies), then mirrored
        # into the folder rclone serve s3 serves: publishing is not what is measured
        self.bucket = "cold"
        with s3("moto") as moto:
            bucket = moto.new_bucket("cold")
            out = subprocess.run(
                [sys.executable, "-m", "hf_cache", "refresh", "--models", str(models), "--bucket", bucket],
                env={**os.environ, **moto.env()},
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                raise SystemExit(f"publishing failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
            client = moto.client()
            # one stream per object: moto answers each ranged GET by slicing the whole object
            single = TransferConfig(multipart_threshold=1 << 40)
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", []):
                    dest = self.root / self.bucket / obj["Key"]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(bucket, obj["Key"], str(dest), Config=single)
        shutil.rmtree(src)

    def serve(self, server: S3Server, link: S3Link | None) -> None:
        self.server, self.link = server, link
        self.endpoint = link.endpoint if link else server.endpoint
        self.env = {**os.environ, **via(server.env(), self.endpoint)}
        with self.mount("probe") as m:
            for repo in ("big", "model"):
                ref = m.mountpoint / f"hub/models--bench--{repo}/refs/main"
                setattr(self, f"{repo}_snap", f"hub/models--bench--{repo}/snapshots/{ref.read_text()}")

    def mount(self, name: str, extra: tuple[str, ...] = ()) -> _Mounted:
        self.n += 1
        name = f"{name}{self.n}"
        server = S3Server(endpoint=self.endpoint, proc=self.server.proc)
        work = self.work / "mounts"
        work.mkdir(exist_ok=True)
        self.last_mount = _Mounted(server, self.bucket, work, name, extra)
        return self.last_mount

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}),
        )

    def download(self, snap: str, files: list[str], dest: Path) -> None:
        client = self.client()
        for p in files:
            (dest / p).parent.mkdir(parents=True, exist_ok=True)
            client.download_file(self.bucket, f"{snap}/{p}", str(dest / p))

    def fresh_dir(self, name: str) -> Path:
        d = self.work / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        return d

    # -- patterns: cold_<name>(mount args) and base_<name>() each time one round of one side ---------------------
    def cold_read(self, extra: tuple[str, ...]) -> float:
        with self.mount("read", extra) as m:
            return py(READ, str(m.mountpoint / self.big_snap / "big.bin"))

    def base_read(self) -> float:
        dl = self.fresh_dir("dl")
        t0 = time.perf_counter()
        self.download(self.big_snap, ["big.bin"], dl)
        return time.perf_counter() - t0

    def cold_safe_open(self, extra: tuple[str, ...]) -> float:
        with self.mount("st", extra) as m:
            return py(SAFE_OPEN, *(str(m.mountpoint / self.model_snap / p) for p in self.shards))

    def base_safe_open(self) -> float:
        dl = self.fresh_dir("dl")
        t0 = time.perf_counter()
        self.download(self.model_snap, self.shards, dl)
        return time.perf_counter() - t0 + py(SAFE_OPEN, *(str(dl / p) for p in self.shards))

    def cold_from_pretrained(self, extra: tuple[str, ...]) -> float:
        with self.mount("fp", extra) as m:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
            env.update(reader_env(str(m.mountpoint), str(self.work / "scratch")))
            return py(FROM_PRETRAINED, "bench/model", env=env)

    def base_from_pretrained(self) -> float:
        dl = self.fresh_dir("dl")
        t0 = time.perf_counter()
        self.download(self.model_snap, self.model_files, dl)
        return time.perf_counter() - t0 + py(FROM_PRETRAINED, str(dl), env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def cold_tp(self, extra: tuple[str, ...]) -> float:
        with self.mount("tp", extra) as m:
            paths = [str(m.mountpoint / self.model_snap / p) for p in self.shards]
            return parallel(*(lambda p=p: py(RANK, p, "", "") for p in paths))

    def base_tp(self) -> float:
        dl = self.fresh_dir("dl")
        ranks = [(str(dl / p.replace("/", "_")), f"{self.model_snap}/{p}") for p in self.shards]
        return parallel(*(lambda d=d, k=k: py(RANK, d, self.bucket, k, env=self.env) for d, k in ranks))

    def cold_warm(self, extra: tuple[str, ...]) -> float:
        with self.mount("warm", extra) as m:
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-m", "hf_cache", "warm", "bench/model", "--mountpoint", str(m.mountpoint)],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                raise SystemExit(f"hf-cache warm failed:\n{out.stderr[-3000:]}")
            return time.perf_counter() - t0

    def base_warm(self) -> float:
        dl = self.fresh_dir("dl")
        t0 = time.perf_counter()
        self.download(self.model_snap, self.model_files, dl)
        return time.perf_counter() - t0

    def round(self, name: str, sides: dict[str, tuple[str, ...]], i: int) -> dict[str, float]:
        """One round of a pattern: every mount side and the baseline, the order rotated by the round's index.

        Rotating (not only swapping) matters with a variant: a side that always ran right after the baseline would
        meet a warmer page cache on the S3 server's folder than the others.
        """
        runs: list[tuple[str, Callable[[], float]]] = [
            (side, lambda side=side, extra=extra: self.cold(name, side, extra)) for side, extra in sides.items()
        ]
        runs.append(("base", getattr(self, f"base_{name}")))
        return {side: fn() for side, fn in _rotated(runs, i)}

    def cold(self, name: str, side: str, extra: tuple[str, ...]) -> float:
        """One cold run, tallying what the prefetch or read-ahead did in it (why a side was slower is often there)."""
        before = self.link.stats.snapshot()["bytes_down"] if self.link else 0
        t: float = getattr(self, f"cold_{name}")(extra)
        self.tally(name, side, (self.link.stats.snapshot()["bytes_down"] - before) if self.link else 0)
        return t

    def tally(self, name: str, side: str, link_bytes: int = 0) -> None:
        got = self.last_mount.final if self.last_mount else {}
        counts = self.prefetch.setdefault(name, {}).setdefault(side, [0, 0, 0, 0, 0, 0])
        counts[0] += int(got.get("hfcache_prefetch_files_total", 0) + got.get("hfcache_prefetch_in_flight", 0))
        counts[1] += int(got.get("hfcache_prefetch_fast_total", 0))
        counts[2] += link_bytes
        counts[3] += int(got.get("hfcache_readahead_streams_total", 0))
        counts[4] += int(got.get("hfcache_readahead_fetched_bytes_total", 0))
        counts[5] += int(got.get("hfcache_s3_passed_bytes_total", 0))

    def readers_tallied(self, side: str, extra: tuple[str, ...]) -> tuple[float, float, float]:
        got = self.readers(extra)
        self.tally("readers", side)
        return got

    def readers(self, extra: tuple[str, ...]) -> tuple[float, float, float]:
        """4 concurrent cold readers of the big file: (seconds, link bytes / size, rclone's count / size)."""
        with self.mount("readers", extra) as m:
            path = str(m.mountpoint / self.big_snap / "big.bin")
            link_before = self.link.stats.snapshot()["bytes_down"] if self.link else 0
            rclone_before = m.metrics()["hfcache_s3_read_bytes_total"]
            t = parallel(*(lambda: py(READ, path) for _ in range(4)))
            link_bytes = (self.link.stats.snapshot()["bytes_down"] - link_before) if self.link else float("nan")
            rclone_bytes = m.metrics()["hfcache_s3_read_bytes_total"] - rclone_before
        return t, link_bytes / self.big_size, rclone_bytes / self.big_size


class _Mounted:
    def __init__(self, server: S3Server, bucket: str, work: Path, name: str, extra: tuple[str, ...]) -> None:
        self.server, self.bucket, self.work, self.name, self.extra = server, bucket, work, name, extra
        self.final: dict[str, float] = {}

    def __enter__(self) -> RunningMount:
        from hf_cache.lab.mounting import start_mount

        self.m = start_mount(
            bucket=self.bucket,
            prefix="",
            env=self.server.env(),
            mountpoint=self.work / f"{self.name}-mnt",
            cache_dir=self.work / f"{self.name}-cache",
            extra_args=("--cache-max-size", "50G", *self.extra),
        )
        return self.m

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.final = self.m.metrics()
        if exc_type is not None:
            print(f"mount log ({self.name}):\n{self.m.log()[-3000:]}", file=sys.stderr)
        self.m.stop()
        shutil.rmtree(self.work / f"{self.name}-cache", ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-gb", type=float, default=2.0, help="size of the big file (GB)")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--embd", type=int, default=1024)
    ap.add_argument("--shard", default="300MB", help="save_pretrained max_shard_size")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians")
    ap.add_argument("--patterns", default=",".join(PATTERNS))
    ap.add_argument("--mount-arg", action="append", default=[], help="extra hf-cache mount argument (repeatable)")
    ap.add_argument(
        "--variant-arg",
        action="append",
        default=[],
        help="measure a second mount in the same rounds: the mount's arguments plus this one (repeatable), e.g. "
        "--variant-arg=--rclone-arg=--vfs-read-ahead=4M or --variant-arg=--prefetch-streams=0",
    )
    ap.add_argument(
        "--no-prefetch", action="store_true", help="mount with --prefetch-streams 0 (prefetch is on by default)"
    )
    add_link_args(ap)
    args = ap.parse_args()
    if args.no_prefetch:
        args.mount_arg.append("--prefetch-streams=0")
    patterns = [p for p in args.patterns.split(",") if p]
    unknown = set(patterns) - set(PATTERNS)
    if unknown:
        raise SystemExit(f"unknown patterns {sorted(unknown)}; choose from {', '.join(PATTERNS)}")
    sides = {"mount": tuple(args.mount_arg)}
    if args.variant_arg:
        sides["variant"] = (*args.mount_arg, *args.variant_arg)
    params = link_params(args) if args.link == "s3" else None
    print(params.describe() if params else "link: plain loopback (no cap, no latency)", flush=True)
    for side, extra in sides.items():
        print(f"{side} args: {' '.join(extra) or '(none)'}", flush=True)
    print(f"commit {_commit()}; load average {_load()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-cold-", dir=os.environ.get("HFCACHE_BENCH_DIR")))
    try:
        bench = Bench(args, work)
        bench.publish()
        with s3("rclone", root=bench.root) as server:
            link = S3Link(server.endpoint, params) if params else None
            try:
                bench.serve(server, link)
                print(
                    f"big file {bench.big_size / 1e9:.2f} GB; model GPT-2 {args.layers} x {args.embd} fp32, "
                    f"{bench.model_size / 1e9:.2f} GB in {len(bench.shards)} shards; median of {args.repeat}",
                    flush=True,
                )
                for name in patterns:
                    if name == "readers":
                        readers_report(
                            [
                                {side: bench.readers_tallied(side, sides[side]) for side in _rotated(list(sides), i)}
                                for i in range(args.repeat)
                            ]
                        )
                        print_prefetch(name, bench.prefetch.get(name, {}))
                        continue
                    rounds = [bench.round(name, sides, i) for i in range(args.repeat)]
                    report(name, rounds, list(sides))
                    print_prefetch(name, bench.prefetch.get(name, {}))
                print(f"load average {_load()}", flush=True)
            finally:
                if link:
                    link.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(name: str, rounds: list[dict[str, float]], sides: list[str]) -> None:
    """One line per mount side against the baseline; with a variant, a line comparing it with the mount."""
    goal = GOALS[name]
    base = statistics.median(r["base"] for r in rounds)
    for side in sides:
        mount = statistics.median(r[side] for r in rounds)
        speed = statistics.median(r["base"] / r[side] for r in rounds)
        raw = ", ".join(f"{r[side]:.2f}/{r['base']:.2f}" for r in rounds)
        label = name if side == "mount" else f"{name} ({side})"
        print(
            f"{label:26} mount {mount:6.2f}s  baseline {base:6.2f}s  speed {speed:5.2f}x "
            f"({'met' if speed >= goal else 'MISSED'} goal >= {goal})  rounds mount/base: {raw}",
            flush=True,
        )
    if "variant" in sides:
        ratio = statistics.median(r["mount"] / r["variant"] for r in rounds)
        print(
            f"{name + ' variant vs mount':26} {ratio:5.2f}x (> 1: the variant was faster; median per round)", flush=True
        )


def readers_report(rounds: list[dict[str, tuple[float, float, float]]]) -> None:
    for side in rounds[0]:
        t, link_ratio, rclone_ratio = (statistics.median(r[side][k] for r in rounds) for k in range(3))
        raw = ", ".join(f"{r[side][0]:.2f}s/{r[side][1]:.3f}" for r in rounds)
        print(
            f"readers {side + ':':8} 4 concurrent cold read() of the big file {t:.2f}s; S3 bytes / size: "
            f"{link_ratio:.3f} at the link, {rclone_ratio:.3f} by rclone's count (goal <= 1.05); "
            f"rounds time/link bytes: {raw}",
            flush=True,
        )


def print_prefetch(name: str, tally: dict[str, list[int]]) -> None:
    print(
        f"{name + ' prefetch':26} "
        + "; ".join(
            f"{side}: {files} files prefetched, {fast} reads judged fast, {streams} read-ahead streams, "
            f"{link_bytes / 1e9:.2f} GB at the link"
            + (f" ({parts / 1e9:.2f} by read-ahead parts, {passed / 1e9:.2f} passed through)" if streams else "")
            for side, (files, fast, link_bytes, streams, parts, passed) in tally.items()
        ),
        flush=True,
    )


def _rotated(items: list[T], i: int) -> list[T]:
    k = i % len(items)
    return items[k:] + items[:k]


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _commit() -> str:
    """The commit, and how many tracked files differ from it: others edit this checkout while benchmarks run."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "diff", "--name-only", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    changed = len(dirty.stdout.split())
    return (out.stdout.strip() or "unknown") + (f" + {changed} files changed since" if changed else "")


if __name__ == "__main__":
    main()
