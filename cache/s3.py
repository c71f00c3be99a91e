"""The boto3 client every S3-touching command uses, configured the same way everywhere.

Credentials come from boto3's default chain (environment, IRSA web identity in a cluster); the endpoint from
``--endpoint-url`` or the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (boto3 reads those itself
when we pass none). Retries are boto3's "standard" mode: throttling (503 SlowDown, 429) and transient errors back
off and retry, ``AWS_MAX_ATTEMPTS`` tries per call, the first included (boto3's own variable and meaning; default
``settings.S3_MAX_ATTEMPTS``). A 429 is retried too: botocore's standard mode knows throttling only by its own list
of error codes, which lacks the ``TooManyRequests`` that S3-compatible stores send with it (botocore 1.43.11 gave up
on the first 429).
Each part of a multipart upload is its own call with its own retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.retries import quota, standard

from hf_cache import settings
from hf_cache.errors import ConfigError
from hf_cache.s3errors import s3_errors

if TYPE_CHECKING:  # the stubs (boto3-stubs[s3], a test extra) are needed by mypy only, never at runtime
    from mypy_boto3_s3 import S3Client


def check_endpoint(url: str, source: str = "--endpoint-url / AWS_ENDPOINT_URL") -> None:
    """boto3 (and rclone) take ``127.0.0.1:9000`` as a path and fail later with a traceback or a silent hang."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{source} {url!r} is not a URL ({exc}): write it like https://s3.example.com") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{source} {url!r} needs a scheme and a host: write http://{url} or https://{url}"
            if "://" not in url
            else f"{source} {url!r}: use an http:// or https:// URL with a host"
        )


def total_attempts() -> int:
    """Tries per S3 call, the first included: ``AWS_MAX_ATTEMPTS`` as boto3 documents it, else our default. An
    explicit retry Config hides boto3's own read of the variable, so it is read here."""
    raw = settings.env(settings.MAX_ATTEMPTS_ENV)
    if raw is None:
        return settings.S3_MAX_ATTEMPTS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"{settings.MAX_ATTEMPTS_ENV}={raw!r} is not a number of tries >= 1; unset it or set e.g."
            f" {settings.S3_MAX_ATTEMPTS}"
        )
    return value


def make_client(
    endpoint_url: str | None = None, region: str | None = None, max_pool: int = 32, max_attempts: int | None = None
) -> S3Client:
    """``max_attempts``: retries after the first try (botocore's Config key of that name: 1 means two tries); None:
    ``total_attempts()`` tries in all."""
    if endpoint_url:
        check_endpoint(endpoint_url)
    else:
        found = settings.first_env(settings.ENDPOINT_ENVS)
        if found is not None:
            check_endpoint(found[1], found[0])
    config = Config(
        retries=(
            {"max_attempts": max_attempts, "mode": "standard"}
            if max_attempts is not None
            else {"total_max_attempts": total_attempts(), "mode": "standard"}
        ),
        max_pool_connections=max_pool,
        connect_timeout=10,
        read_timeout=120,
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    session = boto3.session.Session(region_name=region or None)
    client = session.client("s3", endpoint_url=endpoint_url or None, config=config)
    _retry_429_too(client, total_attempts() if max_attempts is None else max_attempts + 1)
    return client


class _RetryConditions(standard.BaseRetryableChecker):
    """boto3's standard retry conditions, and any 429 answer within the same tries."""

    def __init__(self, total: int):
        self._standard = standard.StandardRetryConditions(max_attempts=total)
        self._tries = standard.MaxAttemptsChecker(total)

    def is_retryable(self, context: standard.RetryContext) -> bool:
        if self._standard.is_retryable(context):
            return True
        answer = context.http_response
        return answer is not None and answer.status_code == 429 and bool(self._tries.is_retryable(context))


def _retry_429_too(client: S3Client, total: int) -> None:
    """Replace the client's standard retry handler by the same one with ``_RetryConditions``."""
    retry_quota = standard.RetryQuotaChecker(quota.RetryQuota())
    handler = standard.RetryHandler(
        retry_policy=standard.RetryPolicy(
            retry_checker=_RetryConditions(total), retry_backoff=standard.ExponentialBackoff()
        ),
        retry_event_adapter=standard.RetryEventAdapter(),
        retry_quota=retry_quota,  # type: ignore[arg-type]  # the stubs say RetryQuota; botocore passes this one too
    )
    events = client.meta.events
    events.unregister("needs-retry.s3", unique_id="retry-config-s3")
    events.register("needs-retry.s3", handler.needs_retry, unique_id="retry-config-s3")  # type: ignore[arg-type]
    events.register("after-call.s3", retry_quota.release_retry_quota)


def folder_prefix(prefix: str) -> str:
    """The ``Prefix`` of a listing of everything under ``prefix``: with its trailing slash, as the IAM roles'
    ``s3:prefix`` condition requires (``clusters/a`` alone would also list ``clusters/a2/``); "" for the root."""
    prefix = prefix.strip("/")
    return prefix + "/" if prefix else ""


def check_bucket(client: S3Client, bucket: str, prefix: str = "") -> None:
    """Fail early, with one clear line (a ``StorageError`` subclass), when the bucket is missing or unreachable.

    A one-key listing of the prefix, not HeadBucket: HeadBucket is authorised as ListBucket without an
    ``s3:prefix``, which the per-cluster roles' prefix condition denies.
    """
    with s3_errors(bucket, folder_prefix(prefix) or None, "list"):
        client.list_objects_v2(Bucket=bucket, Prefix=folder_prefix(prefix), MaxKeys=1)
