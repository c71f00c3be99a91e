"""One grammar for a repo on the command line: ``[dataset:]ORG/NAME[@REV]``.

Every command that takes or prints a repo goes through here, so what ``ls`` prints can be pasted into ``verify``,
``rm``, ``doctor`` or ``warm``. Repo ids are checked with huggingface_hub's own ``validate_repo_id`` (not a copy of
its rules), revisions with the models.txt rules (a short sha is refused: only a full sha pins a commit).

Case: the Hub resolves ``Org/Tiny`` and ``org/tiny`` to one repo, but the cache folder huggingface_hub looks up in
is spelled exactly as the job spells it (``models--Org--Tiny`` is another folder). So one repo has one spelling in
hf-cache: a name that matches a published repo only when case is ignored is an error that names the published
spelling (``case_clash``), never a second copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from huggingface_hub.utils import HFValidationError, validate_repo_id

from hf_cache.errors import ConfigError
from hf_cache.layout import REPO_TYPES, SHA_RE, RepoType, is_repo_type

GRAMMAR = "[dataset:]ORG/NAME[@REV]"


@dataclass(frozen=True)
class RepoName:
    """A repo as named on the command line; ``revision`` None means every published revision (or ``main``)."""

    repo_id: str
    repo_type: RepoType = "model"
    revision: str | None = None

    @property
    def pinned_sha(self) -> str | None:
        return self.revision if self.revision and SHA_RE.match(self.revision) else None

    def __str__(self) -> str:
        return format_repo(self.repo_id, self.repo_type, self.revision)


def format_repo(repo_id: str, repo_type: str = "model", revision: str | None = None) -> str:
    """How every command prints a repo: the same text ``parse_repo`` reads back."""
    kind = "" if repo_type == "model" else f"{repo_type}:"
    return f"{kind}{repo_id}" + (f"@{revision}" if revision else "")


def repo_id_problem(repo_id: str) -> str | None:
    """Why ``repo_id`` is not a Hub repo id, with what to write instead, or None.

    huggingface_hub's ``validate_repo_id`` decides; the words are ours, because its messages say what is wrong but
    not what to write.
    """
    if not repo_id:
        return "empty repo id; write ORG/NAME"
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        if repo_id.count("/") > 1:
            return f"repo id {repo_id!r} has more than one '/'; write ORG/NAME (a dataset as dataset:ORG/NAME)"
        if "--" in repo_id or ".." in repo_id:
            return f"invalid repo id {repo_id!r}: '--' and '..' are not allowed; write the repo id as the Hub shows it"
        if repo_id.endswith(".git"):
            return f"invalid repo id {repo_id!r}: it cannot end with '.git'; drop the '.git'"
        return (
            f"invalid repo id {repo_id!r}: use ORG/NAME with letters, digits, '-', '_' and '.', at most 96 each;"
            " a part cannot start or end with '-' or '.'"
        )
    return None


def parse_repo(text: str) -> RepoName:
    """``[dataset:]ORG/NAME[@REV]`` -> RepoName, or ConfigError saying what is wrong and what to write."""
    from hf_cache.modelsfile import revision_problem  # the models.txt revision rules, one copy

    spec = text.strip()
    repo_type: RepoType = "model"
    kind, colon, rest = spec.partition(":")
    if colon:
        if not is_repo_type(kind):
            raise ConfigError(f"{text!r}: unknown repo type {kind!r}; write {GRAMMAR} (types: {', '.join(REPO_TYPES)})")
        repo_type, spec = kind, rest
    repo_id, at, revision = spec.partition("@")
    if (problem := repo_id_problem(repo_id)) is not None:
        raise ConfigError(f"{text!r}: {problem} ({GRAMMAR})")
    if at and (problem := revision_problem(revision)) is not None:
        raise ConfigError(f"{text!r}: {problem}")
    return RepoName(repo_id, repo_type, revision if at else None)


def parse_repos(texts: tuple[str, ...] | list[str]) -> list[RepoName]:
    """Several names; every bad one reported at once, and the same repo named twice is refused."""
    problems, out, seen = [], [], set()
    for text in texts:
        try:
            name = parse_repo(text)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if name in seen:
            problems.append(f"{text!r} is named twice; name it once")
            continue
        seen.add(name)
        out.append(name)
    if problems:
        raise ConfigError("; ".join(problems))
    return out


def case_clash(name: RepoName, known: set[tuple[str, str]]) -> str | None:
    """The published spelling ``name`` matches only when case is ignored, or None. ``known``: (type, repo_id)."""
    if (name.repo_type, name.repo_id) in known:
        return None
    for repo_type, repo_id in sorted(known):
        if repo_type == name.repo_type and repo_id.lower() == name.repo_id.lower():
            return repo_id
    return None


def not_published(names: list[RepoName], known: set[tuple[str, str]]) -> str | None:
    """One line for the names that match no published repo (a case-only match names the spelling to use)."""
    problems = []
    for name in names:
        if (name.repo_type, name.repo_id) in known:
            continue
        spelled = case_clash(name, known)
        if spelled is not None:
            problems.append(
                f"{name} is published as {format_repo(spelled, name.repo_type)}: repo ids are matched as spelled"
                " (jobs look up that exact folder); use that spelling"
            )
        else:
            problems.append(f"{name} is not published")
    if not problems:
        return None
    return "; ".join(problems) + "; run `hf-cache ls` to see what is"
