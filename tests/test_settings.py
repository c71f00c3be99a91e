"""One place for each fact: keys in layout.py, defaults and variables in settings.py, the environment read there.

These tests read the package's source, so the rules stay true as code is added: a new hand-built key, a new
``os.environ`` read or a new variable missing from docs/environment.md fails here, naming the file and line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click

from hf_cache import settings
from hf_cache.readers.envvars import reader_env

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cache"
ENV_DOC = ROOT / "docs" / "environment.md"

# A key fragment at the start of a string or after a space/quote: "refs/main", f"hf-cache/{x}", "models--org--a".
# "/var/lib/hf-cache/mnt" (a node path) and "ghcr.io/hf-cache/hf-cache" (an image) are not keys and do not match.
_FRAGMENT = re.compile(r"(?:^|(?<=[\s'\"(]))(?:refs|snapshots|trees|blobs|hf-cache|hub)/|\b(?:models|datasets)--")
# A path component on its own: Path(...) / "refs", layout.join(root, "snapshots", sha).
_COMPONENTS = {"refs", "snapshots", "trees", "blobs", "manifests", "hf-cache", "status.json", "lease.json"}
# Owned elsewhere, or not ours to rename: layout.py is the one place; publish.py (its split, issue 13 item 2) uses
# layout's functions; faults.py holds test hooks.
_KEY_EXEMPT = {"layout.py"}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of string constants that are docstrings: prose may name keys."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _path_operands(tree: ast.AST) -> set[int]:
    """ids of string constants used as a path component: ``x / "refs"``, ``join(a, "trees", b)``, ``Path("hub")``."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            out |= {id(n) for n in (node.left, node.right) if isinstance(n, ast.Constant)}
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("join", "joinpath", "Path", "PurePosixPath"):
                out |= {id(n) for n in node.args if isinstance(n, ast.Constant)}
    return out


