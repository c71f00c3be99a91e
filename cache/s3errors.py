"""The one place that reads botocore's exceptions: everything else sees ``hf_cache.errors`` types.

S3 reports a failure as an error code (``NoSuchKey``), an HTTP status, or a client-side botocore exception, and
different S3 implementations (AWS, MinIO, moto, rclone serve s3) disagree on which of those they fill in (a HEAD has
no body, so its 404 has the code ``"404"``). Decoding that once, here, keeps the code sets and the wording the same
for every command; callers ask ``is_not_found`` / ``is_precondition_failed`` or catch the translated type.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypedDict

import boto3.exceptions
import s3transfer.exceptions
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from hf_cache.errors import (
    S3AccessDeniedError,
    S3NotFoundError,
    S3PreconditionFailedError,
    S3RefusedError,
    S3ThrottledError,
    S3UnreachableError,
    StorageError,
)
from hf_cache.logs import redact

NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchUpload", "NoSuchVersion", "404"})
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidSecurity",
    }
)
THROTTLED_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "429"}
)
PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
NOT_MODIFIED_CODES = frozenset({"NotModified", "304"})
UNAVAILABLE_CODES = frozenset({"InternalError", "ServiceUnavailable", "500", "502", "503", "504", "RequestTimeout"})
_WRAPPERS = (
    boto3.exceptions.Boto3Error,
    s3transfer.exceptions.RetriesExceededError,
    s3transfer.exceptions.S3UploadFailedError,
    s3transfer.exceptions.S3DownloadFailedError,
    s3transfer.exceptions.S3CopyFailedError,
)
# What botocore and boto3 raise for a failed call: for the one ``except`` at a command's outer boundary that turns
# whatever escaped into our types (``except BOTO_ERRORS as exc: raise translate(exc, ...) from exc``).
BOTO_ERRORS: tuple[type[BaseException], ...] = (ClientError, BotoCoreError, *_WRAPPERS)
_CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)


def error_code(exc: BaseException) -> str:
    """S3's error code of a ClientError (``"404"`` for a body-less HEAD), "" for anything else."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return exc.code if isinstance(exc, StorageError) else ""


def http_status(exc: BaseException) -> int | None:
    """The HTTP status S3 answered with, when it answered."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status else None
    return exc.status if isinstance(exc, StorageError) else None


def _s3_cause(exc: BaseException) -> BaseException:
    """boto3's transfer manager wraps the ClientError (S3UploadFailedError raised while handling it,
    RetriesExceededError carrying it): the wrapped error says what S3 answered. Only boto3's and s3transfer's own
    wrappers are opened; any other exception (ours included) is never reinterpreted by what it was raised during."""
    for _ in range(5):
        if not isinstance(exc, _WRAPPERS):
            return exc
        inner = getattr(exc, "last_exception", None) or exc.__cause__ or exc.__context__
        if inner is None:
            return exc
        exc = inner
    return exc


def is_not_found(exc: BaseException) -> bool:
    """The bucket, key, or multipart upload does not exist."""
    exc = _s3_cause(exc)
    if isinstance(exc, S3NotFoundError):
        return True
    return isinstance(exc, ClientError) and (error_code(exc) in NOT_FOUND_CODES or http_status(exc) == 404)


def is_precondition_failed(exc: BaseException) -> bool:
    """A conditional write or read lost: the object changed (412), or a concurrent conditional write won (409)."""
    exc = _s3_cause(exc)
    if isinstance(exc, S3PreconditionFailedError):
        return True
    return isinstance(exc, ClientError) and (error_code(exc) in PRECONDITION_CODES or http_status(exc) == 412)


def is_not_modified(exc: BaseException) -> bool:
    """A GET with If-None-Match found the object unchanged (botocore raises 304 as an error)."""
    exc = _s3_cause(exc)
    return isinstance(exc, (ClientError, StorageError)) and (
        error_code(exc) in NOT_MODIFIED_CODES or http_status(exc) == 304
    )


class _Where(TypedDict):
    """The StorageError fields every translation sets (a typed ``**fields``)."""

    bucket: str
    key: str | None


class _Failure(_Where):
    """The fields of an error S3 itself answered with."""

    code: str
    status: int | None


def _where(bucket: str, key: str | None) -> str:
    return f"s3://{bucket}/{key}" if key else f"bucket {bucket!r}"


def _why(code: str, status: int | None) -> str:
    """``AccessDenied, HTTP 403``; a HEAD's error has no body, so its code is the status: ``HTTP 404`` once."""
    if status and code and code != str(status):
        return f"{code}, HTTP {status}"
    return f"HTTP {status}" if status else code


