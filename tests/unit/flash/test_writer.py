"""Writing to image files (--to-file): parallel copies, read-back, corrupt sources, zstd."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
import zstandard

from provisioner.errors import DeelitError
from provisioner.flash import policy, readback, writer
from provisioner.flash import source as src
from provisioner.formats import bmap as bm

B = bm.BLOCK_SIZE


def make_image(path: Path, size: int, spans: list[tuple[int, int]]) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
        for i, (off, length) in enumerate(spans):
            f.seek(off)
            block = hashlib.sha256(str(i).encode()).digest() * (B // 32)
            f.write((block * (length // B + 1))[:length])
    return path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    # 24 MiB, spans across several 8 MiB chunks, a partial last block
    return make_image(tmp_path / "disk.img", (24 << 20) + 1000,
                      [(0, 2 * B), (3 << 20, 10 << 20), (20 << 20, 5), ((24 << 20), 1000)])


def file_targets(tmp_path: Path, n: int, image: Path) -> list[policy.Target]:
    paths = [str(tmp_path / f"out{i}.img") for i in range(n)]
    return policy.check(paths, image_size=image.stat().st_size, source=image, to_file=True)


def test_three_file_targets_become_exact_copies(tmp_path: Path, image: Path) -> None:
    source = src.open_source(image)
    result = writer.flash(source, file_targets(tmp_path, 3, image))
    assert result.ok, [s.error for s in result.states]
    for s in result.states:
        assert s.verified_ok is True and s.written == source.bmap.mapped_bytes
        assert s.target.path.read_bytes() == image.read_bytes()


def test_existing_file_target_is_replaced_not_merged(tmp_path: Path, image: Path) -> None:
    old = tmp_path / "out0.img"
    old.write_bytes(b"\xff" * (30 << 20))
    result = writer.flash(src.open_source(image), file_targets(tmp_path, 1, image))
    assert result.ok
    assert old.read_bytes() == image.read_bytes()


def test_no_verify_leaves_targets_unverified(tmp_path: Path, image: Path) -> None:
    result = writer.flash(src.open_source(image), file_targets(tmp_path, 1, image), verify=False)
    assert result.ok and result.states[0].verified_ok is None
    assert result.states[0].verified == 0


def test_read_back_finds_a_changed_range(tmp_path: Path, image: Path) -> None:
    source = src.open_source(image)
    [t] = file_targets(tmp_path, 1, image)
    assert writer.flash(source, [t]).ok
    with t.path.open("r+b") as f:
        f.seek((5 << 20) + 17)
        f.write(b"X")
    [state] = readback.verify(source, [t])
    assert not state.ok and state.verified_ok is False
    bad_blocks = {b for a, z in state.mismatches for b in range(a, z + 1)}
    assert ((5 << 20) + 17) // B in bad_blocks
    assert "verify failed" in (state.error or "")


def test_image_not_matching_its_bmap_is_reported_and_head_left_blank(
        tmp_path: Path, image: Path) -> None:
    m = bm.create(image)
    m.write(tmp_path / "disk.bmap")
    with image.open("r+b") as f:  # corrupt the image after the map was made
        f.seek((12 << 20) + 5)
        f.write(b"corrupt")
    source = src.open_source(image)
    assert source.bmap_path == tmp_path / "disk.bmap"
    [t] = file_targets(tmp_path, 1, image)
    result = writer.flash(source, [t])
    assert not result.ok and "does not match its bmap" in (result.source_error or "")
    assert "not completed" in (result.states[0].error or "")
    # the first span (partition tables) is written last, so this copy does not look usable
    assert t.path.read_bytes()[: 2 * B] == bytes(2 * B)


def test_zstd_image_with_bmap_beside_it(tmp_path: Path, image: Path) -> None:
    bm.create(image).write(tmp_path / "disk.bmap")
    zst = tmp_path / "disk.img.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(image.read_bytes()))
    source = src.open_source(zst)
    assert source.compressed and source.bmap_path == tmp_path / "disk.bmap"
    result = writer.flash(source, file_targets(tmp_path, 2, image))
    assert result.ok, [s.error for s in result.states]
    assert result.states[0].target.path.read_bytes() == image.read_bytes()


def test_zstd_image_without_bmap_is_written_whole(tmp_path: Path, image: Path) -> None:
    zst = tmp_path / "plain.img.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(image.read_bytes()))
    source = src.open_source(zst)
    assert source.bmap_path is None and source.bmap.mapped_bytes == image.stat().st_size
    result = writer.flash(source, file_targets(tmp_path, 1, image))
    assert result.ok
    assert result.states[0].target.path.read_bytes() == image.read_bytes()


def test_zstd_without_size_or_bmap_is_refused(tmp_path: Path) -> None:
    zst = tmp_path / "x.img.zst"
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    with zst.open("wb") as f, cctx.stream_writer(f) as w:
        w.write(b"data" * 1000)
    with pytest.raises(DeelitError, match="--bmap"):
        src.open_source(zst)


def test_bmap_of_another_image_size_is_refused(tmp_path: Path, image: Path) -> None:
    other = make_image(tmp_path / "other.img", 1 << 20, [(0, B)])
    bm.create(other).write(tmp_path / "disk.bmap")
    with pytest.raises(DeelitError, match="describes an image of"):
        src.open_source(image)


def test_bmap_candidates_follow_the_build_naming(tmp_path: Path) -> None:
    names = [p.name for p in src.bmap_candidates(tmp_path / "pupil.img.zst")]
    assert names == ["pupil.img.zst.bmap", "pupil.img.bmap", "pupil.bmap"]


def test_short_compressed_image_fails_cleanly(tmp_path: Path, image: Path) -> None:
    bm.create(image).write(tmp_path / "disk.bmap")
    zst = tmp_path / "disk.img.zst"
    data = image.read_bytes()
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    zst.write_bytes(cctx.compress(data[: 8 << 20]))  # truncated content, size unknown
    result = writer.flash(src.open_source(zst), file_targets(tmp_path, 1, image))
    assert not result.ok and "ends at byte" in (result.source_error or "")
    assert os.path.getsize(tmp_path / "out0.img") == image.stat().st_size


def test_reader_runs_ahead_of_a_slow_target(tmp_path: Path, image: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow stick does not hold the reader back by a few chunks: it reads (and decompresses)
    up to READ_AHEAD ahead, so long holes in a .zst image do not leave the sticks idle."""
    monkeypatch.setattr(writer, "CHUNK", 64 << 10)  # the 24 MiB image: ~330 chunks
    monkeypatch.setattr(writer, "READ_AHEAD", 32 << 20)
    source = src.open_source(image)
    last_offset = max(o for _, o, _ in src.spans(source.bmap, writer.CHUNK))
    all_read = threading.Event()
    real_read, real_write = src.SourceReader.read_into, writer._pwrite_all

    def read_into(self: src.SourceReader, buf: memoryview, offset: int) -> None:
        real_read(self, buf, offset)
        if offset == last_offset:
            all_read.set()

    ahead: list[bool] = []
    lock = threading.Lock()

    def slow_write(fd: int, view: memoryview, offset: int) -> None:
        with lock:  # the first write waits: the reader must get to the end meanwhile
            if not ahead:
                ahead.append(all_read.wait(timeout=10))
        real_write(fd, view, offset)

    monkeypatch.setattr(src.SourceReader, "read_into", read_into)
    monkeypatch.setattr(writer, "_pwrite_all", slow_write)
    result = writer.flash(source, file_targets(tmp_path, 2, image))
    assert result.ok, [s.error for s in result.states]
    assert ahead == [True]
    assert result.states[0].target.path.read_bytes() == image.read_bytes()


