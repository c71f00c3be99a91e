"""The one entry point, for people and for the containers: every container runs ``hf-cache <command>``.

Commands are imported lazily, so ``hf-cache env`` in a job pod does not pay for boto3, and each command's
module stays the single place that defines its flags. Errors of our own (``HfCacheError``) become one line
on stderr and the exit code of their type (``EXIT_CODES``, the one table; commands never call ``sys.exit``);
anything else is a bug and keeps its traceback.

``-v``/``-q``/``--log-format`` are accepted before or after the subcommand (as kubectl and terraform users
type them): the group adds them to every command it loads, so no command module has to repeat them.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys

import click

from hf_cache import __version__, settings
from hf_cache.errors import ConfigError, HfCacheError
from hf_cache.logs import LOG_FORMATS, set_log_format, setup_logging

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


def _set_level(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        setup_logging(verbose=param.name == "verbose", quiet=param.name == "quiet")


def _set_format(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        set_log_format(value)


def log_options() -> list[click.Option]:
    """The logging flags, as options whose callbacks apply them the moment they are parsed."""
    return [
        click.Option(
            ["-v", "--verbose"], is_flag=True, expose_value=False, callback=_set_level, help="Log debug detail."
        ),
        click.Option(
            ["-q", "--quiet"],
            is_flag=True,
            expose_value=False,
            callback=_set_level,
            help="Log warnings and errors only.",
        ),
        click.Option(
            ["--log-format"],
            type=click.Choice(LOG_FORMATS),
            envvar=settings.LOG_FORMAT_ENV,
            default=None,
            expose_value=False,
            callback=_set_format,
            help=f"Log lines as text or as one JSON object per line (pods). [env: {settings.LOG_FORMAT_ENV}]",
        ),
    ]


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
        have = {opt for p in command.params for opt in getattr(p, "opts", [])}
        if "--verbose" not in have:
            command.params.extend(log_options())
        for param in command.params:
            if isinstance(param, click.Option):
                name_envvars_in_help(param)
        return command


def envvars_of(param: click.Parameter) -> list[str]:
    envvar = param.envvar
    if not envvar:
        return []
    return [envvar] if isinstance(envvar, str) else list(envvar)


def name_envvars_in_help(option: click.Option) -> None:
    """Every variable an option reads is named in its --help, whichever module defined it: ``[env: A, B]``."""
    missing = [e for e in envvars_of(option) if e not in (option.help or "")]
    if missing:
        option.help = f"{option.help or ''} [env: {', '.join(missing)}]".strip()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hf-cache")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    envvar=settings.LOG_FORMAT_ENV,
    default=settings.LOG_FORMAT,
    show_default=True,
    help=f"Log lines as text or as one JSON object per line (pods). [env: {settings.LOG_FORMAT_ENV}]",
)
def cli(verbose: bool, quiet: bool, log_format: str) -> None:
    """Keep one shared S3 copy of Hugging Face models and serve it to every node.

    A repo is named the same way by every command: [dataset:]ORG/NAME[@REV].
    """
    setup_logging(verbose, quiet=quiet, fmt=log_format)


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
