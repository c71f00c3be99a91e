"""``hf-cache node ls``: what the node tier holds - per snapshot, files and bytes hot (local) and cold (mount)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import click

from hf_cache import layout, options, settings
from hf_cache.errors import ConfigError
from hf_cache.node.tree import load_entries, open_tier, read_refs
from hf_cache.progress import human_bytes
from hf_cache.reponame import format_repo


def summary(root: Path) -> list[dict[str, Any]]:
    """One row per snapshot in the tier: repo, sha, the refs naming it, hot/cold files and bytes."""
    tier = open_tier(root)
    if tier is None:
        raise ConfigError(
            f"{root} is not a node tier (no .hf-cache-node/tier.json): pass the node's --tier-dir, or HF_HOME in a "
            "job pod, and check that hf-cache mount runs with --tier-dir / HFCACHE_TIER_DIR"
        )
    rows: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"hot_files": 0, "hot_bytes": 0, "cold_files": 0, "cold_bytes": 0}
    )
    for e in load_entries(tier):
        row = rows[(e.repo, e.sha)]
        kind = "hot" if tier.is_hot(e) else "cold"
        row[f"{kind}_files"] += 1
        row[f"{kind}_bytes"] += e.size
    out = []
    for (repo, sha), row in sorted(rows.items()):
        refs = sorted(n for n, s in read_refs(tier.hub / repo / layout.REFS_DIR).items() if s == sha)
        out.append({"repo": repo, "sha": sha, "refs": refs, **row})
    return out


@click.group()
def node() -> None:
    """The node tier: verified local copies of what this node read (see docs/node-tier.md)."""


@node.command("ls")
@options.env_option(
    "--tier-dir",
    envvar=[settings.TIER_DIR_ENV, settings.HF_HOME_ENV],
    default=settings.MOUNTPOINT,
    show_default=True,
    help="The tier: the node's --tier-dir, or HF_HOME in a job pod.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per snapshot.")
def ls(tier_dir: str, as_json: bool) -> None:
    """Show what is hot on this node: per snapshot, files and bytes local (hot) and still on the mount (cold)."""
    rows = summary(Path(os.path.abspath(tier_dir)))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    for r in rows:
        parsed = layout.parse_repo_folder(r["repo"])
        name = format_repo(parsed[1], parsed[0]) if parsed else r["repo"]
        refs = ",".join(r["refs"]) or "-"
        click.echo(
            f"{name}@{r['sha'][:12]} ({refs}): hot {r['hot_files']} files {human_bytes(r['hot_bytes'])}, "
            f"cold {r['cold_files']} files {human_bytes(r['cold_bytes'])}"
        )
    if not rows:
        click.echo("the tier holds no snapshot yet")


def tier_check(home: Path) -> tuple[tuple[bool, str] | None, Path]:
    """For ``hf-cache doctor``: (ok, a line explaining the tier) when ``home`` is a node tier, and the folder whose
    FUSE mount doctor should check (the tier's mount, or ``home`` itself). Never touches a mount: when ``home`` is
    one (no tier; it may be hung), it is left to doctor's bounded checks; the tier itself is local files."""
    from hf_cache.mount import fusemount

    if fusemount.mount_fstype(home) is not None:  # /proc only
        return None, home
    tier = open_tier(home)
    if tier is None:
        return None, home
    rows = summary(home)
    hot = sum(r["hot_files"] for r in rows)
    cold = sum(r["cold_files"] for r in rows)
    hot_bytes = sum(r["hot_bytes"] for r in rows)
    return (
        True,
        f"{home} is this node's tier: {hot} files hot (local, verified, {human_bytes(hot_bytes)}: they read even "
        f"while the mount is down), {cold} cold (read through the mount at {tier.mountpoint} until this node has "
        "read them once); `hf-cache node ls` lists them",
    ), tier.mountpoint
