"""The flags several commands share, defined once: the same name, env-var fallback, default and help everywhere.

``refresh``, ``ls``, ``verify``, ``rm`` and ``mount`` all name the bucket; ``mount``, ``env``, ``warm`` and
``doctor`` all name the mountpoint. Written per command they drifted (two spellings of one fact,
``--prune-max-share`` and ``--max-share``; help texts that disagreed; only three flags named their variable in
--help). Defaults and variable names come from ``cache/settings.py``; every flag with a variable is declared
with :func:`env_option`, so --help names it the one way click does: ``[env var: NAME; default: ...]``.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from hf_cache import settings
from hf_cache.errors import ConfigError
from hf_cache.logs import LOG_FORMATS, setup_logging

F = TypeVar("F", bound=Callable[..., Any])


def env_option(*param_decls: str, envvar: str | Sequence[str], **attrs: Any) -> Callable[[F], F]:
    """A flag that falls back to environment variables: click reads them (first set wins) and --help shows them.

    One helper instead of help texts spelling ``[env: X]`` by hand, which some flags forgot and which could name
    a variable the flag does not read."""
    names = envvar if isinstance(envvar, str) else list(envvar)
    return click.option(*param_decls, envvar=names, show_envvar=True, **attrs)


class ShellWords(click.ParamType):  # type: ignore[type-arg]  # generic in newer click, not in 8.1 (allowed)
    """Values the command splits with shell quoting rules itself (``--rclone-arg "--user-agent 'a b'"``).

    Click splits a repeatable flag's variable at every space, which would break such quoting, so the variable's
    value arrives whole, as one more such value. Unbalanced quotes are refused here, while click still knows
    whether the value came from the flag or from the variable: the one-line error names the one the user wrote."""

    name = "text"

    def split_envvar_value(self, rv: str) -> Sequence[str]:
        return [rv] if rv.strip() else []

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            shlex.split(text)
        except ValueError as exc:
            where = "value"
            if param is not None:
                source = ctx.get_parameter_source(param.name) if ctx is not None and param.name else None
                from_env = source is ParameterSource.ENVIRONMENT and isinstance(param.envvar, str)
                where = str(param.envvar) if from_env else param.opts[0]
            raise ConfigError(f"{where} {text!r}: {exc}; quote it as a shell would") from exc
        return text


bucket = env_option("--bucket", envvar=settings.BUCKET_ENV, required=True, help="S3 bucket.")
prefix = env_option(
    "--prefix",
    envvar=settings.PREFIX_ENV,
    default="",
    help="Key prefix inside the bucket (its root is the pods' HF_HOME).",
)
endpoint_url = env_option(
    "--endpoint-url", envvar=settings.ENDPOINT_ENVS, default=None, help="S3 endpoint (MinIO, loopback)."
)
region = env_option("--region", envvar=settings.REGION_ENVS, default=None, help="S3 region.")
as_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (for jq).")


def s3_target(f: F) -> F:
    """--bucket, --prefix, --endpoint-url, --region: where every S3-touching command reads and writes."""
    return bucket(prefix(endpoint_url(region(f))))


def mountpoint(help_text: str = "Where the hf-cache mount is.") -> Callable[[F], F]:
    return env_option(
        "--mountpoint", envvar=settings.MOUNTPOINT_ENV, default=settings.MOUNTPOINT, show_default=True, help=help_text
    )


def max_share(what: str, old_name: str | None = None) -> Callable[[F], F]:
    """``--max-share`` (``refresh --prune`` and ``rm``: one guard, one name); ``old_name`` (refresh's
    ``--prune-max-share``) still works, hidden, so existing CronJobs keep running."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, max_share_alias: int | None = None, **kwargs: Any) -> Any:
            if max_share_alias is not None:
                kwargs["max_share"] = max_share_alias
            return f(*args, **kwargs)

        # click keeps a command's options on the function; functools.wraps does not copy that attribute
        wrapper.__click_params__ = list(getattr(f, "__click_params__", []))  # type: ignore[attr-defined]
        share = click.IntRange(0, 100)
        main = click.option(
            "--max-share",
            type=share,
            default=settings.MAX_SHARE,
            show_default=True,
            help=f"Refuse to {what} more than this percentage of the published repos (or all of them) without --force.",
        )
        if old_name:
            wrapper = click.option(old_name, "max_share_alias", type=share, default=None, hidden=True)(wrapper)
        return main(wrapper)  # type: ignore[return-value]  # wrapper takes what f takes

    return decorate


# -- logging: -v, -q, --log-format ----------------------------------------------------------------------------------
_LOG_STATE = "hf_cache.logging"  # key in ctx.meta, which a command's context shares with the group's


def _logging_state(ctx: click.Context) -> dict[str, Any]:
    state: dict[str, Any] = ctx.meta.setdefault(_LOG_STATE, {"verbose": False, "quiet": False, "fmt": None})
    return state


def _apply_logging(ctx: click.Context) -> None:
    state = _logging_state(ctx)
    setup_logging(state["verbose"], quiet=state["quiet"], fmt=state["fmt"])


def _log_flag(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Each logging flag adds to what the group's flags chose, so a flag after the command's name cannot undo one
    before it: a given -v/-q sticks; --log-format from the variable or the default applies only where nothing
    chose a format yet (the group, parsed first), a --log-format typed on the command line always."""
    state = _logging_state(ctx)
    if param.name in ("verbose", "quiet"):
        state[param.name] = state[param.name] or bool(value)
    elif value is not None and (
        state["fmt"] is None or ctx.get_parameter_source("log_format") is ParameterSource.COMMANDLINE
    ):
        state["fmt"] = value
    _apply_logging(ctx)


def logging_flags() -> list[click.Option]:
    """-v, -q and --log-format, defined once for the group and every command (new objects each call: a command
    owns its parameters). They take effect as they are parsed, so the logging is set before the command runs."""
    return [
        click.Option(
            ["-v", "--verbose"], is_flag=True, expose_value=False, callback=_log_flag, help="Log debug detail."
        ),
        click.Option(
            ["-q", "--quiet"],
            is_flag=True,
            expose_value=False,
            callback=_log_flag,
            help="Log warnings and errors only.",
        ),
        click.Option(
            ["--log-format"],
            type=click.Choice(LOG_FORMATS),
            envvar=settings.LOG_FORMAT_ENV,
            show_envvar=True,
            default=settings.LOG_FORMAT,
            show_default=True,
            expose_value=False,
            callback=_log_flag,
            help="Log lines as text or as one JSON object per line (pods).",
        ),
    ]
