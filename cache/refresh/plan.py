"""One file's way through publish: leave it, server-side copy it, or fetch, verify and upload it; then check it landed.

Pure decisions from what the source says about the file and what S3 says about the objects that could stand in for
it, so ``--dry-run`` prints exactly what a run would do and the rules are unit-tested without a server
(tests/test_publish_units.py); publish.py only does the I/O each decision asks for. An object counts only when S3's
own SHA-256 checksum vouches for its bytes (see checksums.py): metadata alone can be rewritten with any bytes under
it, and an object we cannot vouch for is never skipped or copied, its file is fetched again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from hf_cache.errors import HfCacheError, IntegrityError, StorageError
from hf_cache.refresh.checksums import Digest, FileStamp, b64_of_hex, is_multipart, same_checksum
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
class Reusable:
    """A file of another published snapshot of the repo, as its manifest recorded it: a server-side copy source."""

    key: str
    size: int
    sha256: str
    blob_id: str
    s3_checksum: str | None


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
        sha256: str | None
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


def copy_source(file: RepoFile, reusable: Mapping[str, Reusable]) -> Reusable | None:
    """The published file worth a HEAD as a copy source for ``file``: same sha256 (the source vouches for it) and,
    where the source gave a size, the same size. None when there is none; ``decide`` then judges S3's answer."""
    if file.sha256 is None:
        return None
    known = reusable.get(file.sha256)
    if known is None or file.size not in (None, known.size):
        return None
    return known


def needs_blob_id(file: RepoFile) -> bool:
    """A file the source gave no sha256 for is checked against its git blob id: the hash must include it."""
    return file.sha256 is None


def reuse_hash(file: RepoFile, offered: Digest | None, now: FileStamp) -> bool:
    """Whether the hash a source handed over with its bytes can stand for publish's own pass over them.

    Only a hash taken by ``hash_fd`` of this very file, unchanged since (its stamp), and complete enough for the check
    ``fetch_problem`` makes; anything else (no hash, a hash of other bytes, a file rewritten since) is hashed again.
    """
    if offered is None or offered.stamp is None or offered.stamp != now:
        return False
    return offered.blob_id is not None or not needs_blob_id(file)


def fetch_problem(repo: str, file: RepoFile, digest: Digest, in_place: bool) -> IntegrityError | None:
    """What is wrong with fetched bytes against what the source listed for them; None when they are the file.

    The one check every file passes before upload, whatever source fetched it: the size, then the sha256 for files
    the source gave one (LFS files), else the git blob id (``sha1("blob <size>\\0" + bytes)``). A file the source
    gave neither for cannot be verified and is refused. ``in_place``: the source's own file, hashed when the source
    was resolved, so a mismatch means it changed under us.
    """
    found = _mismatch(file, digest)
    if found is None:
        return None
    what, got, want = found
    if in_place:
        now = f"{got} bytes now, {want} when hashed" if what == "size" else f"{what} {got} now, {want} when hashed"
        return IntegrityError(
            f"{repo}: {file.path} changed while it was being published ({now}); run refresh again once it is stable"
        )
    bad = "the download or the source is corrupt: not published"
    if what == "size":
        return IntegrityError(f"{repo}: {file.path} is {got} bytes, the source listed {want}; {bad}")
    if want is None:
        return IntegrityError(
            f"{repo}: {file.path}: the source gave no sha256 or git blob id for it, so its bytes cannot be verified;"
            " not published (the server must list checksums or send them as the file's ETag)"
        )
    return IntegrityError(f"{repo}: {file.path} {what} {got} does not match the source's {want}; {bad}")


def _mismatch(file: RepoFile, digest: Digest) -> tuple[str, int | str | None, int | str | None] | None:
    """The first of size, sha256 (where listed) or else git blob id that differs: (what, got, listed); a file listed
    with neither checksum differs (listed None)."""
    if file.size is not None and digest.size != file.size:
        return "size", digest.size, file.size
    if file.sha256 is not None:
        return None if digest.sha256 == file.sha256 else ("sha256", digest.sha256, file.sha256)
    if file.blob_id is None or digest.blob_id != file.blob_id:
        return "git blob id", digest.blob_id, file.blob_id
    return None


def copy_problem(repo: str, file: RepoFile, plan: FilePlan, head: ObjectState | None) -> HfCacheError | None:
    """What is wrong with a server-side copy as S3 reports it afterwards; None when it holds the bytes planned."""
    if head is None or head.size != plan.size or not same_checksum(head.checksum, plan.s3_checksum):
        return StorageError(f"{repo}: copy of {file.path} did not land intact in S3")
    return None


def upload_problem(
    repo: str, file: RepoFile, digest: Digest, head: ObjectState | None, in_place: bool
) -> HfCacheError | None:
    """What is wrong with an upload as S3 reports it afterwards; None when S3's checksum proves it holds the bytes
    hashed. ``in_place``: the source's own file was read where it is, so a mismatch means it changed under us."""
    if head is None or head.size != digest.size or head.meta.get("sha256") != digest.sha256:
        return StorageError(f"{repo}: {file.path} did not land intact in S3 (size/metadata mismatch)")
    if head.checksum is None:
        return StorageError(
            f"{repo}: the S3 endpoint kept no SHA-256 checksum for {file.path}; refresh needs S3's"
            " additional checksums (ChecksumAlgorithm=SHA256: AWS S3, MinIO, moto) to vouch for published bytes"
        )
    if not same_checksum(head.checksum, digest.s3_checksum):
        # S3 hashed what it received: the bytes uploaded are not the bytes hashed (a local file rewritten during
        # the run, or bytes changed on the way).
        return IntegrityError(
            f"{repo}: {file.path} changed while it was being published (S3's checksum of what it"
            " received does not match the hash taken before); run refresh again once it is stable"
            if in_place
            else f"{repo}: {file.path} did not land intact in S3 (S3's checksum does not match)"
        )
    return None
