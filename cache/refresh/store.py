"""The bucket as refresh sees it: get/put/head/list of keys under one prefix, and verified server-side copies.

Refresh, prune and the commands all read and write through one ``Target``, so "absent" means one thing everywhere
(None, never an exception), a corrupt JSON object of ours is reported and replaced rather than fatal, and every
HEAD asks for S3's own checksum (``ChecksumMode=ENABLED``), which is what lets publish vouch for an object's bytes.
"""

from __future__ import annotations

import contextlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hf_cache.refresh.checksums import is_multipart, part_size_for
from hf_cache.refresh.plan import ObjectState
from hf_cache.s3errors import BOTO_ERRORS, is_not_found, s3_errors, translate

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Where to publish: one bucket and prefix (the prefix root is what pods see as HF_HOME).

    A failed call raises one of our ``StorageError`` types (``hf_cache.s3errors``) naming the key and what to do.
    """

    client: S3Client
    bucket: str
    prefix: str

    def get_bytes(self, key: str) -> bytes | None:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except BOTO_ERRORS as exc:
            if is_not_found(exc):
                return None
            raise translate(exc, bucket=self.bucket, key=key, action="read") from exc
        return body

    def get_json(self, key: str) -> Any | None:
        """The JSON object at ``key``; None when absent, and also when corrupt (truncated, garbage): hf-cache's own
        objects are all rewritten by the run that reads them, so a corrupt one is reported and replaced, never fatal."""
        data = self.get_bytes(key)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            log.warning("s3://%s/%s is not valid JSON (%s): ignoring it; this run replaces it", self.bucket, key, exc)
            return None

    def head(self, key: str) -> ObjectState | None:
        """Size, S3's SHA-256 checksum and metadata of ``key``; None when there is no such object."""
        try:
            h = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except BOTO_ERRORS as exc:
            if is_not_found(exc):
                return None
            raise translate(exc, bucket=self.bucket, key=key, action="check") from exc
        return ObjectState(key, h["ContentLength"], h.get("ChecksumSHA256"), h.get("Metadata", {}))

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with s3_errors(self.bucket, key, "write"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def put_json(self, key: str, obj: Any) -> None:
        self.put_bytes(key, json.dumps(obj, indent=1, sort_keys=True).encode(), "application/json")

    def list(self, prefix: str) -> dict[str, int]:
        """key -> size of every object under ``prefix`` (a folder: a trailing '/' is added)."""
        out: dict[str, int] = {}
        folder = prefix.rstrip("/") + "/"
        with s3_errors(self.bucket, folder, "list"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
                for obj in page.get("Contents", []):
                    out[obj["Key"]] = obj["Size"]
        return out


def server_copy(t: Target, src: str, dst: str, size: int, metadata: dict[str, str]) -> None:
    """Copy ``src`` to ``dst`` inside the bucket with our metadata and a fresh S3 SHA-256 checksum.

    Done with plain S3 calls, not s3transfer: s3transfer's multipart copy drops the object's metadata in some
    versions (0.10), so the result would depend on the installed version. Below the multipart threshold one
    CopyObject; above it UploadPartCopy of ``part_size_for(size)`` ranges, so the checksum S3 computes is the
    same multipart checksum the source has. A failed multipart copy is aborted, not left behind.
    """
    with s3_errors(t.bucket, dst, f"copy of s3://{t.bucket}/{src} to"):
        _copy(t, src, dst, size, metadata)


def _copy(t: Target, src: str, dst: str, size: int, metadata: dict[str, str]) -> None:
    c, bucket = t.client, t.bucket
    if not is_multipart(size):
        c.copy_object(
            Bucket=bucket,
            Key=dst,
            CopySource={"Bucket": bucket, "Key": src},
            MetadataDirective="REPLACE",
            Metadata=metadata,
            ChecksumAlgorithm="SHA256",
        )
        return
    upload_id = c.create_multipart_upload(Bucket=bucket, Key=dst, Metadata=metadata, ChecksumAlgorithm="SHA256")[
        "UploadId"
    ]
    part = part_size_for(size)
    ranges = [(n + 1, start, min(start + part, size) - 1) for n, start in enumerate(range(0, size, part))]

    def copy_part(r: tuple[int, int, int]) -> CompletedPartTypeDef:
        number, first, last = r
        out = c.upload_part_copy(
            Bucket=bucket,
            Key=dst,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": src},
            CopySourceRange=f"bytes={first}-{last}",
        )["CopyPartResult"]
        done: CompletedPartTypeDef = {"PartNumber": number, "ETag": out["ETag"]}
        if out.get("ChecksumSHA256"):
            done["ChecksumSHA256"] = out["ChecksumSHA256"]
        return done

    try:
        with ThreadPoolExecutor(4, thread_name_prefix="copy") as pool:
            parts = list(pool.map(copy_part, ranges))
        c.complete_multipart_upload(Bucket=bucket, Key=dst, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except BaseException:
        with contextlib.suppress(Exception):
            c.abort_multipart_upload(Bucket=bucket, Key=dst, UploadId=upload_id)
        raise
