"""The S3 calls every command starts with are ones the per-cluster IAM roles allow.

The roles grant ListBucket only with ``s3:prefix`` equal to ``<prefix>/`` or below it (terraform/modules/cluster):
a listing without the trailing slash, or a HeadBucket (authorised as ListBucket with no prefix), is denied on AWS.
moto enforces no IAM, so the tests record the parameters botocore sends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hf_cache.errors import (
    S3AccessDeniedError,
    S3NotFoundError,
    S3PreconditionFailedError,
    S3RefusedError,
    S3ThrottledError,
    S3UnreachableError,
    StorageError,
)
from hf_cache.lab.faultproxy import FaultProxy, Refuse
from hf_cache.lab.s3server import S3Server, via
from hf_cache.s3 import check_bucket, folder_prefix, make_client
from hf_cache.s3errors import is_not_found, is_precondition_failed, s3_errors


def test_folder_prefix_has_exactly_one_trailing_slash() -> None:
    assert folder_prefix("") == ""
    assert folder_prefix("/") == ""
    assert folder_prefix("clusters/gpu-a") == "clusters/gpu-a/"
    assert folder_prefix("/clusters/gpu-a/") == "clusters/gpu-a/"


def _record(client: Any) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []

    def before(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, dict(params)))

    client.meta.events.register("provide-client-params.s3.*", before)
    return calls


@pytest.mark.parametrize("prefix", ["", "clusters/gpu-a", "clusters/gpu-a/"])
def test_check_bucket_lists_the_prefix_folder_and_never_heads_the_bucket(bucket: str, prefix: str) -> None:
    client = make_client()
    calls = _record(client)
    check_bucket(client, bucket, prefix)
    assert [name for name, _ in calls] == ["ListObjectsV2"]
    assert calls[0][1]["Prefix"] == folder_prefix(prefix)


def test_check_bucket_names_a_missing_bucket(s3_env: dict[str, str]) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        check_bucket(make_client(), "no-such-bucket-hf-cache", "p")


def test_mount_preflight_lists_with_the_trailing_slash(
    bucket: str, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hf_cache.mount.supervisor as supervisor
    from hf_cache.mount.config import MountConfig

    seen: list[str] = []
    real = supervisor.make_client

    def recording_client(*args: Any, **kwargs: Any) -> Any:
        client = real(*args, **kwargs)
        client.meta.events.register(
            "provide-client-params.s3.*", lambda params, model, **_: seen.append(f"{model.name} {params.get('Prefix')}")
        )
        return client

    monkeypatch.setattr(supervisor, "make_client", recording_client)
    supervisor.preflight(MountConfig(bucket=bucket, prefix="clusters/gpu-a", endpoint_url=s3_env["AWS_ENDPOINT_URL"]))
    assert seen == ["ListObjectsV2 clusters/gpu-a/"]


# -- the boundary end to end: one case per error type against a real server or a real refusal ----------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_missing_bucket_or_key_is_not_found(bucket: str, s3_env: dict[str, str]) -> None:
    client = make_client(max_attempts=1)
    with pytest.raises(S3NotFoundError, match="bucket 'no-such-bucket-hf-cache' does not exist") as info:
        check_bucket(client, "no-such-bucket-hf-cache", "p")
    assert isinstance(info.value, FileNotFoundError) and info.value.code == "NoSuchBucket"
    missing = f"read s3://{bucket}/hub/nope failed: no such key"
    with pytest.raises(S3NotFoundError, match=missing) as got, s3_errors(bucket, "hub/nope", "read"):
        client.get_object(Bucket=bucket, Key="hub/nope")
    assert is_not_found(got.value)
    with pytest.raises(S3NotFoundError, match=r"HTTP 404"), s3_errors(bucket, "hub/nope"):
        client.head_object(Bucket=bucket, Key="hub/nope")  # a HEAD's 404 has no body: code "404"


def test_a_refusal_by_status_is_denied_or_throttled_or_unavailable(s3_server: S3Server, bucket: str) -> None:
    for status, kind, fragment in (
        (403, S3AccessDeniedError, "access denied (AccessDenied, HTTP 403); check the credentials"),
        (503, S3ThrottledError, "S3 asked to slow down (SlowDown, HTTP 503)"),
        (500, S3UnreachableError, "server-side error (InternalError, HTTP 500)"),
    ):
        with FaultProxy(s3_server.endpoint, [Refuse("*", f"/{bucket}", status)]) as proxy:
            client = make_client(proxy.endpoint, max_attempts=1)
            with pytest.raises(kind) as info:
                check_bucket(client, bucket, "clusters/a")
            message = str(info.value)
            assert message.startswith(f"list s3://{bucket}/clusters/a/ failed: ") and fragment in message, message
            assert info.value.status == status and proxy.refused


def test_a_closed_port_is_unreachable(s3_env: dict[str, str]) -> None:
    client = make_client(f"http://127.0.0.1:{_closed_port()}", max_attempts=1)
    with pytest.raises(S3UnreachableError, match="cannot reach S3 for bucket 'b'") as info:
        check_bucket(client, "b")
    assert isinstance(info.value, ConnectionError) and info.value.status is None
    assert "--endpoint-url" in str(info.value)


def test_what_s3_refuses_is_refused_and_a_lost_condition_is_precondition_failed(
    bucket: str, s3_env: dict[str, str]
) -> None:
    client = make_client(max_attempts=1)
    client.put_object(Bucket=bucket, Key="k", Body=b"hello")
    with pytest.raises(S3RefusedError, match=r"refused \(InvalidRange, HTTP 416") as info, s3_errors(bucket, "k"):
        client.get_object(Bucket=bucket, Key="k", Range="bytes=100-200")
    assert not isinstance(info.value, S3PreconditionFailedError)
    with (
        pytest.raises(S3PreconditionFailedError, match="another writer got there first") as lost,
        s3_errors(bucket, "k", "write"),
    ):
        client.put_object(Bucket=bucket, Key="k", Body=b"again", IfNoneMatch="*")
    assert is_precondition_failed(lost.value) and isinstance(lost.value, S3RefusedError)


def test_no_credentials_is_denied_with_what_to_set(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = make_client(s3_server.endpoint, region="us-east-1", max_attempts=1)
    with pytest.raises(S3AccessDeniedError, match="no AWS credentials found") as info:
        check_bucket(client, "b")
    assert isinstance(info.value, PermissionError) and "AWS_ACCESS_KEY_ID" in str(info.value)


def test_the_cli_prints_one_line_and_exits_1_for_a_denied_bucket(s3_server: S3Server, bucket: str) -> None:
    with FaultProxy(s3_server.endpoint, [Refuse("*", f"/{bucket}", 403)]) as proxy:
        env = {**os.environ, **via(s3_server.env(), proxy.endpoint)}
        result = subprocess.run(
            [sys.executable, "-m", "hf_cache", "ls", "--bucket", bucket], env=env, capture_output=True, text=True
        )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"hf-cache: error: list bucket {bucket!r} failed: access denied"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_the_mounts_status_poll_reads_unchanged_and_absent_through_the_boundary(
    bucket: str, s3_env: dict[str, str]
) -> None:
    """304 (unchanged since the ETag) and 404 (nothing published yet) are answers, not S3 failures: a failure would
    count as S3 being down and stop the re-listing of new snapshots."""
    from hf_cache import layout
    from hf_cache.mount.config import MountConfig
    from hf_cache.mount.supervisor import Supervisor

    client = make_client(max_attempts=1)
    sup = Supervisor(MountConfig(bucket=bucket, prefix="clusters/a"))
    assert sup._get_status(client, None) == (None, None)
    client.put_object(Bucket=bucket, Key=layout.status_key("clusters/a"), Body=b'{"state": "ok"}')
    etag, body = sup._get_status(client, None)
    assert etag and body == b'{"state": "ok"}'
    assert sup._get_status(client, etag) == (etag, None)
    with FaultProxy(s3_env["AWS_ENDPOINT_URL"], [Refuse("GET", "status.json", 403)]) as proxy:
        denied = make_client(proxy.endpoint, max_attempts=1)
        with pytest.raises(S3AccessDeniedError):
            sup._get_status(denied, etag)


def test_the_lease_and_the_upload_sweep_go_through_the_boundary(
    s3_server: S3Server, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused lease write is our one line (the refresh stops); a refused multipart listing is a warning (refresh
    goes on: the bucket's lifecycle rule is the backstop)."""
    from datetime import UTC, datetime

    from hf_cache.refresh.lease import Lease
    from hf_cache.refresh.uploads import abort_stale_uploads

    with FaultProxy(s3_server.endpoint, [Refuse("PUT", "lease.json", 403), Refuse("GET", "?uploads", 403)]) as proxy:
        client = make_client(proxy.endpoint, max_attempts=1)
        with pytest.raises(S3AccessDeniedError, match=f"write the refresh lease s3://{bucket}/p/hf-cache/lease.json"):
            Lease(client, bucket, "p").acquire()
        caplog.set_level("WARNING")
        assert abort_stale_uploads(client, bucket, "p", datetime.now(UTC)) == 0
    assert "cannot list multipart uploads left by earlier runs" in caplog.text and "AccessDenied" in caplog.text
