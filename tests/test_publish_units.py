"""publish's parts, each on its own: the per-file steps (pure, plan.py), the manifest and tree-listing lines, the
status values, and the Source protocol (a third source, defined here, publishes through the real Publisher into
moto's S3 server with no change to publish). The end-to-end guarantees are in test_refresh*.py."""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hf_cache import treelisting
from hf_cache.errors import IntegrityError, S3NotFoundError, StorageError
from hf_cache.modelsfile import ModelEntry
from hf_cache.refresh.checksums import MULTIPART_THRESHOLD, Digest, FileStamp, b64_of_hex, hash_fd
from hf_cache.refresh.manifest import PublishedFile, published_files
from hf_cache.refresh.plan import (
    Action,
    FilePlan,
    ObjectState,
    Reusable,
    copy_problem,
    copy_source,
    fetch_problem,
    reuse_hash,
    upload_problem,
)
from hf_cache.refresh.publish import Publisher
from hf_cache.refresh.source import LFS_THRESHOLD, Fetched, HubSource, RepoFile, Snapshot, git_blob_id, lfs_blob_id
from hf_cache.refresh.status import (
    AD_HOC_RUNS_KEPT,
    RepoResult,
    RepoState,
    RunState,
    run_state,
    scheduled_run,
    with_ad_hoc_run,
)
from hf_cache.refresh.store import Target, server_copy
from tests.refresh_helpers import objects, read

if TYPE_CHECKING:
    from hf_cache.lab.s3server import S3Server

SHA = hashlib.sha256(b"x").hexdigest()
OTHER = hashlib.sha256(b"y").hexdigest()


# -- which published file could be copied -------------------------------------------------------------------------
def test_copy_source_needs_the_same_sha256_and_size() -> None:
    known = Reusable("p/old/a.bin", 5, SHA, "blob", None)
    reusable = {SHA: known}
    assert copy_source(RepoFile("a.bin", 5, SHA), reusable) is known
    assert copy_source(RepoFile("a.bin", None, SHA), reusable) is known  # the source gave no size: S3's HEAD judges
    assert copy_source(RepoFile("a.bin", 6, SHA), reusable) is None  # other size: other bytes
    assert copy_source(RepoFile("a.bin", 5, OTHER), reusable) is None
    assert copy_source(RepoFile("a.bin", 5, None, "blob"), reusable) is None  # no sha256 vouched for: never copied


# -- did it land --------------------------------------------------------------------------------------------------
def test_a_copy_counts_only_when_s3_reports_the_planned_size_and_checksum() -> None:
    f = RepoFile("a.bin", 5, SHA)
    plan = FilePlan(Action.COPY, 5, "p/old/a.bin", SHA, "blob", b64_of_hex(SHA))
    assert copy_problem("org/x@main", f, plan, ObjectState("k", 5, b64_of_hex(SHA), {})) is None
    for head in (None, ObjectState("k", 4, b64_of_hex(SHA), {}), ObjectState("k", 5, b64_of_hex(OTHER), {})):
        problem = copy_problem("org/x@main", f, plan, head)
        assert isinstance(problem, StorageError) and "copy of a.bin did not land intact" in str(problem)


def test_an_upload_counts_only_when_s3s_checksum_is_the_one_hashed() -> None:
    f = RepoFile("a.bin", 5, SHA)
    d = Digest(SHA, "blob", 5, b64_of_hex(SHA))
    good = ObjectState("k", 5, b64_of_hex(SHA), {"sha256": SHA})
    assert upload_problem("org/x@main", f, d, good, in_place=False) is None
    wrong_meta = ObjectState("k", 5, b64_of_hex(SHA), {"sha256": OTHER})
    for head in (None, ObjectState("k", 4, b64_of_hex(SHA), {"sha256": SHA}), wrong_meta):
        problem = upload_problem("org/x@main", f, d, head, in_place=False)
        assert isinstance(problem, StorageError) and "size/metadata mismatch" in str(problem)
    no_checksum = upload_problem("org/x@main", f, d, ObjectState("k", 5, None, {"sha256": SHA}), in_place=False)
    assert isinstance(no_checksum, StorageError) and "kept no SHA-256 checksum" in str(no_checksum)
    # S3 hashed other bytes than we did: a download that changed on the way, or a local file rewritten under us.
    changed = ObjectState("k", 5, b64_of_hex(OTHER), {"sha256": SHA})
    hub = upload_problem("org/x@main", f, d, changed, in_place=False)
    local = upload_problem("org/x@main", f, d, changed, in_place=True)
    assert isinstance(hub, IntegrityError) and "S3's checksum does not match" in str(hub)
    assert isinstance(local, IntegrityError) and "a.bin changed while it was being published" in str(local)