def hand_built_keys(path: Path, root: Path = ROOT) -> list[str]:
    """Every string literal in ``path`` (docstrings and comments aside) that spells part of a bucket key or cache
    path itself instead of asking cache/layout.py."""
    tree = ast.parse(path.read_text())
    docs, operands = _docstrings(tree), _path_operands(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value
            if _FRAGMENT.search(text) or (text in _COMPONENTS and id(node) in operands):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {text!r}")
    return found


def test_no_key_or_cache_path_is_built_by_hand_outside_layout() -> None:
    found = [hit for p in sorted(PACKAGE.rglob("*.py")) if p.name not in _KEY_EXEMPT for hit in hand_built_keys(p)]
    assert not found, "use cache/layout.py's names instead of:\n" + "\n".join(found)


def test_the_key_check_sees_what_it_must(tmp_path: Path) -> None:
    """The check itself: each way a key was built by hand before is caught; paths and prose are not."""
    (tmp_path / "x.py").write_text(
        '"""Docstrings may say refs/main and models--org--a."""\n'
        'a = f"refs/{name} -> {sha}"\n'
        'b = root / "snapshots" / sha\n'
        'c = join(prefix, "hf-cache", "manifests", folder)\n'
        'd = f"hub/{repo}/snapshots/{sha}"\n'
        'e = "hf-cache/status.json is not valid"\n'
        'f = "models--" + repo_id.replace("/", "--")\n'
        'ok = ("/var/lib/hf-cache/mnt", "ghcr.io/hf-cache/hf-cache:0.1", "the refs of a repo")  # refs/ in a comment\n'
        'row = {"refs": refs, "snapshots": 2}; prog = "hf-cache"; n = row["refs"]\n'
    )
    lines = [hit.split(":", 2)[1] for hit in hand_built_keys(tmp_path / "x.py", tmp_path)]
    assert sorted(set(lines), key=int) == ["2", "3", "4", "5", "6", "7"]


# Where the process environment may be touched outside settings.py: to copy it as a child process's environment
# (rclone's, the demo's and the test servers'), and the test-only fault hooks of cache/faults.py.
_CHILD_ENV = re.compile(r"\{\*\*os\.environ\b|os\.environ\.items\(\)|dict\(os\.environ\)")
_ENV_EXEMPT = {"settings.py", "faults.py"}


def environment_reads(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0]
        if re.search(r"\bos\.environ\b|\bgetenv\b", code) and not _CHILD_ENV.search(code):
            found.append(f"{path.relative_to(root)}:{lineno}: {line.strip()}")
    return found


def test_the_environment_is_read_only_in_settings() -> None:
    found = [hit for p in sorted(PACKAGE.rglob("*.py")) if p.name not in _ENV_EXEMPT for hit in environment_reads(p)]
    assert not found, "read the environment through hf_cache.settings (env, first_env, environ):\n" + "\n".join(found)


def test_the_environment_check_sees_what_it_must(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text(
        'a = os.environ.get("HF_ENDPOINT")\n'
        'b = os.getenv("X")\n'
        'c = os.environ["HFCACHE_RCLONE_ARGS"]\n'
        "env = {**os.environ, **extra}  # a child's environment: allowed\n"
        "keep = {k: v for k, v in os.environ.items() if k}\n"
    )
    assert [hit.split(":")[1] for hit in environment_reads(tmp_path / "x.py", tmp_path)] == ["1", "2", "3"]


def render_environment_doc() -> str:
    """docs/environment.md from settings.py: the variables hf-cache reads, then those `hf-cache env` sets."""
    out = [
        "# Environment variables",
        "",
        "Generated from `cache/settings.py` (`python3 -m tests.test_settings --write`); `tests/test_settings.py`",
        "fails when this file and the code disagree. Flags named in a row take the variable as their fallback.",
        "",
        "## Read by hf-cache",
        "",
        "| variable | used by | what | default |",
        "|---|---|---|---|",
    ]
    for v in settings.ENV_VARS:
        default = f"`{v.default}`" if v.default else ""
        what = v.why + (" (a secret: masked in every log line)" if v.secret else "")
        out.append(f"| `{v.name}` | {v.used_by} | {what} | {default} |")
    out += [
        "",
        "## Set in a job pod by `hf-cache env` (and the job-pod component, `hf-cache inject`)",
        "",
        "| variable | why |",
        "|---|---|",
        *(f"| `{name}` | {why} |" for name, why in settings.READER_ENV_VARS.items()),
        "",
        "## Test hooks",
        "",
        "`HFCACHE_TEST_KILL_AFTER` and `HFCACHE_FUSE_DEVICE` exist for the tests' fault injection only",
        "(`cache/faults.py`); never set them in a deployment.",
        "",
    ]
    return "\n".join(out)


def test_docs_environment_is_generated_from_settings() -> None:
    assert ENV_DOC.read_text() == render_environment_doc(), (
        "docs/environment.md and cache/settings.py differ: regenerate with python3 -m tests.test_settings --write"
    )


def test_every_variable_name_in_settings_is_listed_and_every_flag_takes_its_name_from_there() -> None:
    import click

    from hf_cache.cli import COMMANDS, LazyGroup, cli, envvars_of

    listed = {v.name for v in settings.ENV_VARS}
    names = vars(settings)
    named = {value for n, value in names.items() if n.endswith("_ENV") and isinstance(value, str)}
    named |= {name for n, value in names.items() if n.endswith("_ENVS") for name in value}
    assert named <= listed, f"settings.py names variables ENV_VARS does not list: {sorted(named - listed)}"
    ctx = click.Context(cli)
    group: LazyGroup = cli  # type: ignore[assignment]
    used = {e for p in cli.params for e in envvars_of(p)}
    for name in COMMANDS:
        command = group.get_command(ctx, name)
        assert command is not None
        stack = [command]
        while stack:
            c = stack.pop()
            used |= {e for p in c.params for e in envvars_of(p)}
            if isinstance(c, click.Group):
                stack += list(c.commands.values())
    assert used <= listed, f"flags read variables settings.ENV_VARS does not list: {sorted(used - listed)}"
    assert list(reader_env()) == list(settings.READER_ENV_VARS), "hf-cache env and settings.READER_ENV_VARS differ"


def _commands() -> dict[str, click.Command]:
    from hf_cache.cli import COMMANDS, LazyGroup, cli

    ctx = click.Context(cli)
    group: LazyGroup = cli  # type: ignore[assignment]
    out = {}
    for name in COMMANDS:
        command = group.get_command(ctx, name)
        assert command is not None
        out[name] = command
        if isinstance(command, click.Group):
            out.update({f"{name} {sub}": c for sub, c in command.commands.items()})
    return out


def _option(command: click.Command, flag: str) -> click.Option | None:
    return next((p for p in command.params if isinstance(p, click.Option) and flag in p.opts), None)


def test_a_flag_shared_by_commands_means_the_same_everywhere() -> None:
    """--bucket, --prefix, --endpoint-url, --region, --mountpoint and --max-share: one definition each, so the
    same name, variable, default and help in every command that takes it."""
    commands = _commands()
    for flag, takers in {
        "--bucket": ("refresh", "ls", "verify", "rm", "mount"),
        "--prefix": ("refresh", "ls", "verify", "rm", "mount"),
        "--endpoint-url": ("refresh", "ls", "verify", "rm", "mount"),
        "--region": ("refresh", "ls", "verify", "rm", "mount"),
        "--mountpoint": ("mount", "env", "warm", "doctor"),
        "--max-share": ("refresh", "rm"),
    }.items():
        found = {name: _option(commands[name], flag) for name in takers}
        assert all(found.values()), f"{flag} missing from {[n for n, o in found.items() if o is None]}"
        seen = {
            (tuple(o.opts), o.envvar if isinstance(o.envvar, str) else tuple(o.envvar or ()), o.default)
            for o in found.values()
            if o is not None
        }
        assert len(seen) == 1, f"{flag} differs between {', '.join(takers)}: {seen}"
    assert _option(commands["mount"], "--mountpoint").default == settings.MOUNTPOINT  # type: ignore[union-attr]
    assert _option(commands["node ls"], "--tier-dir").default == settings.MOUNTPOINT  # type: ignore[union-attr]
    assert _option(commands["mount"], "--cache-dir").default == settings.CACHE_DIR  # type: ignore[union-attr]
    # one name for prune's and rm's guard; refresh's old spelling still parses but is not offered
    alias = _option(commands["refresh"], "--prune-max-share")
    assert alias is not None and alias.hidden and _option(commands["rm"], "--prune-max-share") is None


if __name__ == "__main__":
    import sys

    if "--write" in sys.argv:
        ENV_DOC.write_text(render_environment_doc())
    else:
        print(render_environment_doc())
