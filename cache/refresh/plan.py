"""What to do with one file of a snapshot: leave it, server-side copy it, or fetch, verify and upload it.

A pure decision from what the source says about the file and what S3 says about the objects that could stand in for
it, so ``--dry-run`` prints exactly what a run would do and the rules are unit-tested without a server. An object
counts only when S3's own SHA-256 checksum vouches for its bytes (see checksums.py): metadata alone can be rewritten
with any bytes under it, and an object we cannot vouch for is never skipped or copied, its file is fetched again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hf_cache.refresh.checksums import b64_of_hex, is_multipart, same_checksum
from hf_cache.refresh.source import RepoFile


class Action(StrEnum):
    SKIP = "leave"  # the object at the file's key already holds these bytes
    COPY = "copy"  # the same bytes are published in another snapshot: server-side copy
    FETCH = "upload"  # download (or read the local file), verify, upload


@dataclass(frozen=True)
class ObjectState:
    """An object's HEAD (``ChecksumMode=ENABLED``): size, S3's SHA-256 checksum (None if it keeps none), metadata."""

    key: str
    size: int
    checksum: str | None
    meta: dict[str, str]


@dataclass(frozen=True)
class Candidate:
    """A verified file of another published snapshot of the repo, as its manifest recorded it, and its object now."""

    obj: ObjectState
    sha256: str
    s3_checksum: str | None
    blob_id: str


@dataclass(frozen=True)
class FilePlan:
    action: Action
    size: int | None
    source_key: str | None = None  # COPY: the object copied
    sha256: str | None = None  # SKIP/COPY: the vouched sha256 of the bytes
    blob_id: str | None = None
    s3_checksum: str | None = None  # SKIP/COPY: S3's checksum the object has (and a copy must get)
    reason: str = ""


def vouched(obj: ObjectState, sha256: str | None, s3_checksum: str | None) -> bool:
    """S3's checksum of ``obj`` proves its bytes have ``sha256``.

    A single-part object's checksum is its sha256; a multipart one's is a digest of part digests, matched against
    the one recorded when we hashed the bytes (manifest, or our own metadata for a half-published snapshot).
    """
    if obj.checksum is None or sha256 is None:
        return False
    if not is_multipart(obj.size):
        return same_checksum(obj.checksum, b64_of_hex(sha256))
    return same_checksum(obj.checksum, s3_checksum)


def decide(file: RepoFile, at_key: ObjectState | None, candidate: Candidate | None) -> FilePlan:
    """Leave the object at the file's key if S3 vouches it holds the file; else copy a vouched object with the same
    sha256 and size; else fetch."""
    if at_key is not None and (file.size is None or at_key.size == file.size):
        meta = at_key.meta
        if file.sha256 is not None:
            sha256 = file.sha256
        elif file.blob_id is not None and meta.get("blob-id") == file.blob_id:
            sha256 = meta.get("sha256")  # small git files: the Hub gives the blob id, our metadata maps it to sha256
        else:
            sha256 = None
        expected = file.s3_checksum or meta.get("s3-checksum")
        if sha256 and meta.get("sha256") == sha256 and meta.get("blob-id") and vouched(at_key, sha256, expected):
            return FilePlan(
                Action.SKIP, at_key.size, sha256=sha256, blob_id=meta["blob-id"], s3_checksum=at_key.checksum
            )
    if (
        candidate is not None
        and file.sha256 is not None
        and candidate.sha256 == file.sha256
        and file.size in (None, candidate.obj.size)
    ):
        if vouched(candidate.obj, candidate.sha256, candidate.s3_checksum):
            return FilePlan(
                Action.COPY,
                candidate.obj.size,
                source_key=candidate.obj.key,
                sha256=candidate.sha256,
                blob_id=candidate.blob_id,
                s3_checksum=candidate.obj.checksum,
            )
        return FilePlan(Action.FETCH, file.size, reason=f"S3 cannot vouch for {candidate.obj.key}: not copied")
    return FilePlan(Action.FETCH, file.size)