# -- fetched bytes against the listing ----------------------------------------------------------------------------
def test_fetched_bytes_are_checked_by_size_then_sha256_else_git_blob_id() -> None:
    data = b'{"a": 1}\n'
    blob, sha = git_blob_id(data), hashlib.sha256(data).hexdigest()
    good = Digest(sha, blob, len(data), b64_of_hex(sha))
    small = RepoFile("c.json", len(data), None, blob, lfs=False)
    lfs = RepoFile("w.bin", len(data), sha, lfs_blob_id(sha, len(data)), lfs=True)
    assert fetch_problem("org/x@main", small, good, in_place=False) is None
    assert fetch_problem("org/x@main", lfs, Digest(sha, None, len(data), b64_of_hex(sha)), in_place=False) is None
    other = b'{"a": 2}\n'  # same size, other bytes
    wrong = Digest(hashlib.sha256(other).hexdigest(), git_blob_id(other), len(other), "ck")
    for f, expected, actual in ((small, blob, git_blob_id(other)), (lfs, sha, wrong.sha256)):
        problem = fetch_problem("org/x@main", f, wrong, in_place=False)
        assert isinstance(problem, IntegrityError)
        assert (
            f"{f.path} {'sha256' if f.sha256 else 'git blob id'} {actual} does not match the source's {expected}"
            in (str(problem))
        )
    empty = fetch_problem("org/x@main", small, Digest(hashlib.sha256(b"").hexdigest(), git_blob_id(b""), 0, ""), False)
    assert isinstance(empty, IntegrityError) and "c.json is 0 bytes, the source listed 9" in str(empty)
    # Nothing to check against: refused, never published unverified.
    unknown = fetch_problem("org/x@main", RepoFile("c.json", len(data)), good, in_place=False)
    assert isinstance(unknown, IntegrityError) and "cannot be verified" in str(unknown)
    # A local file hashed at resolve and different now: it changed under us.
    local = fetch_problem("org/x@main", lfs, wrong, in_place=True)
    assert isinstance(local, IntegrityError) and "w.bin changed while it was being published" in str(local)


def test_a_sources_hash_stands_in_only_for_the_very_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    with path.open("rb") as f:
        digest = hash_fd(f.fileno(), blob_id=False)
    now = FileStamp.of(path.stat())
    small, lfs = RepoFile("f", 3, None, git_blob_id(b"abc")), RepoFile("f", 3, digest.sha256)
    assert digest.stamp == now and reuse_hash(lfs, digest, now)
    assert not reuse_hash(small, digest, now)  # it has no git blob id to check against: hashed again
    assert not reuse_hash(lfs, None, now)  # the source hashed nothing
    unstamped = Digest(digest.sha256, digest.blob_id, 3, digest.s3_checksum)  # made up, not taken by hash_fd
    assert not reuse_hash(lfs, unstamped, now)
    path.write_bytes(b"abd")  # same size, rewritten since
    assert not reuse_hash(lfs, digest, FileStamp.of(path.stat()))
    other = tmp_path / "g"
    other.write_bytes(b"abc")
    assert not reuse_hash(lfs, digest, FileStamp.of(other.stat()))  # a hash of another file with the same bytes


# -- the manifest and tree-listing line of a file -----------------------------------------------------------------
def test_lfs_comes_from_the_source_and_else_from_the_size() -> None:
    pointer = lfs_blob_id(SHA, 5)
    hub_lfs = PublishedFile.of(RepoFile("w.bin", 5, SHA, "hub-pointer-id", lfs=True), 5, SHA, "content-id", "ck")
    assert (hub_lfs.lfs, hub_lfs.blob_id) == (True, "hub-pointer-id")  # the Hub's blob id is that of its pointer
    computed = PublishedFile.of(RepoFile("w.bin", 5, SHA, None, lfs=True), 5, SHA, "content-id", None)
    assert computed.blob_id == pointer
    small = PublishedFile.of(RepoFile("c.json", 5, None, "git-id", lfs=False), 5, SHA, "git-id", None)
    assert (small.lfs, small.blob_id) == (False, "git-id")
    # A server that said nothing: judged by size, as git-lfs would store it.
    assert not PublishedFile.of(RepoFile("a", None), LFS_THRESHOLD - 1, SHA, "git-id", None).lfs
    big = PublishedFile.of(RepoFile("a", None), LFS_THRESHOLD, SHA, "git-id", None)
    assert big.lfs and big.blob_id == lfs_blob_id(SHA, LFS_THRESHOLD)


