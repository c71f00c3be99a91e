"""The parallel fetcher: its segment plan (pure) and a verified fetch between local files."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import pytest

from hf_cache.errors import IntegrityError
from hf_cache.transfer import MiB, ReadInto, aligned_segment, fetch, plan_segments


def test_segments_cover_the_file_exactly_in_order() -> None:
    for size in (0, 1, 48 * MiB - 1, 48 * MiB, 48 * MiB + 1, 100_000_000, 2_000_000_000):
        segs = plan_segments(size, 48 * MiB)
        assert sum(s.size for s in segs) == size
        assert all(a.end == b.offset for a, b in itertools.pairwise(segs))
        assert not segs or segs[0].offset == 0
        # every segment but the last ends on a segment boundary (where rclone's own request ends)
        assert all(s.end % (48 * MiB) == 0 for s in segs[:-1])


def test_a_short_tail_joins_the_last_segment() -> None:
    assert [s.size for s in plan_segments(100 * MiB, 48 * MiB)] == [48 * MiB, 52 * MiB]
    assert [s.size for s in plan_segments(120 * MiB, 48 * MiB)] == [48 * MiB, 48 * MiB, 24 * MiB]


def test_aligned_segments_end_where_rclones_doubling_requests_end() -> None:
    chunk = 16 * MiB
    ends = {chunk * (2**k - 1) for k in range(1, 16)}  # 16, 48, 112, 240 MiB... from any start offset
    for total in (10 * MiB, 400_000_000, 2_000_000_000, 20_000_000_000):
        seg = aligned_segment(total, 16, chunk, 48 * MiB)
        assert seg in ends and seg >= 48 * MiB
    assert aligned_segment(2_000_000_000, 16, chunk, 48 * MiB) == 112 * MiB  # 18 segments for 16 streams
    assert aligned_segment(20_000_000_000, 16, chunk, 48 * MiB) == 1008 * MiB


def _reader(path: Path) -> tuple[int, ReadInto]:
    fd = os.open(path, os.O_RDONLY)
    return fd, lambda off, buf: os.preadv(fd, [buf], off)


def test_fetch_copies_and_verifies_a_file(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = os.urandom(3 * MiB + 12345)
    src.write_bytes(data)
    dest = tmp_path / "dest.bin"
    out = os.open(dest, os.O_WRONLY | os.O_CREAT)
    os.ftruncate(out, len(data))
    fd, read = _reader(src)
    dfd, verify = _reader(dest)
    try:
        got = fetch(
            "src.bin",
            len(data),
            read,
            verify_read_into=verify,
            sink=lambda off, buf: os.pwrite(out, buf, off),
            sha256=hashlib.sha256(data).hexdigest(),
            streams=4,
            segment=MiB,
            block=256 * 1024,
        )
    finally:
        for f in (fd, dfd, out):
            os.close(f)
    assert dest.read_bytes() == data
    assert got.sha256 == hashlib.sha256(data).hexdigest()


def test_fetch_refuses_bytes_that_do_not_match_the_sha256(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = bytearray(os.urandom(3 * MiB))
    src.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    data[-1] ^= 1  # corrupt the last segment only
    src.write_bytes(data)
    fd, read = _reader(src)
    try:
        with pytest.raises(IntegrityError, match=r"src.bin: sha256 .* does not match"):
            fetch("src.bin", len(data), read, sha256=want, streams=3, segment=MiB, block=256 * 1024)
    finally:
        os.close(fd)


def test_fetch_reports_a_truncated_source(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(2 * MiB))
    fd, read = _reader(src)
    try:
        with pytest.raises(IntegrityError, match=r"ended at byte 2097152, expected 3145728"):
            fetch("src.bin", 3 * MiB, read, streams=3, segment=MiB, block=256 * 1024)
    finally:
        os.close(fd)


def test_touch_mode_reads_sparsely_and_still_hashes_every_byte(tmp_path: Path) -> None:
    """Segment streams read 4 KiB per ``touch`` bytes (a contiguous-fetching source fills the rest); the hash pass
    reads everything once."""
    src = tmp_path / "src.bin"
    data = os.urandom(5 * MiB + 777)
    src.write_bytes(data)
    fd = os.open(src, os.O_RDONLY)
    touched: list[int] = []
    hashed: list[int] = []

    def touch_read(off: int, buf: memoryview) -> int:
        touched.append(len(buf))
        return os.preadv(fd, [buf], off)

    def verify_read(off: int, buf: memoryview) -> int:
        n = os.preadv(fd, [buf], off)
        hashed.append(n)
        return n

    try:
        got = fetch(
            "src.bin",
            len(data),
            touch_read,
            verify_read_into=verify_read,
            sha256=hashlib.sha256(data).hexdigest(),
            streams=3,
            segment=2 * MiB,
            touch=MiB,
            block=256 * 1024,
        )
    finally:
        os.close(fd)
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert sum(hashed) == len(data)
    assert sum(touched) <= 12 * 4096  # a few KiB per MiB, not the file
