"""S3 throttling in the middle of a refresh: 503 SlowDown and 429 answers on single PUTs and on the parts of a
multipart upload (a file above the 200 MiB threshold), through the fault proxy in front of moto's S3 server.

Throttling that retries get past publishes every file byte-exact; throttling that outlasts the retries fails that
repo only, with one line, its ref left where it was and no multipart upload left behind; status.json says which.
The real CLI runs in a subprocess, so what is tested is the real client configuration (cache/s3.py).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from hf_cache import settings
from hf_cache.errors import ConfigError
from hf_cache.lab.faultproxy import FaultProxy, Refuse
from hf_cache.lab.s3server import S3Server, via
from hf_cache.refresh.checksums import MULTIPART_THRESHOLD, PART_SIZE
from hf_cache.s3 import make_client
from tests.refresh_helpers import check_refs_complete, objects, read, run_refresh, status

MiB = 1024 * 1024
BIG = MULTIPART_THRESHOLD + 3 * MiB + 5  # 4 parts of 64 MiB, the last one short


def _folder(root: Path, name: str, big: bool) -> Path:
    d = root / name
    d.mkdir()
    (d / "config.json").write_text(f'{{"model_type": "gpt2", "name": "{name}"}}\n')
    (d / "tokenizer.json").write_bytes(bytes(range(256)) * 64)
    if big:
        _write_big(d / "model.safetensors")
    return d


def _write_big(path: Path) -> None:
    with path.open("wb") as f:  # sparse, distinct bytes in every part
        f.truncate(BIG)
        for off in range(0, BIG, PART_SIZE):
            f.seek(off)
            f.write(os.urandom(4096))


def _sha256(data: bytes | Path) -> str:
    h = hashlib.sha256()
    if isinstance(data, bytes):
        h.update(data)
        return h.hexdigest()
    with data.open("rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def _published_sha256(client: object, bucket: str, key: str) -> str:
    h = hashlib.sha256()
    body = client.get_object(Bucket=bucket, Key=key)["Body"]  # type: ignore[attr-defined]
    while chunk := body.read(8 * MiB):
        h.update(chunk)
    return h.hexdigest()


def _proxied(s3: S3Server, proxy: FaultProxy, **extra: str) -> dict[str, str]:
    return {**via(s3.env(), proxy.endpoint), **extra}


def _empty(client: object, bucket: str) -> None:
    """The big objects live in the shared moto server's memory: give it back."""
    for key in objects(client, bucket):
        client.delete_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]


def test_throttled_puts_and_parts_are_retried_and_every_file_lands_byte_exact(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "big", big=True)
    models = tmp_path / "models.txt"
    models.write_text(f"team/big source=file://{folder}\n")
    client = s3_server.client()
    rules = [
        Refuse("PUT", ("model.safetensors?", "partNumber=2"), 429, times=2),  # one part twice, 429 Too Many Requests
        Refuse("PUT", ("model.safetensors?", "partNumber="), 503, times=3),  # other parts: 503 SlowDown
        Refuse("POST", ("model.safetensors?", "uploads"), 503, times=1),  # CreateMultipartUpload
        Refuse("POST", ("model.safetensors?", "uploadId="), 503, times=1),  # CompleteMultipartUpload
        Refuse("PUT", ("/snapshots/", "config.json"), 503, times=2),  # a single PutObject
        Refuse("PUT", "/refs/main", 429, times=1),  # the ref, the commit of the snapshot
    ]
    try:
        with FaultProxy(s3_server.endpoint, rules) as proxy:
            result = run_refresh(models, bucket, _proxied(s3_server, proxy), timeout=300)
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        refused = [(m, p) for m, p in proxy.refused]
        assert len(refused) == sum(r.times or 0 for r in rules), f"the proxy refused {refused}: not every fault met"
        st = status(client, bucket)
        (row,) = st["repos"]
        assert (row["repo"], row["state"], row["files_uploaded"]) == ("team/big", "ok", 3), row
        for path in ("config.json", "tokenizer.json", "model.safetensors"):
            key = f"p/hub/models--team--big/snapshots/{row['sha']}/{path}"
            assert _published_sha256(client, bucket, key) == _sha256(folder / path), f"{path} is not byte-exact"
        assert read(client, bucket, "p/hub/models--team--big/refs/main") == row["sha"].encode()
        assert check_refs_complete(client, bucket) == 1
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    finally:
        _empty(client, bucket)