def _client_error(exc: ClientError, bucket: str, key: str | None, action: str) -> StorageError:
    code, status = error_code(exc), http_status(exc)
    where = _where(bucket, key)
    what = f"{action} {where}" if action else f"S3 {exc.operation_name or 'request'} on {where}"
    why = _why(code, status)
    fields: _Failure = {"bucket": bucket, "key": key, "code": code, "status": status}
    if code == "NoSuchBucket" or (not key and (code in NOT_FOUND_CODES or status == 404)):
        return S3NotFoundError(
            f"bucket {bucket!r} does not exist ({what} failed): check --bucket / HFCACHE_BUCKET and the region",
            **fields,
        )
    if code in NOT_FOUND_CODES or status == 404:
        return S3NotFoundError(f"{what} failed: no such key ({why})", **fields)
    if code in DENIED_CODES or status == 403:
        return S3AccessDeniedError(
            f"{what} failed: access denied ({why}); check the credentials and the role's policy for this bucket/prefix",
            **fields,
        )
    if code in PRECONDITION_CODES or status == 412 or (status == 409 and code in PRECONDITION_CODES):
        return S3PreconditionFailedError(
            f"{what} failed: the object changed since it was read ({why}); another writer got there first", **fields
        )
    if code in THROTTLED_CODES or status == 429 or (status == 503 and code == "SlowDown"):
        return S3ThrottledError(
            f"{what} failed: S3 asked to slow down ({why}) after every retry; run again later or with fewer workers",
            **fields,
        )
    if code in UNAVAILABLE_CODES or (status is not None and status >= 500):
        return S3UnreachableError(
            f"{what} failed: S3 had a server-side error ({why}) after every retry; run again later", **fields
        )
    message = exc.response.get("Error", {}).get("Message", "")
    return S3RefusedError(f"{what} refused ({why}{': ' + message if message else ''})", **fields)


def translate(exc: BaseException, *, bucket: str, key: str | None = None, action: str = "") -> StorageError:
    """Our type for a failed S3 call, with one line that says what failed, where, and what to do.

    ``action`` is the verb phrase a user recognises (``"upload to"``, ``"list"``); the message reads
    ``<action> s3://bucket/key failed: <why>; <what to do>``. An error that is already ours is returned as it is.
    The message is redacted (botocore quotes the endpoint URL, whose userinfo may hold a password): it reaches
    stderr, logs and status.json.
    """
    cause = _s3_cause(exc)
    if isinstance(cause, StorageError):
        return cause
    err = _translate(cause, bucket=bucket, key=key, action=action)
    err.args = (redact(str(err)),)
    return err


def _translate(cause: BaseException, *, bucket: str, key: str | None, action: str) -> StorageError:
    fields: _Where = {"bucket": bucket, "key": key}
    where = _where(bucket, key)
    what = f"{action} {where}" if action else f"S3 request on {where}"
    if isinstance(cause, ClientError):
        return _client_error(cause, bucket, key, action)
    if isinstance(cause, _CREDENTIAL_ERRORS):
        return S3AccessDeniedError(
            f"no AWS credentials found ({what} failed: {cause}): set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "a profile, or run with an IRSA service account",
            code=type(cause).__name__,
            **fields,
        )
    if isinstance(cause, (BotoConnectionError, HTTPClientError)):
        return S3UnreachableError(
            f"cannot reach S3 for {where} ({what} failed: {cause}); check --endpoint-url / AWS_ENDPOINT_URL and "
            "the network",
            code=type(cause).__name__,
            **fields,
        )
    if isinstance(cause, ParamValidationError):
        return S3RefusedError(f"{what} not sent: {cause}", code=type(cause).__name__, **fields)
    if isinstance(cause, BotoCoreError):
        return S3UnreachableError(
            f"cannot reach S3 for {where} ({what} failed: {cause}); check --endpoint-url / AWS_ENDPOINT_URL",
            code=type(cause).__name__,
            **fields,
        )
    return S3RefusedError(f"{what} failed: {cause}", **fields)


@contextlib.contextmanager
def s3_errors(bucket: str, key: str | None = None, action: str = "") -> Iterator[None]:
    """Re-raise botocore/boto3 errors (and boto3's transfer wrappers of them) of the calls inside as our types
    (``translate``), chained to the original."""
    try:
        yield
    except BOTO_ERRORS as exc:
        raise translate(exc, bucket=bucket, key=key, action=action) from exc
