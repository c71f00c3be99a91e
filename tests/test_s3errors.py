"""The S3 boundary's classification, as a pure function over real botocore exception objects.

End-to-end cases (a real moto server, a real refusal from the fault proxy, a closed port) are in
tests/test_s3_boundary.py.
"""

from __future__ import annotations

import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from hf_cache.errors import (
    HfCacheError,
    LeaseLostError,
    S3AccessDeniedError,
    S3NotFoundError,
    S3PreconditionFailedError,
    S3RefusedError,
    S3ThrottledError,
    S3UnreachableError,
    StorageError,
)
from hf_cache.s3errors import is_not_found, is_not_modified, is_precondition_failed, s3_errors, translate


def client_error(code: str, status: int, op: str = "PutObject", message: str = "") -> ClientError:
    error = {"Code": code, **({"Message": message} if message else {})}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, op)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("NoSuchKey", 404, S3NotFoundError),
        ("404", 404, S3NotFoundError),  # HEAD: no body, the code is the status
        ("NotFound", 404, S3NotFoundError),
        ("NoSuchUpload", 404, S3NotFoundError),
        ("", 404, S3NotFoundError),
        ("AccessDenied", 403, S3AccessDeniedError),
        ("403", 403, S3AccessDeniedError),
        ("InvalidAccessKeyId", 403, S3AccessDeniedError),
        ("SignatureDoesNotMatch", 403, S3AccessDeniedError),
        ("ExpiredToken", 400, S3AccessDeniedError),
        ("SomethingNew", 403, S3AccessDeniedError),  # by status when the code is unknown
        ("SlowDown", 503, S3ThrottledError),
        ("Throttling", 400, S3ThrottledError),
        ("TooManyRequests", 429, S3ThrottledError),
        ("", 429, S3ThrottledError),
        ("PreconditionFailed", 412, S3PreconditionFailedError),
        ("412", 412, S3PreconditionFailedError),
        ("ConditionalRequestConflict", 409, S3PreconditionFailedError),
        ("InternalError", 500, S3UnreachableError),
        ("ServiceUnavailable", 503, S3UnreachableError),
        ("", 502, S3UnreachableError),
        ("EntityTooLarge", 400, S3RefusedError),
        ("InvalidRequest", 400, S3RefusedError),
        ("BucketAlreadyOwnedByYou", 409, S3RefusedError),
    ],
)
def test_client_errors_are_classified_by_code_and_status(code: str, status: int, kind: type) -> None:
    err = translate(client_error(code, status), bucket="b", key="hub/x", action="upload to")
    assert type(err) is kind
    assert isinstance(err, StorageError) and isinstance(err, HfCacheError)
    assert err.bucket == "b" and err.key == "hub/x" and err.code == code and err.status == status
    assert "s3://b/hub/x" in str(err) and "\n" not in str(err)


def test_the_types_are_also_the_stdlib_types_a_caller_reaches_for() -> None:
    assert isinstance(translate(client_error("NoSuchKey", 404), bucket="b", key="k"), FileNotFoundError)
    assert isinstance(translate(client_error("AccessDenied", 403), bucket="b"), PermissionError)
    assert isinstance(translate(EndpointConnectionError(endpoint_url="http://x"), bucket="b"), ConnectionError)
    assert isinstance(translate(client_error("PreconditionFailed", 412), bucket="b"), S3RefusedError)


def test_a_missing_bucket_names_the_bucket_and_the_flag() -> None:
    err = translate(client_error("NoSuchBucket", 404, "ListObjectsV2"), bucket="nope", key="hub/x")
    assert isinstance(err, S3NotFoundError)
    assert "bucket 'nope' does not exist" in str(err) and "--bucket" in str(err)
    # a 404 with no key can only be the bucket (HeadBucket has no body to say NoSuchBucket)
    assert "does not exist" in str(translate(client_error("404", 404, "HeadBucket"), bucket="nope"))


