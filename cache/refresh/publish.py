"""Publish one repo's snapshot to S3: upload and verify every file, then the tree and manifest, then the ref.

The ref is the single write that makes a snapshot visible to readers, and it is written last: a refresh killed at
any moment leaves every ref pointing at a snapshot that was complete when the ref was written. Files already
published with the same checksum are skipped, so an unchanged repo costs a manifest read and a ref read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from hf_cache import __version__, layout
from hf_cache.errors import HfCacheError, HubError, IntegrityError, StorageError
from hf_cache.logs import redact
from hf_cache.modelsfile import ModelEntry
from hf_cache.progress import Progress, plural
from hf_cache.refresh.checksums import MULTIPART_THRESHOLD, Digest, is_multipart, part_size_for, same_checksum
from hf_cache.refresh.plan import Action, Candidate, FilePlan, ObjectState, decide, vouched
from hf_cache.refresh.source import (
    LFS_THRESHOLD,
    HubSource,
    LocalSource,
    RepoFile,
    Snapshot,
    lfs_blob_id,
    source_for,
    verify_download,
)

log = logging.getLogger("hf_cache.refresh")

MiB = 1024 * 1024
WRITE_OPS = (
    "UploadPartCopy",
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "DeleteObject",
    "DeleteObjects",
    "CopyObject",
)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def install_kill_hook(client: Any) -> None:
    """Fault injection for the atomicity test: SIGKILL ourselves before the Nth S3 write (``HFCACHE_TEST_KILL_AFTER``).

    A deterministic kill point lets the test cover every step of a publish, not just the ones a timer happens to hit.
    """
    limit = os.environ.get("HFCACHE_TEST_KILL_AFTER")
    if not limit:
        return
    counter = {"n": 0}
    lock = threading.Lock()

    def before_write(**_: Any) -> None:
        with lock:
            counter["n"] += 1
            if counter["n"] > int(limit):
                os.kill(os.getpid(), signal.SIGKILL)

    for op in WRITE_OPS:
        client.meta.events.register(f"before-call.s3.{op}", before_write)


@dataclass
class RepoResult:
    """What happened to one models.txt entry; becomes a row of status.json."""

    entry: ModelEntry
    sha: str | None = None
    state: str = "pending"
    error: str | None = None
    files: int = 0
    bytes_total: int = 0
    files_uploaded: int = 0
    bytes_uploaded: int = 0
    bytes_skipped: int = 0
    files_copied: int = 0
    bytes_copied: int = 0
    started: str = field(default_factory=now_iso)
    ended: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "repo": self.entry.repo_id,
            "type": self.entry.repo_type,
            "requested_revision": self.entry.requested_revision,
            "ref": self.entry.ref_name,
            "source": "local" if self.entry.source else "hub",
            "sha": self.sha,
            "state": self.state,
            "error": self.error,
            "files": self.files,
            "bytes": self.bytes_total,
            "files_uploaded": self.files_uploaded,
            "bytes_uploaded": self.bytes_uploaded,
            "bytes_skipped": self.bytes_skipped,
            "files_copied": self.files_copied,
            "bytes_copied": self.bytes_copied,
            "started": self.started,
            "ended": self.ended,
        }


@dataclass(frozen=True)
class Target:
    """Where to publish: one bucket and prefix (the prefix root is what pods see as HF_HOME)."""

    client: Any
    bucket: str
    prefix: str

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

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
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return ObjectState(key, h["ContentLength"], h.get("ChecksumSHA256"), h.get("Metadata", {}))

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def put_json(self, key: str, obj: Any) -> None:
        self.put_bytes(key, json.dumps(obj, indent=1, sort_keys=True).encode(), "application/json")

    def list(self, prefix: str) -> dict[str, int]:
        """key -> size of every object under ``prefix`` (a folder: a trailing '/' is added)."""
        out: dict[str, int] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix.rstrip("/") + "/"):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out


def valid_manifest(m: Any) -> bool:
    """A manifest publish can rely on: complete, with every field it reads (a garbage one is treated as absent)."""
    try:
        return (
            isinstance(m, dict)
            and m.get("complete") is True
            and isinstance(m["repo"], str)
            and isinstance(m["sha"], str)
            and layout.SHA_RE.match(m["sha"]) is not None
            and all(
                isinstance(f["path"], str)
                and isinstance(f["size"], int)
                and isinstance(f["sha256"], str)
                and isinstance(f["blob_id"], str)
                for f in m["files"]
            )
        )
    except (KeyError, TypeError):
        return False


def tree_listing(files: list[dict[str, Any]]) -> dict[str, Any]:
    """``trees/<sha>.json`` as huggingface_hub >= 2 reads it: offline snapshot_download then knows what is complete."""
    entries: dict[str, Any] = {}
    for f in files:
        info: dict[str, Any] = {"size": f["size"], "blob_id": f["blob_id"]}
        if f.get("lfs"):
            info["lfs_sha256"] = f["sha256"]
            info["lfs_size"] = f["size"]
        entries[f["path"]] = info
    return {"format_version": 1, "files": {p: entries[p] for p in sorted(entries)}}


@dataclass
class RepoPlan:
    """What publishing one entry would do (``--dry-run``), per file, with bytes."""

    entry: ModelEntry
    sha: str | None = None
    ref_moves: bool = False
    files: list[tuple[str, FilePlan]] = field(default_factory=list)
    error: str | None = None

    def totals(self) -> dict[Action, tuple[int, int]]:
        out: dict[Action, tuple[int, int]] = {}
        for _, plan in self.files:
            n, b = out.get(plan.action, (0, 0))
            out[plan.action] = (n + 1, b + (plan.size or 0))
        return out


class Publisher:
    """Publishes entries one at a time, files of a repo in parallel, with bounded scratch disk.

    Scratch use is at most ``workers`` files at once (each downloaded file is deleted as soon as it is uploaded),
    so a 140 GB repo publishes from a pod with a disk the size of its largest few files.
    """

    def __init__(
        self,
        target: Target,
        hub: HubSource,
        scratch: Path,
        workers: int = 4,
        progress: Progress | None = None,
    ):
        self.target = target
        self.hub = hub
        self.scratch = scratch
        self.workers = max(1, workers)
        self.progress = progress or Progress("refresh", tty=False)
        self._lock = threading.Lock()

    @staticmethod
    def transfer_config(size: int) -> TransferConfig:
        """Like rclone's upload cutoff: below the threshold one streamed PUT beats assembling parts. The part size
        is explicit (checksums.part_size_for), so S3's multipart checksum is the one publish computed."""
        return TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=part_size_for(size),
            max_concurrency=4,
            use_threads=True,
        )

    # -- one repo --------------------------------------------------------------------------------------------
    def publish(self, entry: ModelEntry) -> RepoResult:
        """Publish one entry. Whatever goes wrong inside (S3 refusing a PUT, a bad local file, a bug) fails this
        repo only, named, and the run goes on with the next."""
        result = RepoResult(entry)
        try:
            source = source_for(entry, self.hub)
            snapshot = source.resolve(entry)
            result.sha = snapshot.sha
            self._publish_snapshot(entry, source, snapshot, result)
            result.state = "ok"
        except HfCacheError as exc:
            result.state, result.error = "failed", redact(str(exc))
        except ClientError as exc:
            result.state = "failed"
            result.error = redact(f"{entry.display}: S3 refused a request: {exc}")
        except OSError as exc:
            result.state, result.error = "failed", redact(f"{entry.display}: {exc}")
        except Exception as exc:  # one repo's failure, whatever its type, must not end the run (S3UploadFailedError)
            result.state, result.error = "failed", redact(f"{entry.display}: {type(exc).__name__}: {exc}")
            log.debug("%s: failed", entry.display, exc_info=True)
        if result.error is not None:
            log.error("%s: failed: %s", entry.display, result.error.removeprefix(f"{entry.display}: "))
        result.ended = now_iso()
        return result

    def plan(self, entry: ModelEntry) -> RepoPlan:
        """Resolve an entry and decide every file as a run would, reading S3 and the source but writing nothing."""
        out = RepoPlan(entry)
        try:
            source = source_for(entry, self.hub)
            snapshot = source.resolve(entry)
            out.sha = snapshot.sha
            if entry.ref_name is not None:
                key = layout.ref_key(self.target.prefix, entry.repo_id, entry.repo_type, entry.ref_name)
                out.ref_moves = self.target.get_bytes(key) != snapshot.sha.encode()
            existing = self.target.list(
                layout.snapshot_prefix(self.target.prefix, entry.repo_id, entry.repo_type, snapshot.sha)
            )
            reusable = self._published_files(entry, snapshot.sha)
            for f in snapshot.files:
                f, plan = self._decide(entry, source, snapshot, f, existing, reusable)
                out.files.append((f.path, plan))
        except Exception as exc:
            out.error = redact(str(exc))
        return out

    def _publish_snapshot(self, entry: ModelEntry, source: Any, snapshot: Snapshot, result: RepoResult) -> None:
        t, rt = self.target, entry.repo_type
        manifest_key = layout.manifest_key(t.prefix, entry.repo_id, rt, snapshot.sha)
        manifest = t.get_json(manifest_key)
        previous: dict[str, dict[str, Any]] = {}
        if manifest is not None and not valid_manifest(manifest):
            log.warning("%s: manifest %s is corrupt: republishing the snapshot", entry.display, manifest_key)
            manifest = None
        if manifest is not None:
            previous = {f["path"]: f for f in manifest["files"]}
            if all(f.path in previous for f in snapshot.files) and self._intact(entry, snapshot, previous):
                # Already published, and S3 still vouches for every object: only make sure the ref points here.
                result.files = len(snapshot.files)
                result.bytes_total = result.bytes_skipped = sum(previous[f.path]["size"] for f in snapshot.files)
                log.info("%s: snapshot %s already published", entry.display, snapshot.sha[:12])
                self._write_ref(entry, snapshot.sha)
                return

        if not snapshot.files:
            raise HubError(f"{entry.display}: no files matched at {snapshot.sha[:12]}; check include=/exclude=")
        snap_prefix = layout.snapshot_prefix(t.prefix, entry.repo_id, rt, snapshot.sha)
        existing = t.list(snap_prefix)
        reusable = self._published_files(entry, snapshot.sha)
        result.files = len(snapshot.files)
        self.progress.add_total(sum(f.size or 0 for f in snapshot.files), result.files)
        log.info("%s: publishing %s (%s)", entry.display, snapshot.sha[:12], plural(result.files, "file"))

        def one(file: RepoFile) -> dict[str, Any]:
            return self._publish_file(entry, source, snapshot, file, existing, reusable, result)

        with ThreadPoolExecutor(self.workers, thread_name_prefix="publish") as pool:
            published = list(pool.map(one, snapshot.files))
        result.bytes_total = sum(f["size"] for f in published)
        # Another entry for the same commit (other include/exclude) may have published more files: keep them listed.
        mine = {f["path"] for f in published}
        published += [{**f, "lfs": f["size"] >= LFS_THRESHOLD} for p, f in previous.items() if p not in mine]

        t.put_json(layout.tree_key(t.prefix, entry.repo_id, rt, snapshot.sha), tree_listing(published))
        t.put_json(
            manifest_key,
            {
                "complete": True,
                "repo": entry.repo_id,
                "type": rt,
                "requested_revision": entry.requested_revision,
                "sha": snapshot.sha,
                "source": str(entry.source) if entry.source else self.hub.shown_endpoint,
                "files": [
                    {k: f[k] for k in ("path", "size", "sha256", "blob_id", "s3_checksum") if f.get(k) is not None}
                    for f in published
                ],
                "published_at": now_iso(),
                "hf_cache_version": __version__,
            },
        )
        self._write_ref(entry, snapshot.sha)

    def _intact(self, entry: ModelEntry, snapshot: Snapshot, previous: dict[str, dict[str, Any]]) -> bool:
        """S3 still vouches (its checksum, not our metadata) for every object the manifest lists for this snapshot.

        One HEAD per file: an object overwritten after publish is found on the next run and fetched again, instead
        of being left in place or copied into the next commit.
        """
        t = self.target

        def ok(f: RepoFile) -> bool:
            rec = previous[f.path]
            key = layout.snapshot_key(t.prefix, entry.repo_id, entry.repo_type, snapshot.sha, f.path)
            obj = t.head(key)
            good = obj is not None and obj.size == rec["size"] and vouched(obj, rec["sha256"], rec.get("s3_checksum"))
            if not good:
                log.warning("%s: S3 cannot vouch for %s any more: publishing it again", entry.display, f.path)
            return good

        with ThreadPoolExecutor(self.workers * 2, thread_name_prefix="check") as pool:
            return all(list(pool.map(ok, snapshot.files)))

    def _decide(
        self,
        entry: ModelEntry,
        source: Any,
        snapshot: Snapshot,
        file: RepoFile,
        existing: dict[str, int],
        reusable: dict[str, dict[str, Any]],
    ) -> tuple[RepoFile, FilePlan]:
        t = self.target
        key = layout.snapshot_key(t.prefix, entry.repo_id, entry.repo_type, snapshot.sha, file.path)
        if isinstance(source, HubSource) and (file.size is None or (file.sha256 is None and file.blob_id is None)):
            file = source.head(entry, snapshot, file)
        at_key = t.head(key) if key in existing else None
        known = reusable.get(file.sha256) if file.sha256 else None
        candidate = None
        if known is not None and file.size in (None, known["size"]):
            obj = t.head(known["key"])
            if obj is not None:
                candidate = Candidate(obj, file.sha256 or "", known.get("s3_checksum"), known["blob_id"])
        return file, decide(file, at_key, candidate)

    def _publish_file(
        self,
        entry: ModelEntry,
        source: Any,
        snapshot: Snapshot,
        file: RepoFile,
        existing: dict[str, int],
        reusable: dict[str, dict[str, Any]],
        result: RepoResult,
    ) -> dict[str, Any]:
        t = self.target
        key = layout.snapshot_key(t.prefix, entry.repo_id, entry.repo_type, snapshot.sha, file.path)
        local_source = isinstance(source, LocalSource)
        file, plan = self._decide(entry, source, snapshot, file, existing, reusable)
        if plan.reason:
            log.warning("%s: %s", entry.display, plan.reason)
        if plan.action is Action.SKIP:
            assert plan.size is not None and plan.sha256 and plan.blob_id
            with self._lock:
                result.bytes_skipped += plan.size
            self.progress.advance(plan.size, 1)
            return self._record(file, plan.size, plan.sha256, plan.blob_id, local_source, plan.s3_checksum)
        if plan.action is Action.COPY:
            # The same bytes, vouched for by S3's checksum, are already published in another snapshot of this repo:
            # a server-side copy, no download and no upload. A new commit that changes one json re-sends nothing else.
            assert plan.source_key and plan.size is not None and plan.sha256 and plan.blob_id
            meta = {"sha256": plan.sha256, "blob-id": plan.blob_id, "s3-checksum": plan.s3_checksum or ""}
            server_copy(t, plan.source_key, key, plan.size, meta)
            head = t.head(key)
            if head is None or head.size != plan.size or not same_checksum(head.checksum, plan.s3_checksum):
                raise StorageError(f"{entry.display}: copy of {file.path} did not land intact in S3")
            with self._lock:
                result.bytes_copied += plan.size
                result.files_copied += 1
            self.progress.advance(plan.size, 1)
            return self._record(file, plan.size, plan.sha256, plan.blob_id, local_source, head.checksum)

        if local_source:
            path = source.fetch(entry, snapshot, file, self.scratch)
        else:  # bytes counted as they arrive: the progress moves during a long download too
            path = source.fetch(entry, snapshot, file, self.scratch, on_bytes=self.progress.received)
        try:
            if local_source:
                # Hashed while the folder was resolved; what S3 receives is checked against that hash below.
                assert file.size is not None and file.sha256 is not None and file.blob_id is not None
                digest = Digest(file.sha256, file.blob_id, file.size, file.s3_checksum or "")
            else:
                digest = verify_download(file, path, entry.display)
            sha256, size = digest.sha256, digest.size
            blob_id = digest.blob_id or lfs_blob_id(sha256, size)
            t.client.upload_file(
                str(path),
                t.bucket,
                key,
                ExtraArgs={
                    "Metadata": {"sha256": sha256, "blob-id": blob_id, "s3-checksum": digest.s3_checksum},
                    "ChecksumAlgorithm": "SHA256",
                },
                Config=self.transfer_config(size),
                Callback=self.progress.advance,  # bytes as they move: a bar that moves during one long upload
            )
        finally:
            if not local_source:
                path.unlink(missing_ok=True)
        head = t.head(key)
        if head is None or head.size != size or head.meta.get("sha256") != sha256:
            raise StorageError(f"{entry.display}: {file.path} did not land intact in S3 (size/metadata mismatch)")
        if head.checksum is None:
            raise StorageError(
                f"{entry.display}: the S3 endpoint kept no SHA-256 checksum for {file.path}; refresh needs S3's"
                " additional checksums (ChecksumAlgorithm=SHA256: AWS S3, MinIO, moto) to vouch for published bytes"
            )
        if not same_checksum(head.checksum, digest.s3_checksum):
            # S3 hashed what it received: the bytes uploaded are not the bytes hashed (a local file rewritten
            # during the run, or bytes changed on the way).
            raise IntegrityError(
                f"{entry.display}: {file.path} changed while it was being published (S3's checksum of what it"
                " received does not match the hash taken before); run refresh again once it is stable"
                if local_source
                else f"{entry.display}: {file.path} did not land intact in S3 (S3's checksum does not match)"
            )
        with self._lock:
            result.bytes_uploaded += size
            result.files_uploaded += 1
        self.progress.advance(0, 1)  # its bytes were counted as they were sent
        return self._record(file, size, sha256, blob_id, local_source, head.checksum)

    def _published_files(self, entry: ModelEntry, sha: str) -> dict[str, dict[str, Any]]:
        """sha256 -> a file of another published snapshot of this repo, as its manifest recorded it."""
        t = self.target
        folder = layout.repo_folder_name(entry.repo_id, entry.repo_type)
        found: dict[str, dict[str, Any]] = {}
        for key in t.list(layout.join(t.prefix, layout.META_DIR, "manifests", folder)):
            manifest = t.get_json(key)
            if not valid_manifest(manifest) or manifest.get("sha") == sha:
                continue
            for f in manifest["files"]:
                src = layout.snapshot_key(t.prefix, entry.repo_id, entry.repo_type, manifest["sha"], f["path"])
                found.setdefault(
                    f["sha256"],
                    {"key": src, "size": f["size"], "blob_id": f["blob_id"], "s3_checksum": f.get("s3_checksum")},
                )
        return found

    @staticmethod
    def _record(
        file: RepoFile, size: int, sha256: str, blob_id: str, local: bool, s3_checksum: str | None
    ) -> dict[str, Any]:
        """One file's line in the manifest and tree listing.

        Hub files are LFS files when the Hub gave an LFS sha256, and their blob id is then the Hub's (that of the
        LFS pointer); local files count as LFS from LFS_THRESHOLD up, as a git-lfs repo would store them.
        """
        lfs = (
            size >= LFS_THRESHOLD
            if local or (file.sha256 is None and file.blob_id is None)
            else file.sha256 is not None
        )
        if lfs:
            blob_id = file.blob_id if file.blob_id and not local else lfs_blob_id(sha256, size)
        return {
            "path": file.path,
            "size": size,
            "sha256": sha256,
            "blob_id": blob_id,
            "lfs": lfs,
            "s3_checksum": s3_checksum,
        }

    def _write_ref(self, entry: ModelEntry, sha: str) -> None:
        ref = entry.ref_name
        if ref is None:
            return
        key = layout.ref_key(self.target.prefix, entry.repo_id, entry.repo_type, ref)
        current = self.target.get_bytes(key)
        if current == sha.encode():
            return
        # The bare 40-char sha, no newline: huggingface_hub reads refs with f.read().
        self.target.put_bytes(key, sha.encode(), "text/plain")
        log.info("%s: refs/%s -> %s", entry.display, ref, sha[:12])


def server_copy(t: Target, src: str, dst: str, size: int, metadata: dict[str, str]) -> None:
    """Copy ``src`` to ``dst`` inside the bucket with our metadata and a fresh S3 SHA-256 checksum.

    Done with plain S3 calls, not s3transfer: s3transfer's multipart copy drops the object's metadata in some
    versions (0.10), so the result would depend on the installed version. Below the multipart threshold one
    CopyObject; above it UploadPartCopy of ``part_size_for(size)`` ranges, so the checksum S3 computes is the
    same multipart checksum the source has. A failed multipart copy is aborted, not left behind.
    """
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

    def copy_part(r: tuple[int, int, int]) -> dict[str, Any]:
        number, first, last = r
        out = c.upload_part_copy(
            Bucket=bucket,
            Key=dst,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": src},
            CopySourceRange=f"bytes={first}-{last}",
        )["CopyPartResult"]
        done = {"PartNumber": number, "ETag": out["ETag"]}
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


def make_scratch(base: str | None) -> Path:
    root = Path(base) if base else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="hf-cache-refresh-", dir=root))


def remove_scratch(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
