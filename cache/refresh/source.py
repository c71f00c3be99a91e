"""Where a repo's files come from: the Hub (or a Hub-compatible server), or a local folder.

A source resolves a requested revision to an immutable commit and lists its files with whatever checksums it
can vouch for; publish verifies every fetched byte against them (plan.fetch_problem), whatever the source.
Independent Hub-compatible servers may omit sizes or LFS hashes: then the file's HEAD (size, ETag) is the
fallback, and nothing here crashes on absent fields.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from hf_cache import settings
from hf_cache.errors import ConfigError, GatedRepoError, HubError, IntegrityError
from hf_cache.layout import SHA_RE
from hf_cache.logs import redact, redact_url
from hf_cache.modelsfile import ModelEntry
from hf_cache.refresh.checksums import ChangedWhileHashing, Digest, hash_fd
from hf_cache.units import MiB

if TYPE_CHECKING:  # imported where used: huggingface_hub is slow to import and most commands never need it
    from huggingface_hub import HfApi

LFS_THRESHOLD = 10 * MiB  # files at least this big are described (and hashed) as LFS files
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n"


@dataclass(frozen=True)
class RepoFile:
    """One file of a snapshot with the checksums its source gave (None where the source gave none)."""

    path: str
    size: int | None = None
    sha256: str | None = None  # the Hub's LFS sha256
    blob_id: str | None = None  # the git blob id (sha1 of "blob <len>\\0" + bytes, or of the LFS pointer)
    s3_checksum: str | None = None  # S3's SHA-256 checksum of these bytes as publish uploads them (when we hashed them)
    lfs: bool | None = None  # stored as an LFS file at the source; None: the source does not say (judged by size)


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


def safe_repo_path(path: str, origin: str = "the server") -> str:
    """Refuse names that would escape the snapshot folder (``..``, absolute paths, empty segments) or that S3 and
    the mount cannot carry (not UTF-8)."""
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        raise HubError(f"refusing unsafe file name {path!r} from {origin}")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise HubError(f"refusing unsafe file name {path!r} from {origin}")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise HubError(
            f"refusing file name {path.encode('utf-8', 'surrogateescape')!r} from {origin}: it is not UTF-8; rename it"
        ) from None
    return str(PurePosixPath(path))


@dataclass(frozen=True)
class Fetched:
    """One file's bytes, not yet verified: publish checks them against the listing before it uploads them.

    ``digest``: a hash the source already took of this very file with ``checksums.hash_fd`` (a local folder hashes
    every file to name its commit), or None. Publish reuses it instead of reading the file again only while the
    file's stamp (inode, size, change times) is the one hashed; otherwise it hashes the file itself.
    """

    path: Path
    digest: Digest | None
    in_place: bool  # the source's own file, read where it is: never deleted, and it may change under us

    def release(self) -> None:
        """Give back the scratch space (a download); a file read in place is left alone."""
        if not self.in_place:
            self.path.unlink(missing_ok=True)


class Source(Protocol):
    """What publish needs from a source; publish never asks which source it has.

    A new source (ModelScope, another mirror) is one class implementing these four methods and one branch in
    ``source_for``: verification of every fetched file against the listing, the S3 layout, the lease and the
    ref-last atomicity come with publish.
    """

    def resolve(self, entry: ModelEntry) -> Snapshot:
        """The commit ``entry`` names now, with every file it wants and whatever checksums the source vouches for."""
        ...

    def complete(self, entry: ModelEntry, snapshot: Snapshot, file: RepoFile) -> RepoFile:
        """``file`` with size and a checksum filled in where the listing gave none (publish needs both to decide)."""
        ...

    def fetch(
        self,
        entry: ModelEntry,
        snapshot: Snapshot,
        file: RepoFile,
        dest_dir: Path,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Fetched:
        """The file's bytes (publish verifies them: a source need not); a download goes to ``dest_dir`` (bounded
        scratch) and reports its bytes to ``on_bytes`` as they arrive."""
        ...

    def origin(self, entry: ModelEntry) -> str:
        """Where ``entry`` comes from, as the manifest records it (no credentials)."""
        ...


class LocalSource:
    """A local folder published as a repo (air-gapped clusters, fine-tuned checkpoints).

    Its commit is a deterministic digest of the folder's paths and contents, so an unchanged folder republishes
    nothing and a changed one becomes a new snapshot, with the ref moved atomically like any Hub repo.

    Every job pod can read what is published, so only regular files inside the folder are: a link leaving it (to
    ``/etc/shadow``, to a root-only file) is refused with its path, and so are FIFOs, sockets and devices, which are
    never opened (opening a FIFO blocks; ``/dev/zero`` never ends). Files are opened with ``O_NOFOLLOW`` and checked
    with ``fstat`` on the open descriptor, so a file swapped for a link or a FIFO after the walk is refused too.
    """

    def __init__(self) -> None:
        self._hashed: dict[Path, Digest] = {}  # real path -> its hash at resolve (stamped): fetch hands it to publish

    def resolve(self, entry: ModelEntry) -> Snapshot:
        assert entry.source is not None
        root = Path(os.path.realpath(entry.source))
        if root == Path(root.anchor):
            raise ConfigError(
                f"{entry.display}: source={entry.source} is the root filesystem; point source= at the model's folder"
            )
        found: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(root):
            kept = []
            for d in sorted(dirnames):
                if d in (".git", ".cache"):
                    continue
                full = Path(dirpath) / d
                if full.is_symlink():
                    # Not descended (os.walk does not follow links); one that leaves the folder is refused, one that
                    # stays inside would publish the same files twice under two names and is skipped.
                    self._inside(entry, root, full)
                    continue
                kept.append(d)
            dirnames[:] = kept
            for name in sorted(filenames):
                full = Path(dirpath) / name
                rel = safe_repo_path(full.relative_to(root).as_posix(), f"source folder {root}")
                if not entry.wants(rel):
                    continue
                real = self._inside(entry, root, full)
                if real is None:
                    continue  # a dangling link: nothing to publish
                found.append((rel, real))

        def describe(item: tuple[str, Path]) -> RepoFile:
            rel, real = item
            digest = self._hash(entry, rel, real)
            self._hashed[real] = digest
            assert digest.blob_id is not None or digest.size >= LFS_THRESHOLD
            return RepoFile(
                path=rel,
                size=digest.size,
                sha256=digest.sha256,
                blob_id=digest.blob_id or lfs_blob_id(digest.sha256, digest.size),
                s3_checksum=digest.s3_checksum,
                lfs=digest.size >= LFS_THRESHOLD,  # as git-lfs would store it
            )

        # hashlib releases the GIL on large buffers: hashing several files at once uses every core.
        with ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="hash") as pool:
            files = list(pool.map(describe, found))
        digest = hashlib.sha1(f"hf-cache local source\0{entry.repo_type}\0".encode())
        files.sort(key=lambda f: f.path)
        for f in files:
            digest.update(f"{f.path}\0{f.size}\0{f.sha256}\0".encode())
        return Snapshot(entry.repo_id, entry.repo_type, digest.hexdigest(), tuple(files))

    @staticmethod
    def _inside(entry: ModelEntry, root: Path, full: Path) -> Path | None:
        """The real path of ``full`` if it stays inside ``root`` (None for a dangling link); refuse one that leaves."""
        real = Path(os.path.realpath(full))
        if full.is_symlink() and not os.path.lexists(real):
            return None
        if not real.is_relative_to(root):
            raise ConfigError(
                f"{entry.display}: {full} is a link to {real}, outside the source folder {root}; "
                "only files inside the folder are published: copy the file in or remove the link"
            )
        return real

    @staticmethod
    def open_regular(entry: ModelEntry, rel: str, real: Path) -> int:
        """Open a source file for reading without following a link and without blocking on a FIFO; refuse anything
        that is not a regular file."""
        what = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            raise IntegrityError(f"{entry.display}: {rel} disappeared while it was being published") from None
        if not stat.S_ISREG(st.st_mode):
            kind = what.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise ConfigError(
                f"{entry.display}: {real} is {kind}; only regular files are published: remove it or exclude= it"
            )
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"{entry.display}: {real} is not a regular file; only regular files are published")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _hash(self, entry: ModelEntry, rel: str, real: Path) -> Digest:
        fd = self.open_regular(entry, rel, real)
        try:
            small = os.fstat(fd).st_size < LFS_THRESHOLD
            return hash_fd(fd, blob_id=small)
        except ChangedWhileHashing as exc:
            raise IntegrityError(f"{entry.display}: {rel} changed while it was being hashed ({exc})") from None
        finally:
            os.close(fd)

    def complete(self, entry: ModelEntry, snapshot: Snapshot, file: RepoFile) -> RepoFile:
        """Nothing to fill in: every local file was hashed when the folder was resolved."""
        return file

    def fetch(
        self,
        entry: ModelEntry,
        snapshot: Snapshot,
        file: RepoFile,
        dest_dir: Path,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Fetched:
        """Local files need no download: publish reads them in place (no scratch disk used; the upload counts the
        bytes).

        The path is re-checked (a regular file, inside the folder) right before publish opens it. The hash taken at
        resolve goes with it: publish reuses it while the file is unchanged (no second read) and hashes again when it
        is not, and the bytes S3 keeps are checked against it, so a file rewritten in between is caught.
        """
        assert entry.source is not None
        assert file.size is not None and file.sha256 is not None and file.blob_id is not None
        root = Path(os.path.realpath(entry.source))
        real = self._inside(entry, root, root / file.path)
        if real is None:
            raise IntegrityError(f"{entry.display}: {file.path} disappeared while it was being published")
        os.close(self.open_regular(entry, file.path, real))
        return Fetched(real, self._hashed.get(real), in_place=True)

    def origin(self, entry: ModelEntry) -> str:
        return str(entry.source)


class HubSource:
    """The Hugging Face Hub or a Hub-compatible server, through huggingface_hub (``HF_ENDPOINT``, ``HF_TOKEN``)."""

    def __init__(self, endpoint: str | None = None, token: str | None = None):
        # huggingface_hub is imported only when a Hub repo is actually resolved: a run of local sources (and the
        # CronJob's start-up) does not pay its import time. HF_ENDPOINT is read as huggingface_hub reads it.
        self.endpoint = (endpoint or settings.env(settings.HF_ENDPOINT_ENV) or settings.HUB_ENDPOINT).rstrip("/")
        self._token = token
        self._token_read = token is not None

    @property
    def shown_endpoint(self) -> str:
        """The endpoint as it may be recorded or printed: without userinfo (``http://user:pass@mirror``)."""
        return redact_url(self.endpoint)

    @property
    def token(self) -> str | None:
        """HF_TOKEN / HF_TOKEN_PATH, as huggingface_hub reads them (looked up once, on first use)."""
        if not self._token_read:
            from huggingface_hub import get_token

            self._token = get_token() or None
            self._token_read = True
        return self._token

    def _api(self) -> HfApi:
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
            where = self.shown_endpoint
            return HubError(f"{repo}: repository not found at {where}; check the id (or HF_TOKEN if private)")
        if isinstance(exc, HfHubHTTPError):
            # The server's own message says why (quota, outage, a mirror's complaint); it may quote what we sent.
            said = (getattr(exc, "server_message", None) or "").strip().splitlines()
            detail = said[0] if said else str(exc).splitlines()[0]
            return HubError(f"{repo}: the Hub answered {status}: {redact(detail)}")
        return HubError(f"{repo}: cannot reach {self.shown_endpoint}: {redact(str(exc)).splitlines()[0]}")

    def resolve(self, entry: ModelEntry) -> Snapshot:
        api = self._api()
        try:
            info = api.repo_info(
                entry.repo_id, repo_type=entry.repo_type, revision=entry.requested_revision, files_metadata=True
            )
        except Exception as exc:  # huggingface_hub raises many types; all become one of ours
            raise self._translate(entry, exc) from exc
        from huggingface_hub import DatasetInfo, ModelInfo

        if not isinstance(info, ModelInfo | DatasetInfo):  # repo_info's type also covers spaces and kernels
            raise HubError(f"{entry.display}: the server described a {type(info).__name__}, not a model or dataset")
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
            blob_id = getattr(sib, "blob_id", None)
            files.append(RepoFile(path, size, sha256, blob_id, lfs=_hub_lfs(sha256, blob_id)))
        files.sort(key=lambda f: f.path)
        return Snapshot(entry.repo_id, entry.repo_type, sha, tuple(files))

    def origin(self, entry: ModelEntry) -> str:
        return self.shown_endpoint

    def complete(self, entry: ModelEntry, snapshot: Snapshot, file: RepoFile) -> RepoFile:
        """Fill in size and checksum from the file's HEAD when the listing gave none (independent servers)."""
        if file.size is not None and (file.sha256 is not None or file.blob_id is not None):
            return file
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
        size = file.size if file.size is not None else meta.size
        return RepoFile(file.path, size, sha256, blob_id, lfs=_hub_lfs(sha256, blob_id))

    def fetch(
        self,
        entry: ModelEntry,
        snapshot: Snapshot,
        file: RepoFile,
        dest_dir: Path,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Fetched:
        """Download one file into ``dest_dir`` (scratch: one file per worker at a time bounds the disk); publish
        hashes and verifies it (one pass) and deletes it after the upload or the refusal.

        ``on_bytes`` hears each chunk as it arrives (refresh's progress), through huggingface_hub's ``tqdm_class``
        hook: no bar of its own is drawn.
        """
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
                tqdm_class=counting_tqdm(on_bytes) if on_bytes is not None else None,
            )
        except Exception as exc:
            shutil.rmtree(work, ignore_errors=True)
            raise self._translate(entry, exc) from exc
        final = dest_dir / (work.name + ".part")
        os.replace(path, final)
        shutil.rmtree(work, ignore_errors=True)
        return Fetched(final, None, in_place=False)


def _hub_lfs(sha256: str | None, blob_id: str | None) -> bool | None:
    """The Hub gives an LFS sha256 for LFS files only; a server that gave no checksum at all leaves it open."""
    return None if sha256 is None and blob_id is None else sha256 is not None


def counting_tqdm(on_bytes: Callable[[int], None]) -> type:
    """A tqdm class that draws nothing and passes every ``update(n)`` to ``on_bytes``."""
    from tqdm import tqdm

    class _Counting(tqdm):  # type: ignore[type-arg]  # generic in its stubs only: tqdm[Any] fails at runtime
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if n:
                on_bytes(int(n))
            return None

    return _Counting


def source_for(entry: ModelEntry, hub: HubSource) -> Source:
    """The source of one models.txt entry: its ``source=`` folder, else the Hub (one branch per kind of source)."""
    return LocalSource() if entry.source is not None else hub