def test_read_ahead_is_bounded_by_the_image_and_the_budget() -> None:
    least = writer.QUEUE_DEPTH * 2 + 1
    assert writer._pool_chunks(0) == least
    assert writer._pool_chunks(least + 3) == least + 3  # a small image: a buffer per span
    assert least <= writer._pool_chunks(1 << 20) <= writer.READ_AHEAD // writer.CHUNK


def _corrupt(path: Path, offset: int) -> int:
    with path.open("r+b") as f:
        f.seek(offset)
        old = f.read(1)
        f.seek(offset)
        f.write(bytes([old[0] ^ 0xFF]))
    return offset // B


@pytest.mark.parametrize("memcmp", [True, False], ids=["memcmp", "slices"])
@pytest.mark.parametrize("bad_first", [False, True], ids=["others-bad", "first-bad"])
def test_read_back_of_many_targets_judges_each_on_its_own_bytes(
        tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch, memcmp: bool,
        bad_first: bool) -> None:
    """Targets are compared with each other and one is hashed; a target that differs (also
    the one hashed, also in the second chunk of a range) is still judged on its own bytes."""
    if not memcmp:
        monkeypatch.setattr(readback, "_MEMCMP", None)
    source = src.open_source(image)
    targets = file_targets(tmp_path, 4, image)
    assert writer.flash(source, targets, verify=False).ok
    # the 10 MiB range at 3 MiB spans two chunks: 3-11 MiB and 11-13 MiB
    hits = {0: _corrupt(targets[0].path, (12 << 20) + 5)} if bad_first else {}
    hits[2] = _corrupt(targets[2].path, (4 << 20) + 1)
    hits[3] = _corrupt(targets[3].path, (12 << 20) + 7)
    with open(targets[1].path, "r+b") as f:  # and one that is short: its last range is bad
        f.truncate(24 << 20)
    states = readback.verify(source, targets)
    ranges = source.bmap.ranges
    for i, s in enumerate(states):
        bad = {b for a, z in s.mismatches for b in range(a, z + 1)}
        if i == 1:
            assert s.mismatches == [(ranges[-1].first, ranges[-1].last)]
        elif i in hits:
            assert hits[i] in bad and len(s.mismatches) == 1, (i, s.mismatches)
            assert s.verified_ok is False and "verify failed" in (s.error or "")
        else:
            assert s.ok and s.verified_ok is True and s.mismatches == []
        assert s.verified == source.bmap.mapped_bytes


def test_read_back_failure_of_one_target_leaves_the_others(
        tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = src.open_source(image)
    targets = file_targets(tmp_path, 3, image)
    assert writer.flash(source, targets, verify=False).ok
    real = os.preadv
    failing = os.open(targets[1].path, os.O_RDONLY)
    bad_ino = os.fstat(failing).st_ino
    os.close(failing)

    def preadv(fd: int, bufs: list[memoryview], offset: int) -> int:
        if os.fstat(fd).st_ino == bad_ino and offset >= (8 << 20):
            raise OSError(5, "Input/output error")
        return real(fd, bufs, offset)

    monkeypatch.setattr(readback.os, "preadv", preadv)
    states = readback.verify(source, targets)
    assert [s.ok for s in states] == [True, False, True]
    assert "read-back failed: Input/output error" in (states[1].error or "")
    assert states[0].verified_ok is True and states[2].verified_ok is True
