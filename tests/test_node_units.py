"""Pure decisions of the node tier, and its file operations on real files (no mount needed)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from hf_cache.errors import ConfigError, IntegrityError
from hf_cache.node import evict as ev
from hf_cache.node.promote import promote_from_file
from hf_cache.node.tree import Entry, Tier, entries_from_manifest, sync
from hf_cache.node.vfscache import _epoch, covered


def test_covered_counts_each_byte_once() -> None:
    assert covered([], 10) == 0
    assert covered([{"Pos": 0, "Size": 10}], 10) == 10
    assert covered([{"Pos": 0, "Size": 4}, {"Pos": 2, "Size": 4}, {"Pos": 8, "Size": 5}], 10) == 8
    assert covered([{"Pos": 5, "Size": 5}, {"Pos": 0, "Size": 5}], 10) == 10


def test_rclone_times_parse_with_nanoseconds() -> None:
    assert _epoch("1970-01-01T00:00:01.5Z") == 1.5
    assert abs(_epoch("2026-11-27T09:25:12.63241421Z") - 1795771512.63241421) < 1e-5  # type: ignore[operator]
    assert _epoch("garbage") is None


def test_tier_refuses_a_mountpoint_outside_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be inside it"):
        Tier.make(tmp_path / "tier", tmp_path / "mnt")
    with pytest.raises(ConfigError):
        Tier.make(tmp_path, tmp_path)
    assert Tier.make(tmp_path, tmp_path / "mnt").mountpoint == tmp_path / "mnt"


def test_links_are_relative_and_stay_inside_the_node_folder(tmp_path: Path) -> None:
    tier = Tier.make(tmp_path / "node", tmp_path / "node" / "mnt")
    e = Entry("models--o--n", "a" * 40, "sub/dir/f.bin", 3, "b" * 64)
    assert tier.hot_target(e) == "../../../../blobs/" + "b" * 64
    assert tier.cold_target(e) == "../../../../../../mnt/hub/models--o--n/snapshots/" + "a" * 40 + "/sub/dir/f.bin"
    for target in (tier.hot_target(e), tier.cold_target(e)):
        resolved = os.path.normpath(os.path.join(tier.link(e).parent, target))
        assert resolved.startswith(str(tier.root) + "/")


def test_manifest_paths_that_leave_the_snapshot_are_refused() -> None:
    ok = {"path": "a.bin", "size": 1, "sha256": "0" * 64}
    assert entries_from_manifest("r", "s" * 40, json.dumps({"files": [ok]}).encode())[0].path == "a.bin"
    for bad in ("../x", "/etc/passwd", "a//b", "a/./b"):
        with pytest.raises(ValueError, match="unsafe path"):
            entries_from_manifest("r", "s" * 40, json.dumps({"files": [{**ok, "path": bad}]}).encode())
    with pytest.raises(ValueError, match="sha256"):
        entries_from_manifest("r", "s" * 40, json.dumps({"files": [{**ok, "sha256": "xyz"}]}).encode())


def test_eviction_plan_is_lru_and_says_when_nothing_fits() -> None:
    blobs = [ev.Blob("r", "new", 4, 30.0), ev.Blob("r", "old", 4, 10.0), ev.Blob("r", "mid", 4, 20.0)]
    out, fits = ev.plan(blobs, other_bytes=2, cap=14)
    assert [b.sha256 for b in out] == [] and fits
    out, fits = ev.plan(blobs, other_bytes=2, cap=14, incoming=4)
    assert [b.sha256 for b in out] == ["old"] and fits
    out, fits = ev.plan(blobs, other_bytes=2, cap=10, incoming=4)
    assert [b.sha256 for b in out] == ["old", "mid"] and fits
    out, fits = ev.plan(blobs, other_bytes=8, cap=10, incoming=4)
    assert not fits  # even with every blob gone


def _fake_published(tmp_path: Path, content: bytes) -> tuple[Tier, Entry, list[Entry]]:
    """A mount-like folder (plain files in the published layout) and a tier synced from it."""
    tier = Tier.make(tmp_path / "node", tmp_path / "node" / "mnt")
    sha, repo = "c" * 40, "models--o--n"
    snap = tier.mountpoint / "hub" / repo / "snapshots" / sha
    snap.mkdir(parents=True)
    (snap / "w.bin").write_bytes(content)
    (tier.mountpoint / "hub" / repo / "refs").mkdir()
    (tier.mountpoint / "hub" / repo / "refs" / "main").write_text(sha)
    digest = hashlib.sha256(content).hexdigest()
    manifest = tier.manifest_on_mount(repo, sha)
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"files": [{"path": "w.bin", "size": len(content), "sha256": digest}]}))
    assert sync(tier).snapshots_added == 1
    e = Entry(repo, sha, "w.bin", len(content), digest)
    return tier, e, [e]


def test_a_corrupt_cache_block_is_never_promoted(tmp_path: Path) -> None:
    content = os.urandom(3 * 1024 * 1024)
    tier, e, entries = _fake_published(tmp_path, content)
    damaged = tmp_path / "cache-file"
    bad = bytearray(content)
    bad[2 * 1024 * 1024 + 5] ^= 1  # one bit in the third MiB
    damaged.write_bytes(bad)
    with pytest.raises(IntegrityError, match="not promoted"):
        promote_from_file(tier, e, damaged, entries)
    assert not tier.is_hot(e) and not tier.blob(e.repo, e.sha256).exists()
    assert list((tier.state / "tmp").iterdir()) == []  # the temp blob is gone too
    good = tmp_path / "good"
    good.write_bytes(content)
    promote_from_file(tier, e, good, entries)
    assert tier.is_hot(e) and tier.link(e).read_bytes() == content


def test_eviction_swaps_the_link_back_before_deleting_the_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = b"x" * 5000
    tier, e, entries = _fake_published(tmp_path, content)
    src = tmp_path / "src"
    src.write_bytes(content)
    promote_from_file(tier, e, src, entries)
    seen_at_unlink: list[str] = []
    real_unlink = os.unlink

    def spy(path: object, *a: object, **k: object) -> None:
        if str(path) == str(tier.blob(e.repo, e.sha256)):
            seen_at_unlink.append(os.readlink(tier.link(e)))
        real_unlink(path, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", spy)
    (blob,) = ev.blobs_on_disk(tier)
    ev.evict(tier, blob, entries)
    assert seen_at_unlink == [tier.cold_target(e)]  # the link already pointed into the mount
    assert not tier.blob(e.repo, e.sha256).exists() and tier.link(e).read_bytes() == content


def test_a_ref_is_written_only_after_its_snapshot_is_complete(tmp_path: Path) -> None:
    tier, e, _ = _fake_published(tmp_path, b"abc")
    ref = tier.hub / e.repo / "refs" / "main"
    assert ref.read_text() == e.sha  # no newline, as huggingface_hub reads it
    assert os.readlink(tier.link(e)) == tier.cold_target(e)
    # a new commit whose manifest cannot be read: the ref stays on the old, complete snapshot
    new = "d" * 40
    (tier.mountpoint / "hub" / e.repo / "snapshots" / new).mkdir()
    (tier.mountpoint / "hub" / e.repo / "refs" / "main").write_text(new)
    res = sync(tier)
    assert res.problems and "no usable manifest" in res.problems[0]
    assert ref.read_text() == e.sha


def test_temp_files_of_a_killed_promotion_are_removed_at_start(tmp_path: Path) -> None:
    from hf_cache.node.agent import NodeAgent

    tier, _, _ = _fake_published(tmp_path, b"abc")
    left = tier.tmp_name()
    left.write_bytes(b"half a blob")
    agent = NodeAgent(tier, tmp_path / "rclone-cache", "b/p", cap=1 << 30)
    assert agent.clean_temp() == 1 and not left.exists()
