"""from_pretrained through the hf-cache mount (cold, warm) vs from a local folder, fresh processes, one run.

python3 -m benchmarks.load [--layers 16] [--embd 1024] [--link s3|loopback]
(defaults: a ~1 GB fp32 GPT-2 in safetensors, over the S3-like link)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import mounted, over_link, s3
from hf_cache.lab.s3link import add_link_args
from hf_cache.readers.envvars import reader_env

LOAD = """
import json, sys, time
from transformers import AutoModelForCausalLM
t = time.perf_counter()
m = AutoModelForCausalLM.from_pretrained(sys.argv[1])
print(json.dumps({"s": time.perf_counter() - t, "params": sum(p.numel() for p in m.parameters())}))
"""


def make_model(dest: Path, layers: int, embd: int) -> int:
    code = f"""
import torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
m = GPT2LMHeadModel(GPT2Config(n_layer={layers}, n_embd={embd}, n_head=16, vocab_size=50257, n_positions=1024))
m.save_pretrained({str(dest)!r}, safe_serialization=True)
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())


def load(repo_or_path: str, env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-c", LOAD, repo_or_path], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--embd", type=int, default=1024)
    add_link_args(ap)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        model = work / "model"
        size = make_model(model, args.layers, args.embd)
        models = work / "models.txt"
        models.write_text(f"bench/gpt2 source=file://{model}\n")
        with s3() as server:
            bucket = server.new_bucket("load")
            env = {**os.environ, **server.env()}
            subprocess.run(
                [sys.executable, "-m", "hf_cache", "refresh", "--models", str(models), "--bucket", bucket],
                env=env,
                check=True,
                capture_output=True,
            )
            with over_link(server, args) as view, mounted(view, bucket, "", work, "load") as m:
                reader = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
                reader.update(reader_env(str(m.mountpoint), str(work / "scratch")))
                cold = load("bench/gpt2", reader)
                warm = [load("bench/gpt2", reader) for _ in range(3)]
                local = [load(str(model), {**os.environ, "HF_HUB_OFFLINE": "1"}) for _ in range(3)]
                s3_bytes = m.metrics()["hfcache_s3_read_bytes_total"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    w, loc = sorted(warm)[1], sorted(local)[1]
    print(f"model: GPT-2 {args.layers} layers x {args.embd}, {size / 1e9:.2f} GB safetensors (fp32)")
    print(f"from_pretrained cold through the mount : {cold:.2f}s ({s3_bytes / 1e9:.2f} GB read from S3)")
    print(f"from_pretrained warm through the mount : {w:.2f}s (median of 3 fresh processes)")
    print(f"from_pretrained from a local folder    : {loc:.2f}s (median of 3 fresh processes)")
    print(f"warm mount / local = {w / loc:.2f}x the time (goal <= 1.25x); cold / local = {cold / loc:.2f}x")


if __name__ == "__main__":
    main()
