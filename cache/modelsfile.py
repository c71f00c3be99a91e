"""Parse and validate ``models.txt``: the list of repos refresh publishes.

The whole file is validated before anything is fetched, and every problem is reported at once with its file
and line number, so a bad edit fails the CronJob loudly instead of publishing half a list.

Syntax checks hold everywhere; checks of the writer's environment (a ``source=`` folder exists) only where refresh
runs: reader nodes (``hf-cache warm --models``) never have those folders, so they parse with ``writer=False``.

Format, one entry per line::

    ORG/NAME[@REVISION] [type=model|dataset] [include=GLOB,...] [exclude=GLOB,...] [source=file:///abs/path]

Blank lines and ``#`` comments (full-line, or trailing after whitespace) are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import unquote, urlparse

from hf_cache import reponame
from hf_cache.errors import ModelsFileError
from hf_cache.layout import REPO_TYPES, SHA_RE, RepoType, is_repo_type, ref_path

KNOWN_KEYS = ("type", "include", "exclude", "source")
_SHORT_SHA = re.compile(r"^[0-9a-f]{6,39}$")
_BAD_REF_CHARS = re.compile(r"[\s~^:?*\[\\\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ModelEntry:
    """One validated line of models.txt."""

    repo_id: str
    revision: str | None = None
    repo_type: RepoType = "model"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    source: Path | None = None
    line: int = 0
    options: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    @property
    def requested_revision(self) -> str:
        return self.revision or "main"

    @property
    def ref_name(self) -> str | None:
        """The ``refs/<name>`` to publish; a full-sha pin needs none (huggingface_hub resolves it directly)."""
        rev = self.requested_revision
        return None if SHA_RE.match(rev) else rev

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.repo_type, self.repo_id, self.requested_revision)

    @property
    def display(self) -> str:
        return reponame.format_repo(self.repo_id, self.repo_type, self.requested_revision)

    def wants(self, path: str) -> bool:
        """huggingface_hub's allow/ignore pattern semantics: a trailing ``/`` matches everything below."""
        if self.include and not any(_match(path, p) for p in self.include):
            return False
        return not any(_match(path, p) for p in self.exclude)


def _match(path: str, pattern: str) -> bool:
    if pattern.endswith("/"):
        pattern += "*"
    return fnmatch(path, pattern)


def repo_id_problem(repo_id: str) -> str | None:
    """Why ``repo_id`` is not a valid Hub repo id (huggingface_hub's validate_repo_id decides), or None."""
    return reponame.repo_id_problem(repo_id)


def revision_problem(rev: str) -> str | None:
    """Why ``rev`` is not a branch/tag name or a full sha (git's ref-name rules), or None."""
    if not rev:
        return "empty revision after '@'; drop the '@' or name a branch, tag or full sha"
    if SHA_RE.match(rev):
        return None
    if _SHORT_SHA.match(rev) and any(c.isdigit() for c in rev) and any(c in "abcdef" for c in rev):
        return f"revision {rev!r} looks like a short commit sha; pin the full 40-character sha"
    if (
        _BAD_REF_CHARS.search(rev)
        or ".." in rev
        or "@{" in rev
        or "//" in rev
        or rev.startswith(("-", "/", "."))
        or rev.endswith(("/", ".", ".lock"))
    ):
        return f"invalid revision {rev!r}; use a branch or tag name, or a full 40-character commit sha"
    return None


def glob_problem(pattern: str) -> str | None:
    if not pattern:
        return "empty glob in list; remove the extra ','"
    depth = 0
    for ch in pattern:
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
    if depth:
        return f"bad glob {pattern!r}: unbalanced '['; close it with ']' or match a literal '[' as [[]"
    if pattern.startswith("/") or ".." in pattern.split("/"):
        return f"bad glob {pattern!r}: patterns match paths inside the repo; drop the leading '/' or '..'"
    return None


def _strip_comment(raw: str) -> str:
    for i, ch in enumerate(raw):
        if ch == "#" and (i == 0 or raw[i - 1].isspace()):
            return raw[:i]
    return raw


def _parse_source(value: str, writer: bool) -> tuple[Path | None, str | None]:
    parsed = urlparse(value)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None, f"source {value!r} is not a file:// URL; use source=file:///absolute/path"
    path = Path(unquote(parsed.path))
    if not path.is_absolute():
        return None, f"source {value!r} is not an absolute path; use source=file:///absolute/path"
    if path == Path(path.anchor):
        return None, f"source {value!r} is the whole root filesystem; name the model's own folder"
    if writer and not path.is_dir():
        return None, f"source folder {str(path)!r} does not exist or is not a folder; fix the path or create it"
    return path, None