def test_throttling_that_outlasts_the_retries_fails_that_repo_cleanly(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "big", big=False)
    other = _folder(tmp_path, "other", big=False)
    models = tmp_path / "models.txt"
    models.write_text(f"team/big source=file://{folder}\nteam/other source=file://{other}\n")
    client = s3_server.client()
    try:
        first = run_refresh(models, bucket, s3_server.env())
        assert first.returncode == 0, first.stderr
        before = read(client, bucket, "p/hub/models--team--big/refs/main").decode()
        # A new commit with a file above the multipart threshold; S3 throttles every one of its parts, for longer
        # than the retries last (AWS_MAX_ATTEMPTS=2 keeps the test short; the default is 8).
        _write_big(folder / "model.safetensors")
        rules = [Refuse("PUT", ("models--team--big/", "model.safetensors?", "partNumber="), 503)]
        with FaultProxy(s3_server.endpoint, rules) as proxy:
            result = run_refresh(models, bucket, _proxied(s3_server, proxy, AWS_MAX_ATTEMPTS="2"), timeout=300)
        out = result.stdout + result.stderr
        assert proxy.refused, "the proxy refused nothing: the test did not test anything"
        assert result.returncode == 1, out
        assert "Traceback" not in out
        failed = [line for line in out.splitlines() if "FAILED  team/big@main" in line]
        assert failed and "S3 asked to slow down" in failed[0] and "run again later" in failed[0], out
        st = status(client, bucket)
        rows = {r["repo"]: r for r in st["repos"]}
        assert (rows["team/big"]["state"], rows["team/other"]["state"]) == ("failed", "ok")
        assert "S3 asked to slow down" in rows["team/big"]["error"] and "model.safetensors" in rows["team/big"]["error"]
        new = rows["team/big"]["sha"]
        assert new != before
        # The ref was not moved: readers keep the complete old snapshot; nothing names the new one.
        assert read(client, bucket, "p/hub/models--team--big/refs/main").decode() == before
        keys = set(objects(client, bucket))
        assert not [k for k in keys if new in k and ("/trees/" in k or "/manifests/" in k)]
        assert not [k for k in keys if k.endswith(f"{new}/model.safetensors")]
        assert check_refs_complete(client, bucket) == 2
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # the failed upload aborted
    finally:
        _empty(client, bucket)


def test_aws_max_attempts_sets_the_tries_per_call_and_a_bad_value_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3's own variable, in boto3's meaning (tries, the first included), which our explicit retry Config would
    otherwise hide."""
    endpoint = "http://127.0.0.1:9"
    monkeypatch.delenv(settings.MAX_ATTEMPTS_ENV, raising=False)
    assert make_client(endpoint).meta.config.retries == {
        "total_max_attempts": settings.S3_MAX_ATTEMPTS,
        "mode": "standard",
    }
    monkeypatch.setenv(settings.MAX_ATTEMPTS_ENV, "3")
    assert make_client(endpoint).meta.config.retries["total_max_attempts"] == 3
    assert make_client(endpoint, max_attempts=1).meta.config.retries["total_max_attempts"] == 2  # the mount's own
    for bad in ("0", "-1", "many"):
        monkeypatch.setenv(settings.MAX_ATTEMPTS_ENV, bad)
        with pytest.raises(ConfigError, match=f"AWS_MAX_ATTEMPTS='{bad}' is not a number of tries >= 1; unset it"):
            make_client(endpoint)