def test_manifest_and_tree_lines_keep_their_json_shape() -> None:
    lfs = PublishedFile("w.bin", 7, SHA, "pid", True, "ck")
    small = PublishedFile("b/c.json", 3, OTHER, "gid", False, None)
    assert lfs.to_manifest() == {"path": "w.bin", "size": 7, "sha256": SHA, "blob_id": "pid", "s3_checksum": "ck"}
    assert small.to_manifest() == {"path": "b/c.json", "size": 3, "sha256": OTHER, "blob_id": "gid"}
    listing = treelisting.encode([(f.path, f.tree_entry()) for f in (lfs, small)])
    assert json.dumps(listing) == json.dumps(
        {
            "format_version": 1,
            "files": {
                "b/c.json": {"size": 3, "blob_id": "gid"},
                "w.bin": {"size": 7, "blob_id": "pid", "lfs_sha256": SHA, "lfs_size": 7},
            },
        }
    )
    assert treelisting.decode(json.dumps(listing)) == listing["files"]
    for foreign in (b"", b"garbage", b"[]", json.dumps({**listing, "format_version": 2}).encode()):
        assert treelisting.decode(foreign) is None


def test_a_manifest_is_read_back_only_when_complete_and_whole() -> None:
    line = {"path": "w.bin", "size": LFS_THRESHOLD, "sha256": SHA, "blob_id": "pid", "s3_checksum": "ck"}
    m = {"complete": True, "repo": "org/x", "sha": "a" * 40, "files": [line]}
    assert published_files(m) == {"w.bin": PublishedFile("w.bin", LFS_THRESHOLD, SHA, "pid", True, "ck")}
    for bad in ({**m, "complete": False}, {**m, "sha": "main"}, {**m, "files": [{"path": "w.bin"}]}, [], None):
        assert published_files(bad) is None


# -- status.json values -------------------------------------------------------------------------------------------
def test_status_values_are_the_plain_strings_readers_compare() -> None:
    entry = ModelEntry("org/x")
    ok, failed = RepoResult(entry, state=RepoState.OK), RepoResult(entry, state=RepoState.FAILED)
    assert json.dumps([ok.to_json()["state"], failed.to_json()["state"]]) == '["ok", "failed"]'
    assert run_state([ok]) is RunState.OK and run_state([ok, failed]) is RunState.FAILED and run_state([]) == "ok"
    assert RepoResult(entry).state == "pending" and not RepoResult(entry).ok


def test_last_success_survives_failed_runs_and_ad_hoc_runs_leave_the_scheduled_record_alone() -> None:
    entry = ModelEntry("org/x")
    ok, failed = [RepoResult(entry, state=RepoState.OK)], [RepoResult(entry, state=RepoState.FAILED)]
    common = {"models_file": "m.txt", "started": "t0", "seconds": 1.23456, "delisted": {}, "pruned": []}
    first = scheduled_run({}, ok, ended="t1", prune_refused=None, **common)
    assert (first["state"], first["last_success"], first["seconds"]) == ("ok", "t1", 1.235)
    second = scheduled_run(first, failed, ended="t2", prune_refused=None, **common)
    assert (second["state"], second["last_success"], second["ended"]) == ("failed", "t1", "t2")
    assert scheduled_run({"last_success": 5}, failed, ended="t3", prune_refused=None, **common)["last_success"] is None
    doc: dict[str, object] = dict(second)
    for n in range(AD_HOC_RUNS_KEPT + 3):
        doc = with_ad_hoc_run(doc, ok if n % 2 else failed, started=f"a{n}", ended=f"b{n}")
    runs = doc["ad_hoc"]
    assert isinstance(runs, list) and len(runs) == AD_HOC_RUNS_KEPT
    assert runs[-1]["started"] == f"a{AD_HOC_RUNS_KEPT + 2}" and runs[0]["started"] == "a3"  # the oldest dropped
    assert {k: v for k, v in doc.items() if k != "ad_hoc"} == {k: v for k, v in second.items() if k != "ad_hoc"}
    assert scheduled_run(doc, ok, ended="t4", prune_refused=None, **common)["ad_hoc"] == runs  # carried over
    assert json.dumps(first["state"]) == '"ok"'