def _parse_line(text: str, lineno: int, where: str, writer: bool = True) -> tuple[ModelEntry | None, list[str]]:
    problems: list[str] = []

    def bad(msg: str) -> None:
        problems.append(f"{where}:{lineno}: {msg}")

    tokens = text.split()
    spec, opts = tokens[0], tokens[1:]
    if "=" in spec:
        bad(f"expected a repo id first, got option {spec!r}; write ORG/NAME[@REVISION] [key=value ...]")
        return None, problems
    repo_id, at, revision = spec.partition("@")
    if (msg := repo_id_problem(repo_id)) is not None:
        bad(msg)
    rev: str | None = None
    if at:
        rev = revision
        if (msg := revision_problem(revision)) is not None:
            bad(msg)

    values: dict[str, str] = {}
    for opt in opts:
        key, eq, value = opt.partition("=")
        if not eq:
            bad(f"option {opt!r} has no '='; write key=value ({', '.join(KNOWN_KEYS)})")
            continue
        if key not in KNOWN_KEYS:
            bad(f"unknown option {key!r}; known options are {', '.join(KNOWN_KEYS)}")
            continue
        if key in values:
            bad(f"option {key!r} given twice; keep one")
            continue
        if not value:
            bad(f"option {key!r} has an empty value; give a value or drop the option")
            continue
        values[key] = value

    named_type = values.get("type", "model")
    repo_type: RepoType = "model"
    if is_repo_type(named_type):
        repo_type = named_type
    else:
        bad(f"type={named_type!r} is not one of {', '.join(REPO_TYPES)}; write type=model or type=dataset")
    globs: dict[str, tuple[str, ...]] = {}
    for key in ("include", "exclude"):
        patterns = tuple(values[key].split(",")) if key in values else ()
        for pattern in patterns:
            if (msg := glob_problem(pattern)) is not None:
                bad(f"{key}: {msg}")
        globs[key] = patterns
    source: Path | None = None
    if "source" in values:
        source, msg = _parse_source(values["source"], writer)
        if msg:
            bad(msg)
        if rev is not None:
            bad(
                "a revision cannot be pinned with source=: the commit is derived from the folder's contents;"
                " drop the @REV"
            )
    if problems:
        return None, problems
    entry = ModelEntry(
        repo_id=repo_id,
        revision=rev,
        repo_type=repo_type,
        include=globs["include"],
        exclude=globs["exclude"],
        source=source,
        line=lineno,
        options=tuple(values.items()),
    )
    return entry, []


def ref_clash(a: str, b: str) -> bool:
    """Whether refs ``a`` and ``b`` cannot both exist: one would be a file and a folder (``main``, ``main/x``)."""
    return a != b and (b.startswith(a + "/") or a.startswith(b + "/"))


def parse_models_text(text: str, filename: str = "models.txt", *, writer: bool = True) -> list[ModelEntry]:
    """All entries of a models file, or ModelsFileError listing every problem (file:line: what to do).

    ``writer=False`` keeps the syntax checks but skips those of the writer's disk (source folders exist).
    """
    problems: list[str] = []
    entries: list[ModelEntry] = []
    seen: dict[tuple[str, str, str], int] = {}
    refs: dict[tuple[str, str], list[tuple[str, int]]] = {}
    spellings: dict[tuple[str, str], tuple[str, int]] = {}  # (type, lower-case id) -> (first spelling, line)
    text = text.removeprefix("\ufeff")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        content = _strip_comment(raw).strip()
        if not content:
            continue
        entry, line_problems = _parse_line(content, lineno, filename, writer)
        problems.extend(line_problems)
        if entry is None:
            continue
        first_spelling = spellings.setdefault((entry.repo_type, entry.repo_id.lower()), (entry.repo_id, lineno))
        if first_spelling[0] != entry.repo_id:
            problems.append(
                f"{filename}:{lineno}: {entry.repo_id} and {first_spelling[0]} (line {first_spelling[1]}) are one repo"
                " on the Hub (it ignores case) but would be two cache folders; spell it one way"
            )
            continue
        if entry.key in seen:
            problems.append(
                f"{filename}:{lineno}: duplicate entry {entry.display} (first on line {seen[entry.key]}); remove one"
            )
            continue
        if entry.ref_name is not None:
            published = refs.setdefault((entry.repo_type, entry.repo_id), [])
            clash = next(((name, first) for name, first in published if ref_clash(name, entry.ref_name)), None)
            if clash is not None:
                problems.append(
                    f"{filename}:{lineno}: ref {entry.ref_name!r} of {entry.repo_id} clashes with ref {clash[0]!r}"
                    f" (line {clash[1]}): {ref_path(clash[0])} and {ref_path(entry.ref_name)} cannot both exist in a"
                    " cache folder; keep one of them"
                )
                continue
            published.append((entry.ref_name, lineno))
        seen[entry.key] = lineno
        entries.append(entry)
    if problems:
        raise ModelsFileError(problems)
    return entries


def parse_models_file(path: str | Path, *, writer: bool = True) -> list[ModelEntry]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ModelsFileError([f"{path}: no such file; pass --models PATH or set HFCACHE_MODELS"]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelsFileError([f"{path}: cannot read models file: {exc}; pass a readable UTF-8 file"]) from exc
    return parse_models_text(text, str(path), writer=writer)
