"""Publish one repo's snapshot to S3: upload and verify every file, then the tree and manifest, then the ref.

The ref is the single write that makes a snapshot visible to readers, and it is written last: a refresh killed at
any moment leaves every ref pointing at a snapshot that was complete when the ref was written. Files already
published with the same checksum are skipped, so an unchanged repo costs a manifest read and a ref read.
"""

from __future__ import annotations

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

from cache import __version__, layout
from cache.errors import HfCacheError, HubError, IntegrityError, StorageError
from cache.logs import redact
from cache.modelsfile import ModelEntry
from cache.progress import Progress
from cache.refresh.source import (
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
        data = self.get_bytes(key)
        return None if data is None else json.loads(data)

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

    def head_meta(self, key: str) -> dict[str, str]:
        return self.client.head_object(Bucket=self.bucket, Key=key).get("Metadata", {})


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
        multipart_chunk: int = 64 * MiB,
    ):
        self.target = target
        self.hub = hub
        self.scratch = scratch
        self.workers = max(1, workers)
        self.progress = progress or Progress("refresh", tty=False)
        self._lock = threading.Lock()
        self.transfer = TransferConfig(
            # Like rclone's upload cutoff: below it one streamed PUT beats assembling parts (server-side copies).
            multipart_threshold=200 * MiB,
            multipart_chunksize=multipart_chunk,
            max_concurrency=4,
            use_threads=True,
        )

    # -- one repo --------------------------------------------------------------------------------------------
    def publish(self, entry: ModelEntry) -> RepoResult:
        result = RepoResult(entry)
        try:
            source = source_for(entry, self.hub)
            snapshot = source.resolve(entry)
            result.sha = snapshot.sha
            self._publish_snapshot(entry, source, snapshot, result)
            result.state = "ok"
        except HfCacheError as exc:
            result.state, result.error = "failed", redact(str(exc))
            log.error("%s: failed: %s", entry.display, result.error)
        except ClientError as exc:
            result.state = "failed"
            result.error = redact(f"{entry.display}: S3 refused a request: {exc}")
            log.error("%s", result.error)
        except OSError as exc:
            result.state, result.error = "failed", redact(f"{entry.display}: {exc}")
            log.error("%s", result.error)
        result.ended = now_iso()
        return result

    def _publish_snapshot(self, entry: ModelEntry, source: Any, snapshot: Snapshot, result: RepoResult) -> None:
        t, rt = self.target, entry.repo_type
        manifest_key = layout.manifest_key(t.prefix, entry.repo_id, rt, snapshot.sha)
        manifest = t.get_json(manifest_key)
        previous: dict[str, dict[str, Any]] = {}
        if manifest is not None and manifest.get("complete"):
            previous = {f["path"]: f for f in manifest["files"]}
            if all(f.path in previous for f in snapshot.files):
                # Already published and verified: nothing to upload, only make sure the ref points here.
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
        log.info("%s: publishing %s (%d files)", entry.display, snapshot.sha[:12], result.files)

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
                "source": str(entry.source) if entry.source else self.hub.endpoint,
                "files": [{k: f[k] for k in ("path", "size", "sha256", "blob_id")} for f in published],
                "published_at": now_iso(),
                "hf_cache_version": __version__,
            },
        )
        self._write_ref(entry, snapshot.sha)

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
        if isinstance(source, HubSource) and (file.size is None or (file.sha256 is None and file.blob_id is None)):
            file = source.head(entry, snapshot, file)
        if key in existing and (file.size is None or existing[key] == file.size):
            meta = t.head_meta(key)
            same = (file.sha256 and meta.get("sha256") == file.sha256) or (
                file.sha256 is None and file.blob_id and meta.get("blob-id") == file.blob_id
            )
            if same and meta.get("sha256") and meta.get("blob-id"):
                with self._lock:
                    result.bytes_skipped += existing[key]
                self.progress.advance(existing[key], 1)
                return self._record(
                    file, existing[key], meta["sha256"], meta["blob-id"], isinstance(source, LocalSource)
                )

        local_source = isinstance(source, LocalSource)
        known = reusable.get(file.sha256) if file.sha256 else None
        if known is not None and file.size in (None, known["size"]):
            # The same bytes are already published in another snapshot of this repo (verified then): a server-side
            # copy, no download and no upload. A new commit that changes one json re-sends nothing else.
            t.client.copy({"Bucket": t.bucket, "Key": known["key"]}, t.bucket, key, Config=self.transfer)
            head = t.client.head_object(Bucket=t.bucket, Key=key)
            meta = head.get("Metadata", {})
            if head["ContentLength"] != known["size"] or meta.get("sha256") != file.sha256:
                raise StorageError(f"{entry.display}: copy of {file.path} did not land intact in S3")
            with self._lock:
                result.bytes_copied += known["size"]
                result.files_copied += 1
            self.progress.advance(known["size"], 1)
            return self._record(file, known["size"], file.sha256, meta.get("blob-id") or known["blob_id"], local_source)

        path = source.fetch(entry, snapshot, file, self.scratch)
        try:
            if local_source:
                # Hashed while the folder was resolved; re-hashing would read every byte a second time.
                assert file.size is not None and file.sha256 is not None and file.blob_id is not None
                sha256, blob_id, size = file.sha256, file.blob_id, file.size
                if path.stat().st_size != size:
                    raise IntegrityError(f"{entry.display}: {file.path} changed while it was being published")
            else:
                sha256, blob_id, size = verify_download(file, path, entry.display)
            t.client.upload_file(
                str(path),
                t.bucket,
                key,
                ExtraArgs={"Metadata": {"sha256": sha256, "blob-id": blob_id}},
                Config=self.transfer,
            )
        finally:
            if not local_source:
                path.unlink(missing_ok=True)
        head = t.client.head_object(Bucket=t.bucket, Key=key)
        if head["ContentLength"] != size or head.get("Metadata", {}).get("sha256") != sha256:
            raise StorageError(f"{entry.display}: {file.path} did not land intact in S3 (size/metadata mismatch)")
        with self._lock:
            result.bytes_uploaded += size
            result.files_uploaded += 1
        self.progress.advance(size, 1)
        return self._record(file, size, sha256, blob_id, local_source)

    def _published_files(self, entry: ModelEntry, sha: str) -> dict[str, dict[str, Any]]:
        """sha256 -> a verified object of another published snapshot of this repo (from their manifests)."""
        t = self.target
        folder = layout.repo_folder_name(entry.repo_id, entry.repo_type)
        found: dict[str, dict[str, Any]] = {}
        for key in t.list(layout.join(t.prefix, layout.META_DIR, "manifests", folder)):
            manifest = t.get_json(key)
            if not manifest or not manifest.get("complete") or manifest.get("sha") == sha:
                continue
            for f in manifest["files"]:
                src = layout.snapshot_key(t.prefix, entry.repo_id, entry.repo_type, manifest["sha"], f["path"])
                found.setdefault(f["sha256"], {"key": src, "size": f["size"], "blob_id": f["blob_id"]})
        return found

    @staticmethod
    def _record(file: RepoFile, size: int, sha256: str, blob_id: str, local: bool) -> dict[str, Any]:
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
        return {"path": file.path, "size": size, "sha256": sha256, "blob_id": blob_id, "lfs": lfs}

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


def make_scratch(base: str | None) -> Path:
    root = Path(base) if base else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="hf-cache-refresh-", dir=root))


def remove_scratch(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
