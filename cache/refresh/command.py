"""``hf-cache refresh``, ``ls`` and ``verify``: the writer's commands (the CronJob runs ``refresh``)."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from hf_cache import faults, layout, options, settings
from hf_cache.errors import ConfigError, HfCacheError, RefreshFailedError, StorageError
from hf_cache.modelsfile import ModelEntry, glob_problem, parse_models_file
from hf_cache.progress import Progress, human_bytes, plural
from hf_cache.refresh.lease import DEFAULT_TTL, Lease
from hf_cache.refresh.manifest import valid_manifest
from hf_cache.refresh.plan import Action
from hf_cache.refresh.prune import (
    apply_prune,
    keep_sets,
    plan_prune,
    prune_refusal,
    removed_repos,
    run_prune,
    scan_published,
)
from hf_cache.refresh.publish import Publisher, RepoPlan, make_scratch, remove_scratch
from hf_cache.refresh.remove import describe, plan_remove, published_names
from hf_cache.refresh.repair import repair_entry
from hf_cache.refresh.source import HubSource
from hf_cache.refresh.status import RepoResult, RepoState, now_iso, scheduled_run, with_ad_hoc_run
from hf_cache.refresh.store import Target
from hf_cache.refresh.uploads import abort_stale_uploads
from hf_cache.reponame import GRAMMAR, RepoName, case_clash, format_repo, not_published, parse_repos
from hf_cache.s3 import check_bucket, make_client
from hf_cache.s3errors import BOTO_ERRORS, is_not_found, s3_errors, translate
from hf_cache.units import parse_duration

log = logging.getLogger(__name__)


def _target(bucket: str, prefix: str, endpoint_url: str | None, region: str | None, pool: int = 32) -> Target:
    client = make_client(endpoint_url, region, max_pool=pool)
    check_bucket(client, bucket, prefix)
    return Target(client, bucket, prefix.strip("/"))


def _summary(results: list[RepoResult]) -> str:
    lines = []
    for r in results:
        sha = (r.sha or "-")[:12]
        if r.ok:
            lines.append(
                f"  ok      {r.entry.display} -> {sha}  {plural(r.files, 'file')}, {human_bytes(r.bytes_total)}"
                f" (uploaded {human_bytes(r.bytes_uploaded)}, copied {human_bytes(r.bytes_copied)},"
                f" skipped {human_bytes(r.bytes_skipped)})"
            )
        else:
            lines.append(f"  FAILED  {r.entry.display}: {r.error}")
    return "\n".join(lines)


def _ad_hoc_entries(names: list[RepoName], include: tuple[str, ...], exclude: tuple[str, ...]) -> list[ModelEntry]:
    """Entries for repos named on the command line, checked like models.txt lines (``hf download`` style)."""
    problems = [
        f"--{flag} {pattern!r}: {msg}"
        for flag, patterns in (("include", include), ("exclude", exclude))
        for pattern in patterns
        if (msg := glob_problem(pattern)) is not None
    ]
    if problems:
        raise ConfigError("; ".join(problems))
    return [
        ModelEntry(n.repo_id, n.revision, n.repo_type, include=include, exclude=exclude, options=(("ad_hoc", "1"),))
        for n in names
    ]


def _check_spelling(target: Target, entries: list[ModelEntry]) -> None:
    """One repo, one spelling: ``Org/Tiny`` when ``org/tiny`` is published would be a second cache folder."""
    known = published_names(scan_published(target))
    problems = []
    for e in entries:
        spelled = case_clash(RepoName(e.repo_id, e.repo_type), known)
        if spelled is not None:
            problems.append(
                f"{format_repo(e.repo_id, e.repo_type)} is published as {format_repo(spelled, e.repo_type)}"
                " (the Hub ignores case, cache folders do not); use that spelling"
            )
    if problems:
        raise ConfigError("; ".join(problems))


@click.command(short_help="Publish models.txt (or the repos named) to S3.")
@click.argument("repos", nargs=-1, metavar=f"[{GRAMMAR}]...")
@options.env_option(
    "--models",
    "models_path",
    envvar=settings.MODELS_ENV,
    default=settings.MODELS_FILE,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The models file.",
)
@options.s3_target
@options.env_option(
    "--workers",
    envvar=settings.WORKERS_ENV,
    type=click.IntRange(1, settings.MAX_WORKERS),
    default=settings.WORKERS,
    show_default=True,
    help="Files in flight at once; scratch disk needed is about workers x the largest file.",
)
@options.env_option(
    "--scratch-dir",
    envvar=settings.SCRATCH_DIR_ENV,
    default=None,
    help="Where downloads wait for upload (default: the temp dir).",
)
@click.option("--dry-run", is_flag=True, help="Validate models.txt, resolve each repo, print the plan; write nothing.")
@click.option("--prune", is_flag=True, help="Remove repos/revisions de-listed from models.txt for --prune-after.")
@click.option(
    "--prune-after",
    default=settings.PRUNE_AFTER,
    show_default=True,
    help="How long an item stays de-listed before removal (30m, 1.5h, 7d, 2w).",
)
@options.max_share("prune", old_name="--prune-max-share")
@click.option("--force", is_flag=True, help="Prune even what --max-share refuses (e.g. every repo).")
@click.option(
    "--include", multiple=True, help="With REPO arguments: publish only paths matching this glob (repeatable)."
)
@click.option("--exclude", multiple=True, help="With REPO arguments: skip paths matching this glob (repeatable).")
@options.as_json
@click.option("--lease-ttl", type=click.FloatRange(min=1.0), default=DEFAULT_TTL, show_default=True, hidden=True)
def refresh(
    repos: tuple[str, ...],
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
    max_share: int,
    force: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    as_json: bool,
    lease_ttl: float,
) -> None:
    """Publish every repo in models.txt to S3 as a symlink-free Hugging Face cache.

    With REPO arguments, publish just those (ad hoc, as `hf download` does), without editing models.txt; the run
    is recorded under "ad_hoc" in status.json and leaves the scheduled run's record alone. Such a repo is not in
    models.txt, so a later `--prune` run de-lists it and removes it after --prune-after.

    Exit 0 when every repo published, 1 when any failed (each named), 2 for a usage or models.txt error.
    """
    ad_hoc = bool(repos)
    if ad_hoc:
        if prune:
            raise ConfigError("--prune needs the whole models.txt; drop the REPO arguments or --prune")
        entries = _ad_hoc_entries(parse_repos(repos), include, exclude)
    else:
        if include or exclude:
            raise ConfigError("--include/--exclude go with REPO arguments; in models.txt write include=/exclude=")
        entries = parse_models_file(models_path)  # validated whole before anything is fetched
    after = timedelta(seconds=parse_duration(prune_after, "--prune-after"))
    hub = HubSource()
    if dry_run:
        share = max_share / 100
        _dry_run(entries, hub, bucket, prefix, endpoint_url, region, workers, prune, after, share, force, as_json)
        return
    target = _target(bucket, prefix, endpoint_url, region, pool=workers * 4 + 8)
    if ad_hoc:
        _check_spelling(target, entries)
    faults.kill_before_write(target.client)
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
            failed = [r for r in results if not r.ok]
            prune_refused: str | None = None
            if ad_hoc:
                status = with_ad_hoc_run(previous, results, started=started, ended=now_iso())
                target.put_json(layout.status_key(target.prefix), status)
            else:
                prune_refused = _record_run(
                    target, previous, results, models_path, started, t0, prune, after, max_share, force
                )
    except BOTO_ERRORS as exc:
        raise translate(exc, bucket=bucket) from exc
    finally:
        remove_scratch(scratch)
    if as_json:
        click.echo(json.dumps({"ad_hoc": ad_hoc, "repos": [r.to_json() for r in results]}, indent=1))
    else:
        click.echo(_summary(results))
    if failed:
        raise RefreshFailedError([r.entry.display for r in failed], len(results))
    if prune_refused:
        raise ConfigError(prune_refused)


def _record_run(
    target: Target,
    previous: dict[str, Any],
    results: list[RepoResult],
    models_path: str,
    started: str,
    t0: float,
    prune: bool,
    after: Any,
    max_share: int,
    force: bool,
) -> str | None:
    """Prune (if asked and nothing failed) and write status.json for a models.txt run; why a prune was refused."""
    old_delisted = previous.get("delisted")
    delisted: dict[str, str] = dict(old_delisted) if isinstance(old_delisted, dict) else {}
    pruned: list[str] = []
    prune_refused: str | None = None
    failed = [r for r in results if not r.ok]
    if prune and failed:
        log.warning("not pruning: %d repo(s) failed in this run", len(failed))
    elif prune:
        now, share = datetime.now(UTC), max_share / 100
        pruned, delisted, prune_refused = run_prune(target, results, delisted, now, after, share, force)
    status = scheduled_run(
        previous,
        results,
        models_file=models_path,
        started=started,
        ended=now_iso(),
        seconds=time.monotonic() - t0,
        delisted=delisted,
        pruned=pruned,
        prune_refused=prune_refused,
    )
    target.put_json(layout.status_key(target.prefix), status)
    return prune_refused


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
    as_json: bool = False,
) -> None:
    """The plan of a run, from the same decisions a run makes (resolve, then per file: upload, copy or leave), read
    from the source and S3 and printed per repo with bytes (or as JSON); nothing is written anywhere."""
    target = _target(bucket, prefix, endpoint_url, region, pool=workers * 4 + 8)
    publisher = Publisher(target, hub, Path(tempfile.gettempdir()), workers=workers)
    plans: list[RepoPlan] = []
    doc: dict[str, Any] = {"repos": [], "prune": None}

    def say(line: str) -> None:
        if not as_json:
            click.echo(line)

    for e in entries:
        src = f"local {e.source}" if e.source else hub.shown_endpoint
        plan = publisher.plan(e)
        plans.append(plan)
        row: dict[str, Any] = {"repo": e.display, "source": src, "sha": plan.sha, "error": plan.error}
        doc["repos"].append(row)
        if plan.error is not None:
            say(f"{e.display}: from {src}: cannot resolve: {plan.error}")
            continue
        assert plan.sha is not None
        ref = f"{layout.ref_path(e.ref_name)} -> {plan.sha[:12]}" if e.ref_name else f"pinned {plan.sha[:12]}"
        ref += " (moves)" if plan.ref_moves else " (unchanged)" if e.ref_name else ""
        totals = plan.totals()
        row.update(ref=e.ref_name, ref_moves=plan.ref_moves)
        row["files"] = [{"path": path, "action": fp.action.value, "bytes": fp.size or 0} for path, fp in plan.files]
        parts = [
            f"{action.value} {plural(totals.get(action, (0, 0))[0], 'file')}"
            f" ({human_bytes(totals.get(action, (0, 0))[1])})"
            for action in (Action.FETCH, Action.COPY, Action.SKIP)
        ]
        say(f"{e.display}: from {src}, {ref}: " + ", ".join(parts))
        for path, fp in plan.files:
            if fp.action is not Action.SKIP:
                say(f"  {fp.action.value:6} {path} ({human_bytes(fp.size or 0)})")
    if prune:
        resolved = [
            RepoResult(p.entry, sha=p.sha, state=RepoState.OK if p.error is None else RepoState.FAILED) for p in plans
        ]
        if not all(r.ok for r in resolved):
            say("prune: nothing (a repo could not be resolved; a run would not prune either)")
            doc["prune"] = {"actions": [], "refused": None, "skipped": "a repo could not be resolved"}
        else:
            previous = target.get_json(layout.status_key(target.prefix))
            old = previous.get("delisted") if isinstance(previous, dict) else None
            refs, snaps = keep_sets(resolved)
            delisted = dict(old) if isinstance(old, dict) else {}
            published = scan_published(target)
            actions, _ = plan_prune(published, refs, snaps, delisted, datetime.now(UTC), after)
            refused = prune_refusal(actions, published, prune_share, force)
            doc["prune"] = {"actions": [describe(a) for a in actions], "refused": refused}
            if refused:
                say(f"prune: a run would refuse: {refused}")
            for action in actions:
                say(f"prune: {action.kind} {action.folder} {action.name}")
            if not actions:
                say("prune: nothing due")
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    failed = [p for p in plans if p.error is not None]
    if failed:
        raise RefreshFailedError([p.entry.display for p in failed], len(plans), "could not be resolved")


def _manifests(target: Target) -> tuple[list[dict[str, Any]], list[str]]:
    """Valid manifests, and the keys of corrupt ones (reported by ls/verify, replaced by the next refresh)."""
    root = layout.manifests_prefix(target.prefix)
    out, corrupt = [], []
    for key in sorted(target.list(root)):
        manifest = target.get_json(key)
        if valid_manifest(manifest):
            out.append(manifest)
        else:
            corrupt.append(key)
    return out, corrupt


@click.command(name="ls")
@options.s3_target
@options.as_json
def ls(bucket: str, prefix: str, endpoint_url: str | None, region: str | None, as_json: bool) -> None:
    """List published snapshots: repo (as verify, rm and doctor take it), refs, sha, files, size, published-at."""
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
                "name": format_repo(m["repo"], m["type"]),
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
        click.echo(
            f"{r['name']:40} {','.join(r['refs']) or '-':16} {r['sha'][:12]:12} {r['files']:>5} "
            f"{human_bytes(r['bytes']):>10}  {r['published_at']}"
        )


def _select(target: Target, manifests: list[dict[str, Any]], names: list[RepoName]) -> list[dict[str, Any]]:
    """The manifests ``names`` pick: every snapshot of a repo, the one a ref points at, or the one a sha names."""
    if not names:
        return manifests
    known = {(m["type"], m["repo"]) for m in manifests}
    if (problem := not_published(names, known)) is not None:
        raise ConfigError(problem)
    published = scan_published(target)
    picked: dict[tuple[str, str, str], dict[str, Any]] = {}
    for name in names:
        folder = layout.repo_folder_name(name.repo_id, name.repo_type)
        want = name.pinned_sha or (published.refs.get(folder, {}).get(name.revision) if name.revision else None)
        if name.revision and want is None:
            refs = ", ".join(sorted(published.refs.get(folder, {}))) or "none"
            raise ConfigError(f"{name}: no ref {name.revision!r} (refs: {refs}); name a published ref or full sha")
        found = [
            m
            for m in manifests
            if (m["type"], m["repo"]) == (name.repo_type, name.repo_id) and want in (None, m["sha"])
        ]
        if not found:
            raise ConfigError(f"{name}: no published snapshot; run `hf-cache ls` to see what is")
        for m in found:
            picked[(m["type"], m["repo"], m["sha"])] = m
    return list(picked.values())


def _verify_files(target: Target, manifests: list[dict[str, Any]], progress: Progress) -> list[dict[str, str]]:
    """Read every object of ``manifests`` back and hash it: one problem per missing or different file."""
    bad: list[dict[str, str]] = []
    for m in manifests:
        for f in m["files"]:
            key = layout.snapshot_key(target.prefix, m["repo"], m["type"], m["sha"], f["path"])
            problem = {"repo": format_repo(m["repo"], m["type"], m["sha"]), "path": f["path"]}
            digest = hashlib.sha256()
            try:
                with s3_errors(target.bucket, key, "read"):
                    body = target.client.get_object(Bucket=target.bucket, Key=key)["Body"]
                    for chunk in body.iter_chunks(8 * 1024 * 1024):
                        digest.update(chunk)
                        progress.advance(len(chunk))
            except StorageError as exc:
                if exc.status is None:
                    raise  # S3 did not answer: the command fails with that line, no file is judged on it
                bad.append({**problem, "problem": "missing" if is_not_found(exc) else f"unreadable ({exc.code})"})
                continue
            if digest.hexdigest() != f["sha256"]:
                bad.append({**problem, "problem": "sha256 mismatch"})
            progress.advance(0, 1)
    return bad


@click.command()
@click.argument("repos", nargs=-1, metavar=f"[{GRAMMAR}]...")
@options.s3_target
@click.option(
    "--repair",
    is_flag=True,
    help="Re-publish exactly the missing or corrupt files found (from the Hub, at the same sha), then verify again.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, settings.MAX_WORKERS),
    default=settings.WORKERS,
    show_default=True,
    help="With --repair: files in flight.",
)
@options.as_json
def verify(
    repos: tuple[str, ...],
    bucket: str,
    prefix: str,
    endpoint_url: str | None,
    region: str | None,
    repair: bool,
    workers: int,
    as_json: bool,
) -> None:
    """Re-read published objects and check them against their manifests (exit 1 on any mismatch).

    REPO picks every snapshot of a repo, @REF the one the ref points at, @SHA that snapshot; none: everything.
    """
    names = parse_repos(repos)
    target = _target(bucket, prefix, endpoint_url, region, pool=workers * 4 + 8)
    valid, corrupt = _manifests(target)
    manifests = _select(target, valid, names)
    corrupt_lines = [f"{key} is corrupt (not a valid manifest); the next refresh replaces it" for key in corrupt]
    total = sum(f["size"] for m in manifests for f in m["files"])
    with Progress("verify", total_bytes=total) as progress:
        bad = _verify_files(target, manifests, progress)
    repaired: list[dict[str, Any]] = []
    if repair and bad:
        repaired, bad = _repair(target, manifests, bad, workers)
    if as_json:
        doc = {
            "snapshots": len(manifests),
            "bytes": total,
            "problems": bad,
            "corrupt_manifests": corrupt,
            "repaired": repaired,
        }
        click.echo(json.dumps(doc, indent=1))
    else:
        for r in repaired:
            click.echo(f"REPAIRED {r['repo']}: {r['path']} ({r['problem']})")
        for line in corrupt_lines:
            click.echo(f"MISMATCH {line}")
        for b in bad:
            click.echo(f"MISMATCH {b['repo']}: {b['path']} {b['problem']}")
        click.echo(
            f"verified {plural(len(manifests), 'snapshot')}, {human_bytes(total)}: "
            + ("all intact" if not bad and not corrupt else f"{plural(len(bad) + len(corrupt), 'problem')}")
            + (f"; repaired {plural(len(repaired), 'file')}" if repaired else "")
        )
    if bad or corrupt:
        hint = "" if repair else "; `hf-cache verify --repair` re-publishes them"
        raise HfCacheError(f"{plural(len(bad) + len(corrupt), 'published file')} do not match their manifests{hint}")


def _repair(
    target: Target, manifests: list[dict[str, Any]], bad: list[dict[str, str]], workers: int
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Re-publish the broken snapshots through the publish path (which leaves every file S3 still vouches for and
    re-fetches the rest), under the writer's lease, then hash them again: (repaired files, problems left)."""
    broken = {b["repo"] for b in bad}
    todo = [m for m in manifests if format_repo(m["repo"], m["type"], m["sha"]) in broken]
    left: list[dict[str, str]] = []
    scratch = make_scratch(None)
    try:
        with Lease(target.client, target.bucket, target.prefix) as lease:
            lease.guard()
            with Progress("repair") as progress:
                publisher = Publisher(target, HubSource(), scratch, workers=workers, progress=progress)
                for m in todo:
                    entry, why = repair_entry(m)
                    if entry is None:
                        name = format_repo(m["repo"], m["type"], m["sha"])
                        left += [
                            {**b, "problem": f"{b['problem']}, not repaired: {why}"} for b in bad if b["repo"] == name
                        ]
                        continue
                    lease.check()
                    result = publisher.publish(entry)
                    if not result.ok:
                        name = format_repo(m["repo"], m["type"], m["sha"])
                        left += [
                            {**b, "problem": f"{b['problem']}, repair failed: {result.error}"}
                            for b in bad
                            if b["repo"] == name
                        ]
    except BOTO_ERRORS as exc:
        raise translate(exc, bucket=target.bucket) from exc
    finally:
        remove_scratch(scratch)
    failed = {b["repo"] for b in left}
    again = [m for m in todo if format_repo(m["repo"], m["type"], m["sha"]) not in failed]
    with Progress("verify") as progress:
        still = _verify_files(target, again, progress)
    still_keys = {(b["repo"], b["path"]) for b in still}
    repaired = [b for b in bad if b["repo"] not in failed and (b["repo"], b["path"]) not in still_keys]
    return repaired, left + still


