"""Publish one repo's snapshot to S3: upload and verify every file, then the tree and manifest, then the ref.

The ref is the single write that makes a snapshot visible to readers, and it is written last: a refresh killed at
any moment leaves every ref pointing at a snapshot that was complete when the ref was written. Files already
published with the same checksum are skipped, so an unchanged repo costs a manifest read and a ref read.

This module is the sequence and the I/O only. What to do with each file and whether it landed are pure decisions
(plan.py); the bucket is store.py; where bytes come from is a ``Source`` (source.py); the manifest, tree listing and
status row are their own modules (manifest.py, hf_cache.treelisting, status.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from boto3.s3.transfer import TransferConfig

from hf_cache import __version__, layout, treelisting
from hf_cache.errors import HfCacheError, HubError, IntegrityError
from hf_cache.logs import redact
from hf_cache.modelsfile import ModelEntry
from hf_cache.progress import Progress, plural
from hf_cache.refresh.checksums import (
    MULTIPART_THRESHOLD,
    ChangedWhileHashing,
    Digest,
    FileStamp,
    hash_fd,
    part_size_for,
)
from hf_cache.refresh.manifest import PublishedFile, published_files
from hf_cache.refresh.plan import (
    Action,
    Candidate,
    FilePlan,
    Reusable,
    copy_problem,
    copy_source,
    decide,
    fetch_problem,
    needs_blob_id,
    reuse_hash,
    upload_problem,
    vouched,
)
from hf_cache.refresh.source import Fetched, HubSource, RepoFile, Snapshot, Source, lfs_blob_id, source_for
from hf_cache.refresh.status import RepoResult, RepoState, now_iso
from hf_cache.refresh.store import Target, server_copy
from hf_cache.s3errors import BOTO_ERRORS, s3_errors, translate

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class _Job:
    """One snapshot being published: what every file's step needs to know about the others."""

    entry: ModelEntry
    source: Source
    snapshot: Snapshot
    existing: dict[str, int]  # key -> size of the objects already under the snapshot's folder
    reusable: dict[str, Reusable]  # sha256 -> a file of another published snapshot of the repo

    def key(self, target: Target, path: str) -> str:
        return layout.snapshot_key(target.prefix, self.entry.repo_id, self.entry.repo_type, self.snapshot.sha, path)


