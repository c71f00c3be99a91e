"""``hf-cache rm``: which refs and snapshots removing named repos deletes, decided purely.

The deletions themselves are prune's (``apply_prune``: refs first, then per snapshot its manifest, tree listing
and files), and so is the guard against removing every repo or most of them (``prune_refusal``): one way to
delete, whether a repo left models.txt or an operator named it.
"""

from __future__ import annotations

from hf_cache import layout
from hf_cache.refresh.prune import PruneAction, Published
from hf_cache.reponame import RepoName, format_repo, not_published

_FOLDER_TYPES = {"models": "model", "datasets": "dataset"}


def folder_repo(folder: str) -> tuple[str, str] | None:
    """``models--org--name`` -> ("model", "org/name"); None for a folder not a repo's (repo ids hold no '--')."""
    kind, sep, rest = folder.partition("--")
    if not sep or kind not in _FOLDER_TYPES or not rest:
        return None
    return _FOLDER_TYPES[kind], rest.replace("--", "/")


def published_names(published: Published) -> set[tuple[str, str]]:
    """(type, repo id) of every repo with a ref or a snapshot."""
    out = set()
    for folder in set(published.refs) | set(published.snapshots):
        name = folder_repo(folder)
        if name is not None:
            out.add(name)
    return out


def plan_remove(published: Published, names: list[RepoName]) -> tuple[list[PruneAction], list[str]]:
    """Pure: the deletions (refs first) that remove ``names``, and a problem per name that names nothing published.

    ``ORG/NAME`` removes every ref and snapshot of the repo; ``@REF`` that ref, and its snapshot when no ref left
    points at it; ``@SHA`` that snapshot and every ref pointing at it (a ref must never outlive its snapshot).
    """
    actions: dict[tuple[str, str, str], PruneAction] = {}
    problems: list[str] = []
    missing = not_published(names, published_names(published))
    if missing is not None:
        return [], [missing]
    for name in names:
        folder = layout.repo_folder_name(name.repo_id, name.repo_type)
        refs = published.refs.get(folder, {})
        snaps = published.snapshots.get(folder, set())
        if name.revision is None:
            gone_refs, gone_snaps = set(refs), set(snaps)
        elif name.pinned_sha is not None:
            if name.pinned_sha not in snaps:
                problems.append(f"{name}: no such snapshot; run `hf-cache ls` to see what is published")
                continue
            gone_snaps = {name.pinned_sha}
            gone_refs = {ref for ref, sha in refs.items() if sha == name.pinned_sha}
        else:
            if name.revision not in refs:
                shown = ", ".join(sorted(refs)) or "none"
                problems.append(f"{name}: no ref {name.revision!r} (refs: {shown}); name a published ref or sha")
                continue
            gone_refs = {name.revision}
            sha = refs[name.revision]
            others = [r for r, s in refs.items() if s == sha and r != name.revision]
            gone_snaps = {sha} if not others and sha in snaps else set()
        for ref in gone_refs:
            actions[("ref", folder, ref)] = PruneAction("ref", folder, ref)
        for sha in gone_snaps:
            actions[("snapshot", folder, sha)] = PruneAction("snapshot", folder, sha)
    ordered = sorted(actions.values(), key=lambda a: (a.kind != "ref", a.folder, a.name))
    return ordered, problems


def describe(action: PruneAction) -> str:
    """An action as the repo grammar prints it: ``org/x@main`` (ref) or ``org/x@<sha>`` (snapshot)."""
    name = folder_repo(action.folder)
    repo = format_repo(name[1], name[0], action.name) if name else f"{action.folder}@{action.name}"
    return f"{action.kind} {repo}"
