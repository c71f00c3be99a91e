"""Exception types of hf-cache.

Every failure a user can act on is one of these: the CLI prints its message as one line and exits with the
code ``hf_cache.cli.EXIT_CODES`` gives its type (the one table of exit codes, docs/errors.md); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class HfCacheError(Exception):
    """Base of every error hf-cache reports to a user. The message says what is wrong and what to do (exit 1)."""


class ConfigError(HfCacheError):
    """Bad flags, environment or input files: nothing was done (exit 2, like a usage error)."""


class ModelsFileError(ConfigError):
    """models.txt is invalid. Carries every problem found, each naming its file and line number."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            "; ".join(self.problems)
            if len(self.problems) == 1
            else f"{len(self.problems)} problems in models file:\n  " + "\n  ".join(self.problems)
        )


class StorageError(HfCacheError):
    """S3 could not be reached or refused a request (bucket missing, credentials, endpoint).

    The subclasses below are what ``hf_cache.s3errors`` makes of botocore's exceptions; each is also the stdlib
    type a caller would reach for (``except FileNotFoundError``), as huggingface_hub's errors are. ``bucket``,
    ``key``, ``code`` (S3's error code) and ``status`` (HTTP) say what failed, for callers that decide on it.
    """

    def __init__(
        self,
        message: str,
        *,
        bucket: str | None = None,
        key: str | None = None,
        code: str = "",
        status: int | None = None,
    ):
        super().__init__(message)
        self.bucket = bucket
        self.key = key
        self.code = code
        self.status = status


class S3NotFoundError(StorageError, FileNotFoundError):
    """The bucket or key does not exist (NoSuchBucket, NoSuchKey, HTTP 404)."""


class S3AccessDeniedError(StorageError, PermissionError):
    """S3 refused the credentials or the role's policy refused the request; also: no credentials at all."""


class S3UnreachableError(StorageError, ConnectionError):
    """No answer from S3 (endpoint down, timeouts, 5xx): the request may work when retried later."""


class S3ThrottledError(StorageError):
    """S3 asked us to slow down (SlowDown, HTTP 429/503) after boto3's own retries ran out."""


class S3RefusedError(StorageError):
    """S3 answered and refused the request for a reason not above (bad request, quota, unsupported feature)."""


class S3PreconditionFailedError(S3RefusedError):
    """A conditional request lost (If-Match / If-None-Match: HTTP 412, or 409 ConditionalRequestConflict)."""


class HubError(HfCacheError):
    """The Hub (or the Hub-compatible server) refused or failed a request for one repo."""


class GatedRepoError(HubError):
    """The repo needs a token (HF_TOKEN) that was not given or not accepted."""


class IntegrityError(HfCacheError):
    """Downloaded or published bytes do not match the checksum the source gave."""


class RefreshFailedError(HfCacheError):
    """Some repos of a run failed (each already reported on its own line); the others were published. Carries the
    failed repos' names so the one closing line, and a caller, can name them."""

    def __init__(self, failed: list[str], total: int, what: str = "failed"):
        self.failed = list(failed)
        self.total = total
        super().__init__(f"{len(self.failed)} of {total} repos {what}: {', '.join(self.failed)}")


class LeaseHeldError(HfCacheError):
    """Another refresh holds the writer lease on the bucket/prefix."""


class LeaseLostError(HfCacheError):
    """This refresh's writer lease was taken over (it paused past its TTL): it must not write anything more."""


class MountError(HfCacheError):
    """The FUSE mount could not be made, checked or repaired."""
