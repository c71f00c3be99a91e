"""``hf-cache demo``: the whole pipeline on one machine, no cluster, no cloud, no Hub.

It starts a loopback S3 server (moto), makes a tiny real model, publishes it with ``hf-cache refresh`` from a
``source=file://`` entry, mounts the bucket with ``hf-cache mount``, and loads the model with transformers through
the mount, cold and then warm, each in a fresh process with only the reader environment (``hf-cache env``).
Everything it starts is stopped, and everything it made is removed, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from hf_cache import layout
from hf_cache.errors import HfCacheError
from hf_cache.progress import human_bytes
from hf_cache.readers.envvars import reader_env

LOAD_SCRIPT = """
import json, sys, time
from transformers import AutoModelForCausalLM, AutoTokenizer
repo = sys.argv[1]
t0 = time.perf_counter()
tok = AutoTokenizer.from_pretrained(repo)
model = AutoModelForCausalLM.from_pretrained(repo)
loaded = time.perf_counter() - t0
ids = tok("hello world", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
print(json.dumps({"load_s": loaded, "text": tok.decode(out[0]), "params": sum(p.numel() for p in model.parameters())}))
"""

CREDS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo-secret", "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def _s3_server(env: dict[str, str]) -> Iterator[str]:
    from hf_cache.lab.net import stop
    from hf_cache.lab.s3server import start_moto

    endpoint, proc = start_moto(env)
    try:
        yield endpoint
    finally:
        stop(proc)


def _hf(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "hf_cache", *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise HfCacheError(f"hf-cache {args[0]} failed: {failure_cause(result.stdout, result.stderr)}")


def failure_cause(stdout: str, stderr: str) -> str:
    """The lines of a failed hf-cache run that say why (a repo's FAILED line, ``error:`` lines), as plain text."""
    lines = [ln.strip() for ln in (stdout + "\n" + stderr).splitlines() if ln.strip()]
    failed = [ln.removeprefix("FAILED").strip() for ln in lines if ln.startswith("FAILED")]
    # a failed refresh ends with `hf-cache: error: N of M repos failed: <names>`, which its FAILED lines already say
    cause = failed or [ln for ln in lines if "error:" in ln]
    return "; ".join(cause) or (lines[-1] if lines else "no output")


def _load(repo: str, mountpoint: Path, scratch: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(reader_env(str(mountpoint), str(scratch)))
    result = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, repo], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise HfCacheError(f"loading {repo} through the mount failed: {result.stderr.strip()[-500:]}")
    loaded: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


@click.command()
@click.option(
    "--model", default=None, help="A Hub repo (ORG/NAME) to use instead of the tiny local model; needs Hub access."
)
@click.option("--keep", is_flag=True, help="Leave the temp folder (not the servers) for a look afterwards.")
def demo(model: str | None, keep: bool) -> None:
    """Run refresh -> S3 -> mount -> from_pretrained on this machine, and print what happened."""
    # the lab (and moto, transformers) load when the demo runs, not when `hf-cache --help` lists it
    from hf_cache.demo.tinymodel import make_tiny_gpt2
    from hf_cache.lab.metrics import scrape
    from hf_cache.lab.net import free_port, stop, wait_http

    work = Path(tempfile.mkdtemp(prefix="hf-cache-demo-"))
    env = {**os.environ, **CREDS}
    mount_proc: subprocess.Popen[bytes] | None = None
    interrupted = False

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        with _s3_server(env) as endpoint:
            env.update(AWS_ENDPOINT_URL=endpoint, AWS_ENDPOINT_URL_S3=endpoint)
            import boto3

            boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="demo",
                aws_secret_access_key="demo-secret",
            ).create_bucket(Bucket="hf-cache-demo")
            click.echo(f"1. loopback S3 at {endpoint}, bucket hf-cache-demo")
            if model:
                repo, line = model, model
            else:
                src = make_tiny_gpt2(work / "tiny-gpt2")
                repo, line = "demo/tiny-gpt2", f"demo/tiny-gpt2 source=file://{src}"
            models = work / "models.txt"
            models.write_text(line + "\n")
            t0 = time.perf_counter()
            _hf(["refresh", "--models", str(models), "--bucket", "hf-cache-demo"], env)
            click.echo(
                f"2. published {repo} with hf-cache refresh in {time.perf_counter() - t0:.1f}s (models.txt: {line!r})"
            )

            mountpoint, cache_dir, port = work / "mnt", work / "cache", free_port()
            mount_proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hf_cache",
                    "mount",
                    "--bucket",
                    "hf-cache-demo",
                    "--mountpoint",
                    str(mountpoint),
                    "--cache-dir",
                    str(cache_dir),
                    "--cache-max-size",
                    "2G",
                    "--health-addr",
                    "127.0.0.1",
                    "--health-port",
                    str(port),
                    "--rc-port",
                    str(free_port()),
                ],
                env=env,
                stdout=(work / "mount.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            health = f"http://127.0.0.1:{port}"
            wait_http(health + "/readyz", 60, mount_proc, "hf-cache mount", ok_only=True)
            click.echo(f"3. mounted read-only at {mountpoint} (node cache {cache_dir}, health {health})")
            # The mount's own probe reads status.json through the mount --freshness (30 s) after it is ready: read it
            # now, so that read is not counted as the model load's on a machine slow enough for the tick to land there.
            (mountpoint / layout.status_key("")).read_bytes()
            before = scrape(health)

            cold = _load(repo, mountpoint, work / "scratch")
            after_cold = scrape(health)
            warm = _load(repo, mountpoint, work / "scratch")
            after_warm = scrape(health)
            s3_read = "hfcache_s3_read_bytes_total"
            s3_cold = after_cold.get(s3_read, 0) - before.get(s3_read, 0)
            s3_warm = after_warm.get(s3_read, 0) - after_cold.get(s3_read, 0)
            click.echo("4. from_pretrained through the mount, fresh processes, env from `hf-cache env`:")
            click.echo(f"     cold: {cold['load_s']:.2f}s ({human_bytes(s3_cold)} read from S3)")
            click.echo(f"     warm: {warm['load_s']:.2f}s ({human_bytes(s3_warm)} read from S3)")
            click.echo(f"     {cold['params']:,} parameters; generate(): {warm['text']!r}")
            click.echo(
                f"5. node cache: {human_bytes(after_warm.get('hfcache_cache_bytes', 0))} in "
                f"{int(after_warm.get('hfcache_cache_files', 0))} files (cap "
                f"{human_bytes(after_warm.get('hfcache_cache_max_bytes', 0))}), mount up "
                f"{int(after_warm.get('hfcache_mount_up', 0))}, rclone restarts "
                f"{int(after_warm.get('hfcache_rclone_restarts_total', 0))}"
            )
            stop(mount_proc)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop(mount_proc)
        if keep:
            click.echo(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if interrupted:
        raise click.exceptions.Abort()
    click.echo("6. stopped the mount and the S3 server; removed " + ("nothing" if keep else str(work)))