@click.command(name="rm")
@click.argument("repos", nargs=-1, required=True, metavar=f"{GRAMMAR}...")
@options.s3_target
@options.max_share("remove")
@click.option("--force", is_flag=True, help="Remove even what --max-share refuses (e.g. the last repo).")
@click.option("--dry-run", is_flag=True, help="Print what would be removed; delete nothing.")
@options.as_json
def rm(
    repos: tuple[str, ...],
    bucket: str,
    prefix: str,
    endpoint_url: str | None,
    region: str | None,
    max_share: int,
    force: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Remove published repos, refs or snapshots from S3 now, without editing models.txt.

    REPO removes every ref and snapshot of it; @REF that ref (and its snapshot if no other ref points at it);
    @SHA that snapshot and the refs pointing at it. Refs go first, then manifest, tree listing and files, as prune
    does; a repo still in models.txt comes back on the next refresh.
    """
    names = parse_repos(repos)
    target = _target(bucket, prefix, endpoint_url, region)
    try:
        published = scan_published(target)
        actions, problems = plan_remove(published, names)
        if problems:
            raise ConfigError("; ".join(problems))
        if prune_refusal(actions, published, max_share / 100, force) is not None:
            gone, every = removed_repos(actions, published), set(published.refs) | set(published.snapshots)
            raise ConfigError(
                f"rm would remove {len(gone)} of {len(every)} published repos, more than --max-share {max_share}%"
                " allows (or every one); nothing was removed. If that is meant, rerun with --force"
            )
        removed: list[str] = []
        if not dry_run:
            with Lease(target.client, bucket, target.prefix) as lease:
                lease.guard()
                apply_prune(target, actions)
                removed = [describe(a) for a in actions]
    except BOTO_ERRORS as exc:
        raise translate(exc, bucket=bucket) from exc
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "actions": [describe(a) for a in actions]}, indent=1))
        return
    for a in actions:
        click.echo(f"{'would remove' if dry_run else 'removed'} {describe(a)}")
    if not dry_run:
        click.echo(f"removed {plural(len(removed), 'item')}")