def reason_only(entry: ModelEntry, message: str) -> str:
    """A failed repo's ``error``: why, without the repo's name. Errors raised below name the repo (they also reach
    users on their own, as verify's), but every row that shows ``error`` names the repo itself (the run summary's
    ``FAILED  org/x@main: <why>``, status.json's ``repo``, the log line): the name must appear once."""
    return message.removeprefix(f"{entry.display}: ")


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
        sources: Callable[[ModelEntry], Source] | None = None,
    ):
        """``sources`` picks each entry's source (default ``source_for``: its folder, else ``hub``)."""
        self.target = target
        self.hub = hub
        self.sources = sources or (lambda entry: source_for(entry, hub))
        self.scratch = scratch
        self.workers = max(1, workers)
        # no heartbeat of its own: nothing would stop it (the CLI passes its Progress and closes it)
        self.progress = progress or Progress("refresh", tty=False, interval=0)
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
            source = self.sources(entry)
            snapshot = source.resolve(entry)
            result.sha = snapshot.sha
            self._publish_snapshot(entry, source, snapshot, result)
            result.state = RepoState.OK
        except BOTO_ERRORS as exc:  # a call outside the store: decoded like every other S3 error
            result.state, result.error = RepoState.FAILED, redact(str(translate(exc, bucket=self.target.bucket)))
        except HfCacheError as exc:
            result.state, result.error = RepoState.FAILED, redact(str(exc))
        except OSError as exc:
            result.state, result.error = RepoState.FAILED, redact(f"{entry.display}: {exc}")
        except Exception as exc:  # one repo's failure, whatever its type, must not end the run (S3UploadFailedError)
            result.state, result.error = RepoState.FAILED, redact(f"{entry.display}: {type(exc).__name__}: {exc}")
            log.debug("%s: failed", entry.display, exc_info=True)
        if result.error is not None:
            result.error = reason_only(entry, result.error)
            log.error("%s: failed: %s", entry.display, result.error)
        result.ended = now_iso()
        return result

    def plan(self, entry: ModelEntry) -> RepoPlan:
        """Resolve an entry and decide every file as a run would, reading S3 and the source but writing nothing."""
        out = RepoPlan(entry)
        try:
            source = self.sources(entry)
            snapshot = source.resolve(entry)
            out.sha = snapshot.sha
            if entry.ref_name is not None:
                key = layout.ref_key(self.target.prefix, entry.repo_id, entry.repo_type, entry.ref_name)
                out.ref_moves = self.target.get_bytes(key) != snapshot.sha.encode()
            job = self._job(entry, source, snapshot)
            for f in snapshot.files:
                f, plan = self._decide(job, f)
                out.files.append((f.path, plan))
        except Exception as exc:
            out.error = reason_only(entry, redact(str(exc)))
        return out

    def _job(self, entry: ModelEntry, source: Source, snapshot: Snapshot) -> _Job:
        t = self.target
        existing = t.list(layout.snapshot_prefix(t.prefix, entry.repo_id, entry.repo_type, snapshot.sha))
        return _Job(entry, source, snapshot, existing, self._published_files(entry, snapshot.sha))

    def _publish_snapshot(self, entry: ModelEntry, source: Source, snapshot: Snapshot, result: RepoResult) -> None:
        t, rt = self.target, entry.repo_type
        manifest_key = layout.manifest_key(t.prefix, entry.repo_id, rt, snapshot.sha)
        manifest = t.get_json(manifest_key)
        previous = published_files(manifest) if manifest is not None else None
        if manifest is not None and previous is None:
            log.warning("%s: manifest %s is corrupt: republishing the snapshot", entry.display, manifest_key)
        if (
            previous is not None
            and all(f.path in previous for f in snapshot.files)
            and self._intact(entry, snapshot, previous)
        ):
            # Already published, and S3 still vouches for every object: only make sure the ref points here.
            result.files = len(snapshot.files)
            result.bytes_total = result.bytes_skipped = sum(previous[f.path].size for f in snapshot.files)
            log.info("%s: snapshot %s already published", entry.display, snapshot.sha[:12])
            self._write_ref(entry, snapshot.sha)
            return
        previous = previous or {}
        if not snapshot.files:
            raise HubError(f"{entry.display}: no files matched at {snapshot.sha[:12]}; check include=/exclude=")
        job = self._job(entry, source, snapshot)
        result.files = len(snapshot.files)
        self.progress.add_total(sum(f.size or 0 for f in snapshot.files), result.files)
        log.info("%s: publishing %s (%s)", entry.display, snapshot.sha[:12], plural(result.files, "file"))

        def one(file: RepoFile) -> PublishedFile:
            return self._publish_file(job, file, result)

        with ThreadPoolExecutor(self.workers, thread_name_prefix="publish") as pool:
            published = list(pool.map(one, snapshot.files))
        result.bytes_total = sum(f.size for f in published)
        # Another entry for the same commit (other include/exclude) may have published more files: keep them listed.
        mine = {f.path for f in published}
        published += [f for p, f in previous.items() if p not in mine]

        listing = treelisting.encode((f.path, f.tree_entry()) for f in published)
        t.put_json(layout.tree_key(t.prefix, entry.repo_id, rt, snapshot.sha), listing)
        t.put_json(
            manifest_key,
            {
                "complete": True,
                "repo": entry.repo_id,
                "type": rt,
                "requested_revision": entry.requested_revision,
                "sha": snapshot.sha,
                "source": source.origin(entry),
                "files": [f.to_manifest() for f in published],
                "published_at": now_iso(),
                "hf_cache_version": __version__,
            },
        )
        self._write_ref(entry, snapshot.sha)

    def _intact(self, entry: ModelEntry, snapshot: Snapshot, previous: dict[str, PublishedFile]) -> bool:
        """S3 still vouches (its checksum, not our metadata) for every object the manifest lists for this snapshot.

        One HEAD per file: an object overwritten after publish is found on the next run and fetched again, instead
        of being left in place or copied into the next commit.
        """
        t = self.target

        def ok(f: RepoFile) -> bool:
            rec = previous[f.path]
            key = layout.snapshot_key(t.prefix, entry.repo_id, entry.repo_type, snapshot.sha, f.path)
            obj = t.head(key)
            good = obj is not None and obj.size == rec.size and vouched(obj, rec.sha256, rec.s3_checksum)
            if not good:
                log.warning("%s: S3 cannot vouch for %s any more: publishing it again", entry.display, f.path)
            return good

        with ThreadPoolExecutor(self.workers * 2, thread_name_prefix="check") as pool:
            return all(list(pool.map(ok, snapshot.files)))

    def _decide(self, job: _Job, file: RepoFile) -> tuple[RepoFile, FilePlan]:
        """Gather what S3 says about the objects that could stand in for ``file`` (HEADs), then decide purely."""
        t = self.target
        file = job.source.complete(job.entry, job.snapshot, file)
        key = job.key(t, file.path)
        at_key = t.head(key) if key in job.existing else None
        known = copy_source(file, job.reusable)
        candidate = None
        if known is not None:
            obj = t.head(known.key)
            if obj is not None:
                candidate = Candidate(obj, known.sha256, known.s3_checksum, known.blob_id)
        return file, decide(file, at_key, candidate)

    def _publish_file(self, job: _Job, file: RepoFile, result: RepoResult) -> PublishedFile:
        """One file's way: decide (pure, plan.py), then do what the plan says; each step checks what S3 then holds."""
        file, plan = self._decide(job, file)
        if plan.reason:
            log.warning("%s: %s", job.entry.display, plan.reason)
        step = {Action.SKIP: self._leave, Action.COPY: self._copy, Action.FETCH: self._upload}[plan.action]
        return step(job, file, plan, result)

    def _leave(self, job: _Job, file: RepoFile, plan: FilePlan, result: RepoResult) -> PublishedFile:
        """S3 already vouches that the object at the file's key holds these bytes: nothing is sent."""
        assert plan.size is not None and plan.sha256 and plan.blob_id
        with self._lock:
            result.bytes_skipped += plan.size
        self.progress.advance(plan.size, 1)
        return PublishedFile.of(file, plan.size, plan.sha256, plan.blob_id, plan.s3_checksum)

    def _copy(self, job: _Job, file: RepoFile, plan: FilePlan, result: RepoResult) -> PublishedFile:
        """The same bytes, vouched for by S3's checksum, are already published in another snapshot of this repo: a
        server-side copy, no download and no upload. A new commit that changes one json re-sends nothing else."""
        t = self.target
        assert plan.source_key and plan.size is not None and plan.sha256 and plan.blob_id
        key = job.key(t, file.path)
        meta = {"sha256": plan.sha256, "blob-id": plan.blob_id, "s3-checksum": plan.s3_checksum or ""}
        server_copy(t, plan.source_key, key, plan.size, meta)
        head = t.head(key)
        if (problem := copy_problem(job.entry.display, file, plan, head)) is not None:
            raise problem
        assert head is not None
        with self._lock:
            result.bytes_copied += plan.size
            result.files_copied += 1
        self.progress.advance(plan.size, 1)
        return PublishedFile.of(file, plan.size, plan.sha256, plan.blob_id, head.checksum)

    def _upload(self, job: _Job, file: RepoFile, plan: FilePlan, result: RepoResult) -> PublishedFile:
        """Fetch the bytes from the source, verify them against the listing, upload them asking S3 for its SHA-256,
        and accept them only when S3's checksum is the one hashed before the upload."""
        t = self.target
        key = job.key(t, file.path)
        # bytes counted as they arrive: the progress moves during a long download too
        fetched = job.source.fetch(job.entry, job.snapshot, file, self.scratch, on_bytes=self.progress.received)
        try:
            digest = self._verified(job, file, fetched)
            blob_id = digest.blob_id or lfs_blob_id(digest.sha256, digest.size)
            with s3_errors(t.bucket, key, "upload to"):
                t.client.upload_file(
                    str(fetched.path),
                    t.bucket,
                    key,
                    ExtraArgs={
                        "Metadata": {"sha256": digest.sha256, "blob-id": blob_id, "s3-checksum": digest.s3_checksum},
                        "ChecksumAlgorithm": "SHA256",
                    },
                    Config=self.transfer_config(digest.size),
                    Callback=self.progress.advance,  # bytes as they move: a bar that moves during one long upload
                )
        finally:
            fetched.release()
        head = t.head(key)
        if (problem := upload_problem(job.entry.display, file, digest, head, fetched.in_place)) is not None:
            raise problem
        assert head is not None
        with self._lock:
            result.bytes_uploaded += digest.size
            result.files_uploaded += 1
        self.progress.advance(0, 1)  # its bytes were counted as they were sent
        return PublishedFile.of(file, digest.size, digest.sha256, blob_id, head.checksum)

    def _verified(self, job: _Job, file: RepoFile, fetched: Fetched) -> Digest:
        """The fetched bytes' hash, checked against the listing (plan.fetch_problem) before anything is uploaded.

        Whatever the source says: its bytes are hashed here, once, unless the source handed over a hash of this very
        file, unchanged since (``reuse_hash``: a local folder hashed at resolve is not read twice).
        """
        repo = job.entry.display
        try:
            fd = os.open(fetched.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise IntegrityError(f"{repo}: cannot open {file.path} as fetched ({exc.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise IntegrityError(f"{repo}: {file.path} as fetched is not a regular file: not published")
            if reuse_hash(file, fetched.digest, FileStamp.of(st)):
                assert fetched.digest is not None
                digest = fetched.digest
            else:
                os.set_blocking(fd, True)
                try:
                    digest = hash_fd(fd, blob_id=needs_blob_id(file))
                except ChangedWhileHashing as exc:
                    raise IntegrityError(f"{repo}: {file.path} changed while it was being hashed ({exc})") from None
        finally:
            os.close(fd)
        if (problem := fetch_problem(repo, file, digest, fetched.in_place)) is not None:
            raise problem
        return digest

    def _published_files(self, entry: ModelEntry, sha: str) -> dict[str, Reusable]:
        """sha256 -> a file of another published snapshot of this repo, as its manifest recorded it."""
        t = self.target
        folder = layout.repo_folder_name(entry.repo_id, entry.repo_type)
        found: dict[str, Reusable] = {}
        for key in t.list(layout.manifests_prefix(t.prefix, folder)):
            manifest = t.get_json(key)
            files = published_files(manifest)
            if manifest is None or files is None or manifest["sha"] == sha:  # None first, for mypy's sake
                continue
            for f in files.values():
                src = layout.snapshot_key(t.prefix, entry.repo_id, entry.repo_type, manifest["sha"], f.path)
                found.setdefault(f.sha256, Reusable(src, f.size, f.sha256, f.blob_id, f.s3_checksum))
        return found

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
        log.info("%s: %s -> %s", entry.display, layout.ref_path(ref), sha[:12])


def make_scratch(base: str | None) -> Path:
    root = Path(base) if base else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="hf-cache-refresh-", dir=root))


def remove_scratch(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
