"""Hashes of a file's bytes, including the SHA-256 checksum S3 itself keeps for the object we upload.

S3 computes that checksum from the bytes it received (``ChecksumAlgorithm=SHA256``) and returns it on HEAD with
``ChecksumMode=ENABLED``. Knowing in advance what it must be lets publish prove that the bytes that landed are the
bytes it hashed (a local file rewritten during a run is caught), and lets a later run vouch for an object before
skipping or server-side copying it, without downloading it: object metadata can be rewritten with any bytes, S3's
checksum cannot. A single-part object's checksum is the SHA-256 of its bytes; a multipart object's is the SHA-256 of
the concatenated part digests with ``-<parts>`` appended (some servers omit the suffix), so the part size is fixed
here and used for every upload and copy.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from hf_cache.units import MiB

MULTIPART_THRESHOLD = 200 * MiB  # below: one PUT / one CopyObject; from here: multipart, PART_SIZE parts
PART_SIZE = 64 * MiB
MAX_PARTS = 10_000
CHUNK = 8 * MiB


def part_size_for(size: int) -> int:
    """The part size of a multipart transfer of ``size`` bytes: PART_SIZE, doubled until S3's 10,000 parts suffice.

    This is what s3transfer's ChunksizeAdjuster does too; publish passes the result explicitly, so it holds for every
    s3transfer version.
    """
    part = PART_SIZE
    while -(-size // part) > MAX_PARTS:
        part *= 2
    return part


def is_multipart(size: int) -> bool:
    return size >= MULTIPART_THRESHOLD


def b64_of_hex(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def composite(part_digests: list[bytes]) -> str:
    return base64.b64encode(hashlib.sha256(b"".join(part_digests)).digest()).decode() + f"-{len(part_digests)}"


def same_checksum(a: str | None, b: str | None) -> bool:
    """Equal S3 checksums; the ``-N`` part count of a multipart checksum is optional (moto leaves it out)."""
    if not a or not b:
        return False
    return a.split("-", 1)[0] == b.split("-", 1)[0]


@dataclass(frozen=True)
class FileStamp:
    """Which file, in which state: a hash taken of one file is reused for that file only while it is unchanged.

    Publish hashes what it uploads unless a source hands it a hash of the very file it is about to read (same inode,
    size and change times as when hashed), so a source that hashed its bytes once (a local folder, at resolve) costs
    no second pass, and a source that hands over a hash of other bytes (or of a file rewritten since) cannot.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @staticmethod
    def of(st: os.stat_result) -> FileStamp:
        return FileStamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class Digest:
    """What one pass over a file's bytes yields."""

    sha256: str
    blob_id: str | None  # git blob id (sha1 of "blob <len>\\0" + bytes); None when not asked for
    size: int
    s3_checksum: str  # what S3's ChecksumSHA256 of this file, uploaded by publish, must be
    stamp: FileStamp | None = None  # the file hashed, unchanged from the first byte read to the last (hash_fd only)


def hash_fd(fd: int, blob_id: bool = True) -> Digest:
    """Hash an open file in one pass: sha256, optionally the git blob id, and the S3 checksum (part digests too).

    Reads from the descriptor until EOF; a file whose size changes under us is an error, not a silent mix.
    """
    before = FileStamp.of(os.fstat(fd))
    expected = before.size
    whole = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % expected) if blob_id else None
    multipart = is_multipart(expected)
    part_size = part_size_for(expected)
    part = hashlib.sha256() if multipart else None
    in_part = 0
    parts: list[bytes] = []
    size = 0
    while chunk := os.read(fd, min(CHUNK, part_size - in_part) if multipart else CHUNK):
        whole.update(chunk)
        if sha1 is not None:
            sha1.update(chunk)
        size += len(chunk)
        if part is not None:
            part.update(chunk)
            in_part += len(chunk)
            if in_part == part_size:
                parts.append(part.digest())
                part, in_part = hashlib.sha256(), 0
    if size != expected:
        raise ChangedWhileHashing(f"{expected} bytes at the start, {size} read")
    if part is not None and in_part:
        parts.append(part.digest())
    sha256 = whole.hexdigest()
    after = FileStamp.of(os.fstat(fd))
    return Digest(
        sha256,
        sha1.hexdigest() if sha1 is not None else None,
        size,
        composite(parts) if multipart else b64_of_hex(sha256),
        stamp=after if after == before else None,  # rewritten while read (same size): not a hash to reuse
    )


class ChangedWhileHashing(Exception):
    """The file grew or shrank while it was read."""
