"""Where a repo's files come from: the Hub (or a Hub-compatible server), or a local folder.

A source resolves a requested revision to an immutable commit and lists its files with whatever checksums it
can vouch for; publish verifies every downloaded byte against them. Independent Hub-compatible servers may omit
sizes or LFS hashes: then the file's HEAD (size, ETag) is the fallback, and nothing here crashes on absent fields.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from cache.errors import GatedRepoError, HubError, IntegrityError
from cache.layout import SHA_RE
from cache.logs import redact
from cache.modelsfile import ModelEntry

CHUNK = 8 * 1024 * 1024
LFS_THRESHOLD = 10 * 1024 * 1024  # files at least this big are described (and hashed) as LFS files
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n"


@dataclass(frozen=True)
class RepoFile:
    """One file of a snapshot with the checksums its source gave (None where the source gave none)."""

    path: str
    size: int | None = None
    sha256: str | None = None  # the Hub's LFS sha256
    blob_id: str | None = None  # the git blob id (sha1 of "blob <len>\\0" + bytes, or of the LFS pointer)


@dataclass(frozen=True)
class Snapshot:
    repo_id: str
    repo_type: str
    sha: str
    files: tuple[RepoFile, ...]


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_blob_id(sha256: str, size: int) -> str:
    """The blob id the Hub reports for an LFS file: the git blob id of its pointer file."""
    return git_blob_id(LFS_POINTER.format(sha=sha256, size=size).encode())


def hash_file(path: Path, blob_id: bool = True) -> tuple[str, str | None, int]:
    """(sha256, git blob id, size) of a local file, in one pass.

    The git blob id is only worth its second hash for files stored in git itself; an LFS-sized file's blob id is
    derived from its sha256 (``lfs_blob_id``), so ``blob_id=False`` skips it.
    """
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size) if blob_id else None
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest() if sha1 is not None else None, size


def safe_repo_path(path: str) -> str:
    """Refuse names that would escape the snapshot folder (``..``, absolute paths, empty segments)."""
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        raise HubError(f"refusing unsafe file name {path!r} from the server")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise HubError(f"refusing unsafe file name {path!r} from the server")
    return str(PurePosixPath(path))


def verify_download(file: RepoFile, local: Path, repo: str) -> tuple[str, str, int]:
    """Hash a downloaded file and compare with every checksum the source gave. Returns (sha256, blob_id, size)."""
    sha256, blob_id, size = hash_file(local)
    assert blob_id is not None
    if file.size is not None and file.size != size:
        raise IntegrityError(f"{repo}: {file.path} is {size} bytes, the source said {file.size}")
    if file.sha256 is not None and file.sha256 != sha256:
        raise IntegrityError(f"{repo}: {file.path} sha256 {sha256} does not match the source's {file.sha256}")
    if file.blob_id is not None and file.sha256 is None and file.blob_id != blob_id:
        raise IntegrityError(f"{repo}: {file.path} git blob id {blob_id} does not match the source's {file.blob_id}")
    return sha256, blob_id, size


class Source(Protocol):
    """What publish needs from a source."""

    endpoint: str

    def resolve(self, entry: ModelEntry) -> Snapshot: ...

    def fetch(self, entry: ModelEntry, snapshot: Snapshot, file: RepoFile, dest_dir: Path) -> Path: ...


class LocalSource:
    """A local folder published as a repo (air-gapped clusters, fine-tuned checkpoints).

    Its commit is a deterministic digest of the folder's paths and contents, so an unchanged folder republishes
    nothing and a changed one becomes a new snapshot, with the ref moved atomically like any Hub repo.
    """

    endpoint = "file://"

    def resolve(self, entry: ModelEntry) -> Snapshot:
        assert entry.source is not None
        root = entry.source
        found: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in (".git", ".cache"))
            for name in sorted(filenames):
                full = Path(dirpath) / name
                if full.is_symlink() and not full.exists():
                    continue
                rel = full.relative_to(root).as_posix()
                if entry.wants(rel):
                    found.append((rel, full))

        def describe(item: tuple[str, Path]) -> RepoFile:
            rel, full = item
            small = full.stat().st_size < LFS_THRESHOLD
            sha256, blob_id, size = hash_file(full, blob_id=small)
            return RepoFile(path=rel, size=size, sha256=sha256, blob_id=blob_id or lfs_blob_id(sha256, size))

        # hashlib releases the GIL on large buffers: hashing several files at once uses every core.
        with ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="hash") as pool:
            files = list(pool.map(describe, found))
        digest = hashlib.sha1(f"hf-cache local source\0{entry.repo_type}\0".encode())
        files.sort(key=lambda f: f.path)
        for f in files:
            digest.update(f"{f.path}\0{f.size}\0{f.sha256}\0".encode())
        return Snapshot(entry.repo_id, entry.repo_type, digest.hexdigest(), tuple(files))

    def fetch(self, entry: ModelEntry, snapshot: Snapshot, file: RepoFile, dest_dir: Path) -> Path:
        """Local files need no download: publish reads them in place (no scratch disk used)."""
        assert entry.source is not None
        return entry.source / file.path


class HubSource:
    """The Hugging Face Hub or a Hub-compatible server, through huggingface_hub (``HF_ENDPOINT``, ``HF_TOKEN``)."""

    def __init__(self, endpoint: str | None = None, token: str | None = None):
        # huggingface_hub is imported only when a Hub repo is actually resolved: a run of local sources (and the
        # CronJob's start-up) does not pay its import time. HF_ENDPOINT is read as huggingface_hub reads it.
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        self._token = token
        self._token_read = token is not None

    @property
    def token(self) -> str | None:
        """HF_TOKEN / HF_TOKEN_PATH, as huggingface_hub reads them (looked up once, on first use)."""
        if not self._token_read:
            from huggingface_hub import get_token

            self._token = get_token() or None
            self._token_read = True
        return self._token

    def _api(self):
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token if self.token else False)

    def _translate(self, entry: ModelEntry, exc: Exception) -> Exception:
        from huggingface_hub.errors import (
            GatedRepoError as HfGated,
        )
        from huggingface_hub.errors import (
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        repo = entry.display
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(exc, HfGated) or status in (401, 403):
            how = "the token was refused: check HF_TOKEN has access" if self.token else "set HF_TOKEN"
            return GatedRepoError(f"{repo}: the repo is gated or private; {how} (request access on the Hub first)")
        if isinstance(exc, RevisionNotFoundError):
            return HubError(f"{repo}: revision {entry.requested_revision!r} not found; fix it in models.txt")
        if isinstance(exc, RepositoryNotFoundError):
            return HubError(f"{repo}: repository not found at {self.endpoint}; check the id (or HF_TOKEN if private)")
        if isinstance(exc, HfHubHTTPError):
            return HubError(f"{repo}: the Hub answered {status}: {redact(str(exc)).splitlines()[0]}")
        return HubError(f"{repo}: cannot reach {self.endpoint}: {redact(str(exc)).splitlines()[0]}")

    def resolve(self, entry: ModelEntry) -> Snapshot:
        api = self._api()
        try:
            info = api.repo_info(
                entry.repo_id, repo_type=entry.repo_type, revision=entry.requested_revision, files_metadata=True
            )
        except Exception as exc:  # huggingface_hub raises many types; all become one of ours
            raise self._translate(entry, exc) from exc
        sha = getattr(info, "sha", None)
        if not sha or not SHA_RE.match(sha):
            raise HubError(f"{entry.display}: the server gave no commit sha for {entry.requested_revision!r}")
        files: list[RepoFile] = []
        for sib in info.siblings or []:
            path = safe_repo_path(sib.rfilename)
            if not entry.wants(path):
                continue
            lfs = getattr(sib, "lfs", None)
            sha256 = getattr(lfs, "sha256", None) if lfs else None
            size = getattr(sib, "size", None)
            if size is None and lfs is not None:
                size = getattr(lfs, "size", None)
            files.append(RepoFile(path=path, size=size, sha256=sha256, blob_id=getattr(sib, "blob_id", None)))
        files.sort(key=lambda f: f.path)
        return Snapshot(entry.repo_id, entry.repo_type, sha, tuple(files))

    def head(self, entry: ModelEntry, snapshot: Snapshot, file: RepoFile) -> RepoFile:
        """Fill in size and checksum from the file's HEAD when the listing gave none (independent servers)."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        url = hf_hub_url(
            entry.repo_id, file.path, repo_type=entry.repo_type, revision=snapshot.sha, endpoint=self.endpoint
        )
        try:
            meta = get_hf_file_metadata(url, token=self.token if self.token else False)
        except Exception as exc:
            raise self._translate(entry, exc) from exc
        etag = (meta.etag or "").strip('"').removeprefix("W/").strip('"').lower()
        sha256 = file.sha256 or (etag if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) else None)
        blob_id = file.blob_id or (etag if SHA_RE.match(etag) else None)
        return RepoFile(file.path, file.size if file.size is not None else meta.size, sha256, blob_id)

    def fetch(self, entry: ModelEntry, snapshot: Snapshot, file: RepoFile, dest_dir: Path) -> Path:
        """Download one file into ``dest_dir`` (scratch: one file per worker at a time bounds the disk)."""
        from huggingface_hub import hf_hub_download

        work = Path(tempfile.mkdtemp(prefix="dl-", dir=dest_dir))
        try:
            path = hf_hub_download(
                entry.repo_id,
                file.path,
                repo_type=entry.repo_type,
                revision=snapshot.sha,
                local_dir=work,
                endpoint=self.endpoint,
                token=self.token if self.token else False,
            )
        except Exception as exc:
            shutil.rmtree(work, ignore_errors=True)
            raise self._translate(entry, exc) from exc
        final = dest_dir / (work.name + ".part")
        os.replace(path, final)
        shutil.rmtree(work, ignore_errors=True)
        return final


def source_for(entry: ModelEntry, hub: HubSource) -> Source:
    return LocalSource() if entry.source is not None else hub
