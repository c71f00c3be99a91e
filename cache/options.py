"""The flags several commands share, defined once: the same name, env-var fallback, default and help everywhere.

``refresh``, ``ls``, ``verify``, ``rm`` and ``mount`` all name the bucket; ``mount``, ``env``, ``warm`` and
``doctor`` all name the mountpoint. Written per command they drifted (two spellings of one fact,
``--prune-max-share`` and ``--max-share``; help texts that disagreed). Defaults and variable names come from
``cache/settings.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from hf_cache import settings

F = TypeVar("F", bound=Callable[..., Any])


def _env_help(text: str, *names: str) -> str:
    return f"{text} [env: {', '.join(names)}]"


bucket = click.option(
    "--bucket", envvar=settings.BUCKET_ENV, required=True, help=_env_help("S3 bucket.", settings.BUCKET_ENV)
)
prefix = click.option(
    "--prefix",
    envvar=settings.PREFIX_ENV,
    default="",
    help=_env_help("Key prefix inside the bucket (its root is the pods' HF_HOME).", settings.PREFIX_ENV),
)
endpoint_url = click.option(
    "--endpoint-url",
    envvar=list(settings.ENDPOINT_ENVS),
    default=None,
    help=_env_help("S3 endpoint (MinIO, loopback).", *settings.ENDPOINT_ENVS),
)
region = click.option(
    "--region", envvar=list(settings.REGION_ENVS), default=None, help=_env_help("S3 region.", *settings.REGION_ENVS)
)
as_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (for jq).")


def s3_target(f: F) -> F:
    """--bucket, --prefix, --endpoint-url, --region: where every S3-touching command reads and writes."""
    return bucket(prefix(endpoint_url(region(f))))


def mountpoint(help_text: str = "Where the hf-cache mount is.") -> Callable[[F], F]:
    return click.option(
        "--mountpoint",
        envvar=settings.MOUNTPOINT_ENV,
        default=settings.MOUNTPOINT,
        show_default=True,
        help=_env_help(help_text, settings.MOUNTPOINT_ENV),
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
