"""``hf-cache refresh``, ``ls`` and ``verify``: the writer's commands (the CronJob runs ``refresh``)."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError

from cache import __version__, layout
from cache.errors import ConfigError, HfCacheError, StorageError
from cache.modelsfile import parse_models_file
from cache.progress import Progress, human_bytes
from cache.refresh.lease import DEFAULT_TTL, Lease
from cache.refresh.prune import apply_prune, keep_sets, parse_duration, plan_prune, scan_published
from cache.refresh.publish import (
    Publisher,
    RepoResult,
    Target,
    install_kill_hook,
    make_scratch,
    now_iso,
    remove_scratch,
)
from cache.refresh.source import HubSource
from cache.s3 import check_bucket, describe_error, make_client

log = logging.getLogger("hf_cache.refresh")

bucket_opt = click.option("--bucket", envvar="HFCACHE_BUCKET", required=True, help="S3 bucket. [env: HFCACHE_BUCKET]")
prefix_opt = click.option(
    "--prefix",
    envvar="HFCACHE_PREFIX",
    default="",
    show_default=True,
    help="Key prefix inside the bucket (its root is the pods' HF_HOME). [env: HFCACHE_PREFIX]",
)
endpoint_opt = click.option(
    "--endpoint-url",
    envvar=["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
    default=None,
    help="S3 endpoint (MinIO, loopback). [env: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL]",
)
region_opt = click.option(
    "--region", envvar=["AWS_REGION", "AWS_DEFAULT_REGION"], default=None, help="S3 region. [env: AWS_REGION]"
)


def _target(bucket: str, prefix: str, endpoint_url: str | None, region: str | None, pool: int = 32) -> Target:
    client = make_client(endpoint_url, region, max_pool=pool)
    check_bucket(client, bucket)
    return Target(client, bucket, prefix.strip("/"))


def _summary(results: list[RepoResult]) -> str:
    lines = []
    for r in results:
        sha = (r.sha or "-")[:12]
        if r.state == "ok":
            lines.append(
                f"  ok      {r.entry.display} -> {sha}  {r.files} files, {human_bytes(r.bytes_total)}"
                f" (uploaded {human_bytes(r.bytes_uploaded)}, copied {human_bytes(r.bytes_copied)},"
                f" skipped {human_bytes(r.bytes_skipped)})"
            )
        else:
            lines.append(f"  FAILED  {r.entry.display}: {r.error}")
    return "\n".join(lines)


@click.command()
@click.option(
    "--models",
    "models_path",
    envvar="HFCACHE_MODELS",
    default="models.txt",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The models file. [env: HFCACHE_MODELS]",
)
@bucket_opt
@prefix_opt
@endpoint_opt
@region_opt
@click.option(
    "--workers",
    envvar="HFCACHE_WORKERS",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Files in flight at once; scratch disk needed is about workers x the largest file.",
)
@click.option(
    "--scratch-dir",
    envvar="HFCACHE_SCRATCH_DIR",
    default=None,
    help="Where downloads wait for upload (default: the temp dir). [env: HFCACHE_SCRATCH_DIR]",
)
@click.option("--dry-run", is_flag=True, help="Validate models.txt, resolve each repo, print the plan; write nothing.")
@click.option("--prune", is_flag=True, help="Remove repos/revisions de-listed from models.txt for --prune-after.")
@click.option("--prune-after", default="7d", show_default=True, help="How long an item stays de-listed before removal.")
@click.option("--lease-ttl", type=click.FloatRange(min=1.0), default=DEFAULT_TTL, show_default=True, hidden=True)
def refresh(
    models_path: str,
    bucket: str,
    prefix: str,
    endpoint_url: str | None,
    region: str | None,
    workers: int,
    scratch_dir: str | None,
    dry_run: bool,
    prune: bool,
    prune_after: str,
    lease_ttl: float,
) -> None:
    """Publish every repo in models.txt to S3 as a symlink-free Hugging Face cache.

    Exit 0 when every repo published, 1 when any failed (each named), 2 for a usage or models.txt error.
    """
    entries = parse_models_file(models_path)  # validated whole before anything is fetched
    after = parse_duration(prune_after)
    hub = HubSource()
    if dry_run:
        for e in entries:
            src = f"local {e.source}" if e.source else hub.endpoint
            click.echo(
                f"{e.display}: from {src}, ref {e.ref_name or '(pinned sha)'}"
                + (f", include {','.join(e.include)}" if e.include else "")
                + (f", exclude {','.join(e.exclude)}" if e.exclude else "")
            )
        return
    target = _target(bucket, prefix, endpoint_url, region, pool=workers * 4 + 8)
    install_kill_hook(target.client)
    started = now_iso()
    t0 = time.monotonic()
    results: list[RepoResult] = []
    scratch = make_scratch(scratch_dir)
    try:
        with Lease(target.client, bucket, target.prefix, ttl=lease_ttl) as lease:
            lease.guard()  # every write checks the lease first: a run that lost it writes nothing more
            previous = target.get_json(layout.status_key(target.prefix)) or {}
            with Progress("refresh") as progress:
                publisher = Publisher(target, hub, scratch, workers=workers, progress=progress)
                for entry in entries:
                    lease.check()
                    results.append(publisher.publish(entry))
            lease.check()
            delisted: dict[str, str] = dict(previous.get("delisted", {}))
            pruned: list[str] = []
            failed = [r for r in results if r.state != "ok"]
            if prune and failed:
                log.warning("not pruning: %d repo(s) failed in this run", len(failed))
            elif prune:
                refs, snaps = keep_sets(results)
                actions, delisted = plan_prune(scan_published(target), refs, snaps, delisted, datetime.now(UTC), after)
                pruned = apply_prune(target, actions)
            status = {
                "hf_cache_version": __version__,
                "models_file": models_path,
                "started": started,
                "ended": now_iso(),
                "seconds": round(time.monotonic() - t0, 3),
                "state": "ok" if not failed else "failed",
                "repos": [r.to_json() for r in results],
                "delisted": delisted,
                "pruned": pruned,
            }
            target.put_json(layout.status_key(target.prefix), status)
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(describe_error(exc, bucket)) from exc
    finally:
        remove_scratch(scratch)
    click.echo(_summary(results))
    if failed:
        click.echo(
            f"hf-cache: {len(failed)} of {len(results)} repos failed: " + ", ".join(r.entry.display for r in failed),
            err=True,
        )
        sys.exit(1)


def _manifests(target: Target) -> list[dict[str, Any]]:
    root = layout.join(target.prefix, layout.META_DIR, "manifests")
    out = []
    for key in sorted(target.list(root)):
        manifest = target.get_json(key)
        if manifest:
            out.append(manifest)
    return out


@click.command(name="ls")
@bucket_opt
@prefix_opt
@endpoint_opt
@region_opt
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ls(bucket: str, prefix: str, endpoint_url: str | None, region: str | None, as_json: bool) -> None:
    """List published repos: id, ref -> sha, files, size, published-at."""
    target = _target(bucket, prefix, endpoint_url, region)
    published = scan_published(target)
    rows = []
    for m in _manifests(target):
        folder = layout.repo_folder_name(m["repo"], m["type"])
        refs = sorted(name for name, sha in published.refs.get(folder, {}).items() if sha == m["sha"])
        rows.append(
            {
                "repo": m["repo"],
                "type": m["type"],
                "refs": refs,
                "sha": m["sha"],
                "files": len(m["files"]),
                "bytes": sum(f["size"] for f in m["files"]),
                "published_at": m["published_at"],
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        click.echo(f"nothing published under s3://{bucket}/{target.prefix}")
        return
    click.echo(f"{'REPO':40} {'REFS':16} {'SHA':12} {'FILES':>5} {'SIZE':>10}  PUBLISHED")
    for r in rows:
        name = r["repo"] if r["type"] == "model" else f"{r['type']}:{r['repo']}"
        click.echo(
            f"{name:40} {','.join(r['refs']) or '-':16} {r['sha'][:12]:12} {r['files']:>5} "
            f"{human_bytes(r['bytes']):>10}  {r['published_at']}"
        )


@click.command()
@click.argument("repos", nargs=-1)
@bucket_opt
@prefix_opt
@endpoint_opt
@region_opt
def verify(repos: tuple[str, ...], bucket: str, prefix: str, endpoint_url: str | None, region: str | None) -> None:
    """Re-read published objects and check them against their manifests (exit 1 on any mismatch)."""
    target = _target(bucket, prefix, endpoint_url, region)
    manifests = [m for m in _manifests(target) if not repos or m["repo"] in repos]
    missing = set(repos) - {m["repo"] for m in manifests}
    if missing:
        raise ConfigError(f"not published: {', '.join(sorted(missing))}; run `hf-cache ls` to see what is")
    bad: list[str] = []
    total = sum(f["size"] for m in manifests for f in m["files"])
    with Progress("verify", total_bytes=total) as progress:
        for m in manifests:
            for f in m["files"]:
                key = layout.snapshot_key(target.prefix, m["repo"], m["type"], m["sha"], f["path"])
                digest = hashlib.sha256()
                try:
                    body = target.client.get_object(Bucket=bucket, Key=key)["Body"]
                    for chunk in body.iter_chunks(8 * 1024 * 1024):
                        digest.update(chunk)
                        progress.advance(len(chunk))
                except ClientError:
                    bad.append(f"{m['repo']}@{m['sha'][:12]}: {f['path']} is missing")
                    continue
                if digest.hexdigest() != f["sha256"]:
                    bad.append(f"{m['repo']}@{m['sha'][:12]}: {f['path']} sha256 mismatch")
                progress.advance(0, 1)
    for line in bad:
        click.echo(f"MISMATCH {line}")
    click.echo(
        f"verified {len(manifests)} snapshots, {human_bytes(total)}: "
        + ("all intact" if not bad else f"{len(bad)} problems")
    )
    if bad:
        raise HfCacheError(f"{len(bad)} published files do not match their manifests")
