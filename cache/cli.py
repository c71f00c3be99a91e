"""The one entry point, for people and for the containers: every container runs ``hf-cache <command>``.

Commands are imported lazily, so ``hf-cache env`` in a job pod does not pay for boto3, and each command's
module stays the single place that defines its flags. Errors of our own (``HfCacheError``) become one line
on stderr and the exit code of their type (``EXIT_CODES``, the one table; commands never call ``sys.exit``);
anything else is a bug and keeps its traceback.

``-v``/``-q``/``--log-format`` are accepted before or after the subcommand (as kubectl and terraform users
type them): defined once (``options.logging_flags``), the group takes them and adds them to every command it
loads, so no command module has to repeat them.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys

import click

from hf_cache import __version__, options
from hf_cache.errors import ConfigError, HfCacheError

# The exit code of each error type, most specific first: 2 for input that was refused before anything was done
# (as click's usage errors), 1 for every other failure (S3, the Hub, a failed repo, the mount, the lease). The
# containers' restart and alert policy reads these: change them only with docs/errors.md.
EXIT_CODES: tuple[tuple[type[HfCacheError], int], ...] = (
    (ConfigError, 2),
    (HfCacheError, 1),
)
EXIT_ABORTED = 130  # Ctrl-C, as a shell reports SIGINT


def exit_code(exc: HfCacheError) -> int:
    """The process exit status for one of our errors: the first row of ``EXIT_CODES`` its type matches."""
    return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))


# name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "refresh": "hf_cache.refresh.command:refresh",
    "ls": "hf_cache.refresh.command:ls",
    "verify": "hf_cache.refresh.command:verify",
    "rm": "hf_cache.refresh.command:rm",
    "mount": "hf_cache.mount.command:mount",
    "env": "hf_cache.readers.command:env",
    "warm": "hf_cache.readers.command:warm",
    "doctor": "hf_cache.readers.command:doctor",
    "demo": "hf_cache.demo.command:demo",
    "render": "hf_cache.deploy.render:render",
    "inject": "hf_cache.deploy.inject:inject",
    "node": "hf_cache.node.command:node",
    "version": "hf_cache.cli:version",
    "completion": "hf_cache.cli:completion",
}


class LazyGroup(click.Group):
    """A click group whose subcommands load on first use, each given the logging flags."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        add_logging_flags(command)
        return command


def add_logging_flags(command: click.Command) -> None:
    """-v/-q/--log-format on ``command`` and, for a group such as ``node``, on each of its commands, so they work
    after any command's name; once, however often the command is loaded."""
    if not any(p.name == "verbose" for p in command.params):
        command.params.extend(options.logging_flags())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_logging_flags(sub)


def envvars_of(param: click.Parameter) -> list[str]:
    envvar = param.envvar
    if not envvar:
        return []
    return [envvar] if isinstance(envvar, str) else list(envvar)


@click.group(
    cls=LazyGroup,
    params=options.logging_flags(),
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="hf-cache")
def cli() -> None:
    """Keep one shared S3 copy of Hugging Face models and serve it to every node.

    A repo is named the same way by every command: [dataset:]ORG/NAME[@REV].
    """
    # the logging flags set the logging up as click parses them (cache/options.py)


def _versions() -> dict[str, str]:
    out = {"hf-cache": __version__, "python": platform.python_version()}
    for dist in ("huggingface_hub", "boto3", "click"):
        try:
            from importlib.metadata import version as dist_version

            out[dist] = dist_version(dist)
        except Exception:
            out[dist] = "not installed"
    return out


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON on stdout.")
def version(as_json: bool) -> None:
    """Print the versions of hf-cache and what it runs on (for bug reports)."""
    versions = _versions()
    if as_json:
        click.echo(json.dumps(versions, indent=1))
    else:
        click.echo(" ".join(f"{k} {v}" for k, v in versions.items()))


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script (click's): eval "$(hf-cache completion bash)" in ~/.bashrc."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # click ships all three
    click.echo(cls(cli, {}, "hf-cache", "_HF_CACHE_COMPLETE").source())


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="hf-cache", standalone_mode=False)
    except HfCacheError as exc:
        click.echo(f"hf-cache: error: {exc}", err=True)
        sys.exit(exit_code(exc))
    except click.exceptions.Abort:
        click.echo("hf-cache: aborted", err=True)
        sys.exit(EXIT_ABORTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
