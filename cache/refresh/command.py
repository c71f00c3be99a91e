"""``hf-cache refresh``, ``ls`` and ``verify``: the writer's commands (the CronJob runs ``refresh``)."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError

from cache import __version__, layout
from cache.errors import ConfigError, HfCacheError, StorageError
from cache.modelsfile import parse_models_file
from cache.progress import Progress, human_bytes
from cache.refresh.lease import DEFAULT_TTL, Lease
from cache.refresh.plan import Action
from cache.refresh.prune import keep_sets, parse_duration, plan_prune, prune_refusal, run_prune, scan_published
from cache.refresh.publish import (
    Publisher,
    RepoResult,
    Target,
    install_kill_hook,
    make_scratch,
    now_iso,
    remove_scratch,
    valid_manifest,
)
from cache.refresh.source import HubSource
from cache.refresh.uploads import abort_stale_uploads
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
@click.option(
    "--prune-max-share",
    type=click.IntRange(0, 100),
    default=50,
    show_default=True,
    help="Refuse a prune that removes more than this percentage of the published repos (or all of them).",
)
@click.option("--force", is_flag=True, help="Prune even what --prune-max-share refuses (e.g. every repo).")
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
    prune_max_share: int,
    force: bool,
    lease_ttl: float,
) -> None:
    """Publish every repo in models.txt to S3 as a symlink-free Hugging Face cache.

    Exit 0 when every repo published, 1 when any failed (each named), 2 for a usage or models.txt error.
    """
    entries = parse_models_file(models_path)  # validated whole before anything is fetched
    after = parse_duration(prune_after)
    hub = HubSource()
    if dry_run:
        share = prune_max_share / 100
        _dry_run(entries, hub, bucket, prefix, endpoint_url, region, workers, prune, after, share, force)
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
            abort_stale_uploads(target.client, bucket, target.prefix, datetime.now(UTC))
            previous = target.get_json(layout.status_key(target.prefix))
            if not isinstance(previous, dict):  # absent, or corrupt (reported by get_json): replaced below
                previous = {}
            with Progress("refresh") as progress:
                publisher = Publisher(target, hub, scratch, workers=workers, progress=progress)
                for entry in entries:
                    lease.check()
                    results.append(publisher.publish(entry))
            lease.check()
            old_delisted = previous.get("delisted")
            delisted: dict[str, str] = dict(old_delisted) if isinstance(old_delisted, dict) else {}
            pruned: list[str] = []
            prune_refused: str | None = None
            failed = [r for r in results if r.state != "ok"]
            if prune and failed:
                log.warning("not pruning: %d repo(s) failed in this run", len(failed))
            elif prune:
                now, share = datetime.now(UTC), prune_max_share / 100
                pruned, delisted, prune_refused = run_prune(target, results, delisted, now, after, share, force)
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
                "prune_refused": prune_refused,
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
    if prune_refused:
        raise ConfigError(prune_refused)


def _dry_run(
    entries: list[Any],
    hub: HubSource,
    bucket: str,
    prefix: str,
    endpoint_url: str | None,
    region: str | None,
    workers: int,
    prune: bool,
    after: Any,
    prune_share: float = 0.5,
    force: bool = False,
) -> None:
    """The plan of a run, from the same decisions a run makes (resolve, then per file: upload, copy or leave), read
    from the source and S3 and printed per repo with bytes; nothing is written anywhere."""
    target = _target(bucket, prefix, endpoint_url, region, pool=workers * 4 + 8)
    publisher = Publisher(target, hub, Path(tempfile.gettempdir()), workers=workers)
    plans = []
    for e in entries:
        src = f"local {e.source}" if e.source else hub.shown_endpoint
        plan = publisher.plan(e)
        plans.append(plan)
        if plan.error is not None:
            click.echo(f"{e.display}: from {src}: cannot resolve: {plan.error}")
            continue
        assert plan.sha is not None
        ref = f"refs/{e.ref_name} -> {plan.sha[:12]}" if e.ref_name else f"pinned {plan.sha[:12]}"
        ref += " (moves)" if plan.ref_moves else " (unchanged)" if e.ref_name else ""
        totals = plan.totals()
        parts = [
            f"{action.value} {totals.get(action, (0, 0))[0]} files ({human_bytes(totals.get(action, (0, 0))[1])})"
            for action in (Action.FETCH, Action.COPY, Action.SKIP)
        ]
        click.echo(f"{e.display}: from {src}, {ref}: " + ", ".join(parts))
        for path, fp in plan.files:
            if fp.action is not Action.SKIP:
                click.echo(f"  {fp.action.value:6} {path} ({human_bytes(fp.size or 0)})")
    if prune:
        resolved = [RepoResult(p.entry, sha=p.sha, state="ok" if p.error is None else "failed") for p in plans]
        if any(r.state != "ok" for r in resolved):
            click.echo("prune: nothing (a repo could not be resolved; a run would not prune either)")
        else:
            previous = target.get_json(layout.status_key(target.prefix))
            old = previous.get("delisted") if isinstance(previous, dict) else None
            refs, snaps = keep_sets(resolved)
            delisted = dict(old) if isinstance(old, dict) else {}
            published = scan_published(target)
            actions, _ = plan_prune(published, refs, snaps, delisted, datetime.now(UTC), after)
            refused = prune_refusal(actions, published, prune_share, force)
            if refused:
                click.echo(f"prune: a run would refuse: {refused}")
            for action in actions:
                click.echo(f"prune: {action.kind} {action.folder} {action.name}")
            if not actions:
                click.echo("prune: nothing due")
    failed = [p for p in plans if p.error is not None]
    if failed:
        sys.exit(1)


def _manifests(target: Target) -> tuple[list[dict[str, Any]], list[str]]:
    """Valid manifests, and the keys of corrupt ones (reported by ls/verify, replaced by the next refresh)."""
    root = layout.join(target.prefix, layout.META_DIR, "manifests")
    out, corrupt = [], []
    for key in sorted(target.list(root)):
        manifest = target.get_json(key)
        if valid_manifest(manifest):
            out.append(manifest)
        else:
            corrupt.append(key)
    return out, corrupt


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
    manifests, corrupt = _manifests(target)
    for key in corrupt:
        click.echo(f"hf-cache: warning: {key} is corrupt, not listed; the next refresh replaces it", err=True)
    for m in manifests:
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
    valid, corrupt = _manifests(target)
    manifests = [m for m in valid if not repos or m["repo"] in repos]
    missing = set(repos) - {m["repo"] for m in manifests}
    if missing:
        raise ConfigError(f"not published: {', '.join(sorted(missing))}; run `hf-cache ls` to see what is")
    bad: list[str] = [f"{key} is corrupt (not a valid manifest); the next refresh replaces it" for key in corrupt]
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
