"""``hf-cache env``, ``warm`` and ``doctor``: the commands a job pod (or a node) runs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click
from click.core import ParameterSource

from hf_cache import options, settings
from hf_cache.errors import ConfigError, HfCacheError
from hf_cache.layout import RepoType, mount_hub_dir
from hf_cache.modelsfile import parse_models_file
from hf_cache.progress import Progress, human_bytes, plural
from hf_cache.readers.envvars import reader_env
from hf_cache.reponame import GRAMMAR, parse_repos

mountpoint_opt = options.mountpoint()


def format_env(env: dict[str, str], fmt: str) -> str:
    if fmt == "shell":
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
    if fmt == "json":
        return json.dumps(env, indent=1)
    if fmt == "dotenv":
        return "\n".join(f"{k}={v}" for k, v in env.items())
    # k8s: a container's env list; values JSON-quoted, which is valid YAML
    return "env:\n" + "\n".join(f"  - name: {k}\n    value: {json.dumps(v)}" for k, v in env.items())


@click.command()
@mountpoint_opt
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["shell", "dotenv", "k8s", "json"]),
    default="shell",
    show_default=True,
    help="shell (export lines), dotenv, k8s (a container's env list) or json (an object).",
)
@options.as_json
def env(mountpoint: str, fmt: str, as_json: bool) -> None:
    """Print the environment that makes Hugging Face libraries read the mount, offline."""
    click.echo(format_env(reader_env(mountpoint), "json" if as_json else fmt))


def _specs(repos: tuple[str, ...], models: str | None) -> list[tuple[str, str | None, RepoType]]:
    """(repo_id, revision, type) from ``[dataset:]ORG/NAME[@REV]`` arguments and/or a models file."""
    names = parse_repos(repos)
    specs = [(n.repo_id, n.revision, n.repo_type) for n in names]
    if models:
        entries = parse_models_file(models, writer=False)  # reader nodes have no source= folders
        specs += [(e.repo_id, e.revision, e.repo_type) for e in entries]
    if not specs:
        raise ConfigError(f"name at least one {GRAMMAR}, or --models models.txt")
    return specs


@click.command()
@click.argument("repos", nargs=-1, metavar=f"[{GRAMMAR}]...")
@click.option("--models", type=click.Path(dir_okay=False), default=None, help="Warm every entry of a models file.")
@mountpoint_opt
@click.option(
    "--workers",
    type=click.IntRange(1, settings.MAX_WORKERS),
    default=settings.WARM_WORKERS,
    show_default=True,
    help="Read streams in flight in all (each large file is read as several segments at once).",
)
@options.as_json
def warm(repos: tuple[str, ...], models: str | None, mountpoint: str, workers: int, as_json: bool) -> None:
    """Read every file of the given snapshots through the mount, verified, so this node's cache holds them."""
    from hf_cache.errors import MountError
    from hf_cache.readers.doctor import check_mount
    from hf_cache.readers.warm import resolve_snapshot
    from hf_cache.readers.warm import warm as warm_files

    specs = _specs(repos, models)
    mount = check_mount(Path(mountpoint))[0]
    if not mount.ok:
        raise MountError(f"not mounted: {mount.detail}")
    hub = Path(mount_hub_dir(mountpoint))
    resolved = [resolve_snapshot(hub, rid, rev, rtype) for rid, rev, rtype in specs]
    missing = [r for r in resolved if r.snapshot is None]
    found = [(r.snapshot, r.manifest) for r in resolved if r.snapshot is not None]
    problems = []
    with Progress("warm") as progress:
        try:
            files, nbytes = warm_files(found, workers=workers, progress=progress)
        except HfCacheError as exc:
            files, nbytes = progress.files, progress.bytes
            problems.append(str(exc))
    if missing:
        problems.append("not found: " + "; ".join(r.problem or r.spec for r in missing))
    if as_json:
        doc = {
            "snapshots": [r.spec for r in resolved if r.snapshot is not None],
            "files": files,
            "bytes": nbytes,
            "bytes_per_second": round(progress.rate),
            "problems": problems,
        }
        click.echo(json.dumps(doc, indent=1))
    else:
        click.echo(
            f"warmed {plural(len(found), 'snapshot')}: {plural(files, 'file')}, {human_bytes(nbytes)}"
            f" at {human_bytes(progress.rate)}/s"
        )
    if problems:
        raise HfCacheError("; ".join(problems))


@click.command()
@click.argument("repos", nargs=-1, metavar=f"[{GRAMMAR}]...")
@mountpoint_opt
@click.option(
    "--max-age",
    default=settings.DOCTOR_MAX_AGE,
    show_default=True,
    help="A refresh that ended longer ago than this is reported stale (36h, 1.5d).",
)
@click.option("--max-age-hours", type=float, default=None, hidden=True)  # the old spelling: existing probes use it
@options.as_json
def doctor(repos: tuple[str, ...], mountpoint: str, max_age: str, max_age_hours: float | None, as_json: bool) -> None:
    """Check this pod or node can read models from the mount; one line per check, the fix for each failure."""
    from hf_cache.readers.doctor import Check, check_env, check_fresh, check_mount, check_repo, max_age_seconds

    mp = Path(mountpoint)
    typed = click.get_current_context().get_parameter_source("max_age") is not ParameterSource.DEFAULT
    max_age_s = max_age_seconds(max_age, max_age_hours, typed)  # a bad value is refused before any check runs
    specs = _specs(repos, None) if repos else []  # a bad name is refused before any check runs
    checks: list[Check] = []

    def report(*found: Check) -> None:
        """One line as each check ends: a slow check never hides the ones before it (JSON: one object per line)."""
        for c in found:
            checks.append(c)
            if as_json:
                click.echo(json.dumps({"check": c.name, "ok": c.ok, "detail": c.detail}))
            else:
                click.echo(c.line())

    from hf_cache.node.command import tier_check

    tier, fuse_mp = tier_check(mp)  # HF_HOME may be the node tier (docs/node-tier.md), its mount below it
    report(check_env(mountpoint, settings.environ()), *([Check("tier", *tier)] if tier else []), *check_mount(fuse_mp))
    if all(c.ok for c in checks if c.name == "mount"):
        report(check_fresh(fuse_mp, max_age_s))
        for rid, rev, rtype in specs:
            report(check_repo(Path(mount_hub_dir(mountpoint)), rid, rev, rtype))
    failed = [c for c in checks if not c.ok]
    if failed:
        raise HfCacheError(f"{len(failed)} of {len(checks)} checks failed")