@pytest.mark.parametrize(
    ("exc", "kind", "fragment"),
    [
        (NoCredentialsError(), S3AccessDeniedError, "no AWS credentials"),
        (PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"), S3AccessDeniedError, "no AWS"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), S3UnreachableError, "cannot reach S3"),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"), S3UnreachableError, "cannot reach S3"),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), S3UnreachableError, "cannot reach S3"),
        (ParamValidationError(report="Key is empty"), S3RefusedError, "not sent"),
    ],
)
def test_client_side_failures(exc: Exception, kind: type, fragment: str) -> None:
    err = translate(exc, bucket="b", action="list")
    assert type(err) is kind and fragment in str(err) and "bucket 'b'" in str(err)
    assert err.code == type(exc).__name__


def test_boto3_transfer_wrappers_are_opened() -> None:
    """upload_file raises S3UploadFailedError while handling the ClientError: the ClientError is what S3 said."""
    try:
        try:
            raise client_error("AccessDenied", 403, "CreateMultipartUpload")
        except ClientError:
            raise S3UploadFailedError("Failed to upload x to b/k: ...") from None
    except S3UploadFailedError as wrapped:
        wrapped.__suppress_context__ = False
        assert type(translate(wrapped, bucket="b", key="k")) is S3AccessDeniedError


def test_our_own_errors_are_never_reinterpreted() -> None:
    """An error of ours raised while handling a ClientError stays itself: only boto3's wrappers are opened."""
    try:
        raise client_error("PreconditionFailed", 412)
    except ClientError:
        lost = LeaseLostError("lost the lease")
    assert not is_precondition_failed(lost)
    with pytest.raises(LeaseLostError), s3_errors("b", "k"):
        try:
            raise client_error("PreconditionFailed", 412)
        except ClientError:
            raise LeaseLostError("lost") from None
    already = S3NotFoundError("gone", bucket="b", key="k")
    assert translate(already, bucket="other") is already


def test_predicates() -> None:
    assert is_not_found(client_error("NoSuchKey", 404)) and is_not_found(client_error("404", 404))
    assert is_not_found(S3NotFoundError("x")) and not is_not_found(client_error("AccessDenied", 403))
    assert is_precondition_failed(client_error("PreconditionFailed", 412))
    assert is_precondition_failed(client_error("ConditionalRequestConflict", 409))
    assert not is_precondition_failed(client_error("NoSuchKey", 404))
    assert is_not_modified(client_error("304", 304)) and not is_not_modified(client_error("NoSuchKey", 404))
    assert is_not_modified(translate(client_error("304", 304, "GetObject"), bucket="b", key="k"))
    assert is_precondition_failed(translate(client_error("PreconditionFailed", 412), bucket="b", key="k"))
    assert not is_not_found(ValueError("x"))


def test_s3_errors_translates_and_chains() -> None:
    original = client_error("SlowDown", 503, "GetObject")
    with pytest.raises(S3ThrottledError) as info, s3_errors("b", "hf-cache/status.json", "read"):
        raise original
    assert info.value.__cause__ is original
    assert str(info.value).startswith("read s3://b/hf-cache/status.json failed: S3 asked to slow down")
    with pytest.raises(ValueError), s3_errors("b"):
        raise ValueError("not S3's")


def test_s3s_message_is_kept_for_an_unexplained_refusal() -> None:
    err = translate(client_error("InvalidArgument", 400, message="Part number must be <= 10000"), bucket="b", key="k")
    assert str(err) == "S3 PutObject on s3://b/k refused (InvalidArgument, HTTP 400: Part number must be <= 10000)"


def test_a_password_in_the_endpoint_url_never_reaches_the_message() -> None:
    exc = EndpointConnectionError(endpoint_url="http://minio:s3cretpassw0rd@127.0.0.1:9/b")
    err = translate(exc, bucket="b")
    assert "s3cretpassw0rd" not in str(err) and "127.0.0.1:9" in str(err)
