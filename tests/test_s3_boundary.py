"""The S3 calls every command starts with are ones the per-cluster IAM roles allow.

The roles grant ListBucket only with ``s3:prefix`` equal to ``<prefix>/`` or below it (terraform/modules/cluster):
a listing without the trailing slash, or a HeadBucket (authorised as ListBucket with no prefix), is denied on AWS.
moto enforces no IAM, so the tests record the parameters botocore sends.
"""

from __future__ import annotations

from typing import Any

import pytest

from hf_cache.errors import StorageError
from hf_cache.s3 import check_bucket, folder_prefix, make_client


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