# -- the Source protocol ------------------------------------------------------------------------------------------
class MemorySource:
    """A third kind of source, as a ModelScope one would be: publish must need nothing but the protocol."""

    def __init__(self, files: dict[str, bytes], offer_hash: bool = True) -> None:
        self.files = files
        self.offer_hash = offer_hash  # hand publish a hash of the download (a source may; publish then reuses it)
        self.completed: list[str] = []

    def resolve(self, entry: ModelEntry) -> Snapshot:
        sha = hashlib.sha1(b"".join(self.files.values())).hexdigest()
        # The listing gives sizes and nothing else, like a server without LFS metadata: complete() fills it in.
        return Snapshot(entry.repo_id, entry.repo_type, sha, tuple(RepoFile(p, len(b)) for p, b in self.files.items()))

    def complete(self, entry: ModelEntry, snapshot: Snapshot, file: RepoFile) -> RepoFile:
        self.completed.append(file.path)
        data = self.files[file.path]
        return RepoFile(file.path, len(data), None, git_blob_id(data), lfs=False)

    def fetch(
        self,
        entry: ModelEntry,
        snapshot: Snapshot,
        file: RepoFile,
        dest_dir: Path,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Fetched:
        # One name per file: publish fetches with several workers at once (a count of the folder raced).
        path = dest_dir / (hashlib.sha256(file.path.encode()).hexdigest() + ".part")
        path.write_bytes(self.files[file.path])
        if not self.offer_hash:
            return Fetched(path, None, in_place=False)
        with path.open("rb") as f:
            return Fetched(path, hash_fd(f.fileno()), in_place=False)

    def origin(self, entry: ModelEntry) -> str:
        return "memory://test"


def test_a_new_source_is_one_class_publish_needs_nothing_else(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    files = {"config.json": b'{"a": 1}\n', "sub/w.bin": b"\1" * 4096}
    source = MemorySource(files)
    client = s3_server.client()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    publisher = Publisher(Target(client, bucket, "p"), HubSource(), scratch, workers=2, sources=lambda e: source)
    result = publisher.publish(ModelEntry("org/mem"))
    assert result.state is RepoState.OK, result.error
    assert sorted(source.completed) == sorted(files) and not list(scratch.iterdir())  # downloads released
    root = "p/hub/models--org--mem"
    for path, data in files.items():
        assert read(client, bucket, f"{root}/snapshots/{result.sha}/{path}") == data
    assert read(client, bucket, f"{root}/refs/main") == (result.sha or "").encode()
    manifest = json.loads(read(client, bucket, f"p/hf-cache/manifests/models--org--mem/{result.sha}.json"))
    assert manifest["source"] == "memory://test"
    tree = treelisting.decode(read(client, bucket, f"{root}/trees/{result.sha}.json"))
    assert tree == {p: {"size": len(b), "blob_id": git_blob_id(b)} for p, b in files.items()}
    # The second run leaves everything in place (its manifest and S3's checksums vouch for it).
    before = set(objects(client, bucket))
    again = publisher.publish(ModelEntry("org/mem"))
    assert again.state is RepoState.OK and again.bytes_skipped == sum(map(len, files.values()))
    assert set(objects(client, bucket)) == before


class LyingSource(MemorySource):
    """Lists the true files (``files``) but serves other bytes for some (``served``, or ``write`` for big ones), and
    may hand over a forged hash of the true bytes: publish must refuse those files whatever the source says."""

    def __init__(
        self,
        files: dict[str, bytes],
        served: dict[str, bytes] | None = None,
        write: dict[str, Callable[[Path], None]] | None = None,
        listing: dict[str, RepoFile] | None = None,
        forge: bool = False,
    ) -> None:
        super().__init__(files)
        self.served, self.write, self.listing, self.forge = served or {}, write or {}, listing or {}, forge

    def resolve(self, entry: ModelEntry) -> Snapshot:
        snap = super().resolve(entry)
        return Snapshot(snap.repo_id, snap.repo_type, snap.sha, (*snap.files, *self.listing.values()))

    def complete(self, entry: ModelEntry, snapshot: Snapshot, file: RepoFile) -> RepoFile:
        return self.listing.get(file.path) or super().complete(entry, snapshot, file)

    def fetch(
        self,
        entry: ModelEntry,
        snapshot: Snapshot,
        file: RepoFile,
        dest_dir: Path,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Fetched:
        path = dest_dir / (hashlib.sha256(file.path.encode()).hexdigest() + ".part")
        if file.path in self.write:
            self.write[file.path](path)
        else:
            path.write_bytes(self.served.get(file.path, self.files.get(file.path, b"")))
        if not self.forge:
            return Fetched(path, None, in_place=False)
        # A hash of the listed bytes, taken by hash_fd of another file: it names the truth, not these bytes.
        true = dest_dir / (path.name + ".true")
        true.write_bytes(self.files[file.path])
        with true.open("rb") as f:
            forged = hash_fd(f.fileno())
        true.unlink()
        return Fetched(path, forged, in_place=False)


LIES = {
    "other bytes": b'{"a": 22}\n',  # another size
    "truncated": b"",  # the object once published empty with state OK
    "same size": b'{"a": 2}\n',
}


@pytest.mark.parametrize("forge", [False, True], ids=["honest-hash", "forged-hash"])
@pytest.mark.parametrize("lie", sorted(LIES))
def test_publish_refuses_bytes_that_are_not_the_listed_file(
    s3_server: S3Server, bucket: str, tmp_path: Path, lie: str, forge: bool
) -> None:
    """A source that serves other bytes than it lists fails that repo, naming the file and both ids; nothing of the
    file is uploaded, no ref or manifest is written, the next repo publishes."""
    true = {"config.json": b'{"a": 1}\n', "w.bin": b"\1" * 4096}
    liar = LyingSource(true, served={"config.json": LIES[lie]}, forge=forge)
    honest = MemorySource({"config.json": b"{}"})
    client = s3_server.client()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    sources = {"org/liar": liar, "org/honest": honest}
    publisher = Publisher(
        Target(client, bucket, "p"), HubSource(), scratch, workers=2, sources=lambda e: sources[e.repo_id]
    )
    bad = publisher.publish(ModelEntry("org/liar"))
    good = publisher.publish(ModelEntry("org/honest"))
    assert bad.state is RepoState.FAILED and good.state is RepoState.OK, (bad.error, good.error)
    error = bad.error or ""
    served = LIES[lie]
    if len(served) != len(true["config.json"]):
        assert f"config.json is {len(served)} bytes, the source listed {len(true['config.json'])}" in error, error
    else:
        expected, actual = git_blob_id(true["config.json"]), git_blob_id(served)
        assert f"config.json git blob id {actual} does not match the source's {expected}" in error, error
    assert "\n" not in error and "not published" in error
    keys = set(objects(client, bucket))
    assert not [k for k in keys if "models--org--liar" in k and k.endswith("config.json")], "the lie was uploaded"
    assert not [k for k in keys if "models--org--liar" in k and ("/refs/" in k or "/manifests/" in k)]
    assert "p/hub/models--org--honest/refs/main" in keys
    assert list(scratch.iterdir()) == []  # the refused download was deleted too


def test_publish_refuses_a_big_lfs_file_with_the_right_size_and_other_bytes(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Above the multipart threshold, checked against the LFS sha256 before any part is sent."""
    size = MULTIPART_THRESHOLD + 5 * 1024 * 1024 + 3

    def sparse(path: Path, mark: bytes) -> None:
        with path.open("wb") as f:
            f.truncate(size)
            f.seek(size // 2)
            f.write(mark)

    truth = tmp_path / "truth"
    sparse(truth, b"true")
    with truth.open("rb") as f:
        sha = hash_fd(f.fileno(), blob_id=False).sha256
    truth.unlink()
    listed = RepoFile("model.safetensors", size, sha, lfs_blob_id(sha, size), lfs=True)
    liar = LyingSource(
        {"config.json": b"{}"}, listing={listed.path: listed}, write={listed.path: lambda p: sparse(p, b"lie!")}
    )
    client = s3_server.client()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    publisher = Publisher(Target(client, bucket, "p"), HubSource(), scratch, workers=2, sources=lambda e: liar)
    result = publisher.publish(ModelEntry("org/big-liar"))
    assert result.state is RepoState.FAILED, "published a big file that is not the listed one"
    error = result.error or ""
    assert "model.safetensors sha256 " in error and f"does not match the source's {sha}" in error, error
    assert not [k for k in objects(client, bucket) if "big-liar" in k and ("model.safetensors" in k or "/refs/" in k)]
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert list(scratch.iterdir()) == []


def test_publish_hashes_each_file_once_whichever_source_fetched_it(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local folder's files, hashed at resolve, are not read again to verify them (their stamped hash is reused);
    a source that hands over no hash gets each file hashed by publish exactly once."""
    from hf_cache.refresh import publish as publish_module
    from hf_cache.refresh import source as source_module

    hashed: dict[str, list[int]] = {"publish": [], "source": []}

    def counting(who: str, real: Callable[..., Digest]) -> Callable[..., Digest]:
        def run(fd: int, blob_id: bool = True) -> Digest:
            hashed[who].append(os.fstat(fd).st_size)
            return real(fd, blob_id=blob_id)

        return run

    monkeypatch.setattr(publish_module, "hash_fd", counting("publish", publish_module.hash_fd))
    monkeypatch.setattr(source_module, "hash_fd", counting("source", source_module.hash_fd))
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_bytes(b'{"a": 1}\n')
    (folder / "w.bin").write_bytes(b"\2" * (LFS_THRESHOLD + 1))
    client = s3_server.client()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    memory = MemorySource({"config.json": b"{}", "w.bin": b"\3" * 4096}, offer_hash=False)
    sources = {
        "org/local": publish_module.source_for(ModelEntry("org/local", source=folder), HubSource()),
        "org/mem": memory,
    }
    publisher = Publisher(
        Target(client, bucket, "p"), HubSource(), scratch, workers=2, sources=lambda e: sources[e.repo_id]
    )
    local = publisher.publish(ModelEntry("org/local", source=folder))
    assert local.state is RepoState.OK and local.files_uploaded == 2, local.error
    assert sorted(hashed["source"]) == [9, LFS_THRESHOLD + 1] and hashed["publish"] == []
    mem = publisher.publish(ModelEntry("org/mem"))
    assert mem.state is RepoState.OK and mem.files_uploaded == 2, mem.error
    assert sorted(hashed["publish"]) == [2, 4096]


def test_the_store_answers_absent_as_none_and_every_failure_as_our_type(s3_server: S3Server, bucket: str) -> None:
    client = s3_server.client()
    here, gone = Target(client, bucket, "p"), Target(client, "no-such-bucket-h2", "p")
    assert here.get_bytes("p/none") is None and here.head("p/none") is None and here.get_json("p/none") is None
    here.put_bytes("p/x.json", b"{not json")
    assert here.get_json("p/x.json") is None  # ours, corrupt: reported and replaced, never fatal
    calls: list[Callable[[], object]] = [
        lambda: gone.list("p"),
        lambda: gone.put_bytes("p/a", b"a"),
        lambda: gone.put_json("p/a", {}),
        lambda: server_copy(gone, "p/a", "p/b", 1, {}),
    ]
    for call in calls:
        with pytest.raises(S3NotFoundError, match="bucket 'no-such-bucket-h2' does not exist"):
            call()


def test_an_s3_failure_fails_the_repo_in_one_line_of_ours(s3_server: S3Server, tmp_path: Path) -> None:
    """Every S3 error inside a publish comes through hf_cache.s3errors: our type, what failed, what to do."""
    client = s3_server.client()
    target = Target(client, "no-such-bucket-h2", "p")
    publisher = Publisher(target, HubSource(), tmp_path, sources=lambda e: MemorySource({"a.json": b"{}"}))
    result = publisher.publish(ModelEntry("org/mem"))
    assert result.state is RepoState.FAILED and result.error is not None
    assert result.error.startswith("bucket 'no-such-bucket-h2' does not exist"), result.error
    assert "check --bucket" in result.error and "\n" not in result.error
    assert "Traceback" not in result.error and "An error occurred" not in result.error  # not botocore's raw text


def test_publish_never_asks_which_source_it_has() -> None:
    """Outside source.py no code tells sources apart (isinstance, a class name) or takes an untyped source."""
    refresh = Path(__file__).resolve().parents[1] / "cache" / "refresh"
    found = []
    for module in sorted(refresh.glob("*.py")):
        if module.name == "source.py":
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Name) and node.id == "LocalSource":
                found.append(f"{module.name}:{node.lineno}: names LocalSource")
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                kinds = ast.unparse(node.args[1]) if len(node.args) > 1 else ""
                if "Source" in kinds:
                    found.append(f"{module.name}:{node.lineno}: isinstance(..., {kinds})")
            untyped = isinstance(node, ast.arg) and node.annotation is not None and "source" in node.arg
            if untyped and ast.unparse(node.annotation) in ("Any", "object"):
                found.append(f"{module.name}:{node.lineno}: {node.arg}: {ast.unparse(node.annotation)}")
    assert found == []
