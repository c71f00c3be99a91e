"""The one entry point, for people and for the containers: every container runs ``hf-cache <command>``.

Commands are imported lazily, so ``hf-cache env`` in a job pod does not pay for boto3, and each command's
module stays the single place that defines its flags. Errors of our own (``HfCacheError``) become one line
on stderr and the error's exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from cache import __version__
from cache.errors import HfCacheError
from cache.logs import setup_logging

# name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "refresh": "cache.refresh.command:refresh",
    "ls": "cache.refresh.command:ls",
    "verify": "cache.refresh.command:verify",
    "mount": "cache.mount.command:mount",
    "env": "cache.readers.command:env",
    "warm": "cache.readers.command:warm",
    "doctor": "cache.readers.command:doctor",
    "demo": "cache.readers.demo:demo",
    "render": "cache.deploy.render:render",
    "inject": "cache.deploy.inject:inject",
    "node": "cache.node.command:node",
}


class LazyGroup(click.Group):
    """A click group whose subcommands load on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hf-cache")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
def cli(verbose: bool) -> None:
    """Keep one shared S3 copy of Hugging Face models and serve it to every node."""
    setup_logging(verbose)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="hf-cache", standalone_mode=False)
    except HfCacheError as exc:
        click.echo(f"hf-cache: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("hf-cache: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
