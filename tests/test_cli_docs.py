"""The docs match the program: README's command tables list exactly the flags and variables click defines.

`python3 -m tests.test_cli_docs --write` rewrites README's "Command reference" tables from the click definitions
(without ``--write`` it prints them); the test fails when README and the code disagree in either direction, so they
cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from hf_cache.cli import COMMANDS, LazyGroup, cli, envvars_of

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- command-reference:begin -->", "<!-- command-reference:end -->"
# Read with os.environ outside click (not flags): each must be in README's variables table, with what it does.
# HFCACHE_FUSE_DEVICE and HFCACHE_TEST_KILL_AFTER exist for the tests only and are listed there as such.
_HFCACHE_VAR = re.compile(r"HFCACHE_[A-Z0-9_]+")


def commands() -> dict[str, click.Command]:
    ctx = click.Context(cli)
    group: LazyGroup = cli  # type: ignore[assignment]
    return {name: group.get_command(ctx, name) for name in sorted(COMMANDS)}  # type: ignore[misc]


LOG_PARAMS = {"verbose", "quiet", "log_format"}  # every command takes them: one table for all
EVERY = "(every command)"


def options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden and p.name not in LOG_PARAMS]


def every_command_options() -> list[click.Option]:
    return [p for p in cli.params if isinstance(p, click.Option) and p.name in LOG_PARAMS]


def _row(opt: click.Option) -> str:
    flags = ", ".join(f"`{o}`" for o in [*opt.opts, *opt.secondary_opts])
    env = ", ".join(f"`{e}`" for e in envvars_of(opt))
    return f"| {flags} | {env} | {_cell(opt.help or '')} |"


def _key(opt: click.Option) -> tuple[str, str]:
    return (", ".join(f"`{o}`" for o in [*opt.opts, *opt.secondary_opts]), ", ".join(f"`{e}`" for e in envvars_of(opt)))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def render() -> str:
    """The reference section's tables, from the click definitions."""
    out = [f"#### `hf-cache` {EVERY}, before or after the command's name\n"]
    out += ["| flag | environment | what |", "|---|---|---|", *(_row(o) for o in every_command_options()), ""]
    ctx = click.Context(cli)
    for name, command in sorted(all_commands().items()):
        usage = " ".join(command.collect_usage_pieces(click.Context(command, parent=ctx, info_name=name)))
        out.append(f"#### `hf-cache {name} {usage}`\n")
        out.append(_cell(command.get_short_help_str(limit=200)) + "\n")
        out.append("| flag | environment | what |")
        out.append("|---|---|---|")
        out += [_row(opt) for opt in options(command)]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def readme_tables() -> dict[str, set[tuple[str, str]]]:
    """command -> {(flags, environment)} as README's reference section lists them."""
    text = README.read_text()
    assert BEGIN in text and END in text, "README lost its command reference markers"
    section = text[text.index(BEGIN) : text.index(END)]
    tables: dict[str, set[tuple[str, str]]] = {}
    current = None
    for line in section.splitlines():
        if m := re.match(r"#### `hf-cache ([a-z][a-z ]*?)(?: [\[A-Z{]|`)", line):  # `hf-cache node ls [OPTIONS]`
            current = m.group(1)
            tables[current] = set()
        elif line.startswith("#### `hf-cache`"):
            current = EVERY
            tables[current] = set()
        elif current and line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            tables[current].add((cells[0], cells[1]))
    return tables


def test_readme_lists_exactly_the_flags_and_variables_of_every_command() -> None:
    tables = readme_tables()
    assert set(tables) == {*all_commands(), EVERY}, "README's command reference and the CLI's commands differ"
    assert {*COMMANDS} <= set(tables) and "node ls" in tables  # a group's commands too
    assert tables[EVERY] == {_key(o) for o in every_command_options()}
    for name, command in all_commands().items():
        want = {_key(o) for o in options(command)}
        assert {p.name for p in command.params} >= LOG_PARAMS, f"hf-cache {name} does not take -v/-q/--log-format"
        assert tables[name] == want, (
            f"hf-cache {name}: README lists {sorted(tables[name] - want)} that the code lacks and lacks"
            f" {sorted(want - tables[name])}; regenerate with python3 -m tests.test_cli_docs --write"
        )


def all_commands() -> dict[str, click.Command]:
    """Every command by its full name, the commands of a group too (``node ls``)."""
    out: dict[str, click.Command] = {}
    stack = list(commands().items())
    while stack:
        name, command = stack.pop()
        out[name] = command
        if isinstance(command, click.Group):
            stack += [(f"{name} {sub}", c) for sub, c in command.commands.items()]
    return out


_SHOWN = re.compile(r"\[env var: ([^;\]]*)")


def test_every_flag_with_a_variable_shows_it_the_one_way() -> None:
    """One rule for --help: a flag that falls back to environment variables shows them all, in click's own
    ``[env var: A, B; default: ...]`` (``options.env_option``); none spells a variable in its help text by hand
    (three flags did, the others did not say)."""
    for name, command in [("", cli), *all_commands().items()]:
        ctx = click.Context(command, info_name=name)
        for opt in [p for p in command.params if isinstance(p, click.Option) and not p.hidden]:
            flag = f"hf-cache {name} {opt.opts[-1]}"
            assert _cell(opt.help or ""), f"{flag} has no --help text"
            assert not re.search(r"\[env|\benv:", opt.help or ""), (
                f"{flag}: its help text spells its variable by hand; declare the flag with options.env_option"
            )
            record = opt.get_help_record(ctx)
            assert record is not None
            shown = _SHOWN.search(record[1])
            want = ", ".join(envvars_of(opt))
            assert (shown.group(1) if shown else "") == want, f"{flag}: --help shows {shown and shown.group(1)!r}"
        help_text = " ".join(command.get_help(ctx).split())  # as printed, wrapped at spaces: names stay whole
        for opt in [p for p in command.params if isinstance(p, click.Option) and not p.hidden]:
            for env in envvars_of(opt):
                assert env in help_text, f"hf-cache {name} --help does not name {env}"


def test_every_variable_the_code_reads_is_documented() -> None:
    text = README.read_text()
    start = text.index(BEGIN)  # the flags' tables and the variables table after them, up to the next section
    section = text[start : text.index("\n## ", text.index("#### Environment variables", start))]
    source = "\n".join(p.read_text() for p in (ROOT / "cache").rglob("*.py"))
    missing = sorted(v for v in set(_HFCACHE_VAR.findall(source)) if f"`{v}`" not in section)
    assert not missing, f"README's environment variables table lacks {missing}"


def test_readme_shows_the_new_commands_and_claims_only_what_is_tested() -> None:
    text = README.read_text()
    for usage in ("hf-cache rm ", "hf-cache verify --repair", "hf-cache completion bash", "--log-format json"):
        assert usage in text, usage
    assert "vLLM resolve with no code change" not in text and "and vLLM resolve" not in text


def write_readme() -> None:
    """Replace README's reference tables with ``render()`` (what ``--write`` does after a flag changes)."""
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN) + 1, text.index(END)
    README.write_text(text[:start] + render() + "\n" + text[end:])


if __name__ == "__main__":
    import sys

    write_readme() if "--write" in sys.argv else print(render())
