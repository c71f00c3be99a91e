"""Multipart uploads left behind by a killed or failed run: found and aborted at the start of the next run.

Parts of an unfinished multipart upload are stored (and billed) but invisible to listings; the bucket's lifecycle
rule only removes them after days. Refresh holds the writer lease while it runs, so any multipart upload under its
prefix that started before this run belongs to a run that is gone.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from hf_cache.errors import StorageError
from hf_cache.s3 import folder_prefix
from hf_cache.s3errors import is_not_found, s3_errors

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import MultipartUploadTypeDef

log = logging.getLogger(__name__)


def stale_uploads(uploads: list[MultipartUploadTypeDef], started_before: datetime) -> list[MultipartUploadTypeDef]:
    """The uploads (``ListMultipartUploads`` entries) that began before ``started_before``: not this run's."""
    return [u for u in uploads if u.get("Initiated") is None or u["Initiated"] < started_before]


def abort_stale_uploads(client: S3Client, bucket: str, prefix: str, started_before: datetime) -> int:
    """Abort every multipart upload under ``prefix`` begun before this run; returns how many were aborted.

    Needs ``s3:ListBucketMultipartUploads`` (and ``s3:AbortMultipartUpload``); without it refresh still works and
    says so once, and the bucket's lifecycle rule stays the backstop.
    """
    found: list[MultipartUploadTypeDef] = []
    try:
        with s3_errors(bucket, folder_prefix(prefix) or None, "list the multipart uploads under"):
            paginator = client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=bucket, Prefix=folder_prefix(prefix)):
                found.extend(page.get("Uploads", []))
    except StorageError as exc:
        log.warning("cannot list multipart uploads left by earlier runs (%s): leaving them to the lifecycle rule", exc)
        return 0
    aborted = 0
    for upload in stale_uploads(found, started_before):
        try:
            with s3_errors(bucket, upload["Key"], "abort the multipart upload of"):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            aborted += 1
        except StorageError as exc:
            if not is_not_found(exc):  # NoSuchUpload: finished or aborted meanwhile
                log.warning("cannot abort a multipart upload left by an earlier run: %s", exc)
    if aborted:
        log.info("aborted %d multipart upload(s) left by an earlier run", aborted)
    return aborted
