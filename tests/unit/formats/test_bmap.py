"""Block maps: built from holes, byte-identical to bmaptool's, read back with checks."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.errors import DeelitError
from provisioner.formats import bmap as bm

B = bm.BLOCK_SIZE


def sparse_image(path: Path, size: int, spans: list[tuple[int, int]], seed: int = 1) -> Path:
    """A sparse file of `size` bytes with pseudo-random data at (offset, length) spans."""
    with path.open("wb") as f:
        f.truncate(size)
        for i, (off, length) in enumerate(spans):
            f.seek(off)
            f.write((hashlib.sha256(f"{seed}-{i}".encode()).digest() * (length // 32 + 1))[:length])
        f.truncate(size)
    return path


def test_create_maps_only_data_blocks_with_range_checksums(tmp_path: Path) -> None:
    img = sparse_image(tmp_path / "a.img", 64 * B, [(5 * B, 3 * B), (20 * B + 100, 10)])
    m = bm.create(img)
    assert [(r.first, r.last) for r in m.ranges] == [(5, 7), (20, 20)]
    data = img.read_bytes()
    for r in m.ranges:
        off, length = m.extent(r)
        assert r.checksum == hashlib.sha256(data[off:off + length]).hexdigest()
    assert m.mapped_blocks == 4
    assert m.blocks_count == 64


def test_last_partial_block_is_clipped_at_image_end(tmp_path: Path) -> None:
    size = 10 * B + 123
    img = sparse_image(tmp_path / "p.img", size, [(10 * B, 123)])
    m = bm.create(img)
    assert [(r.first, r.last) for r in m.ranges] == [(10, 10)]
    assert m.extent(m.ranges[0]) == (10 * B, 123)
    assert m.blocks_count == 11
    assert m.ranges[0].checksum == hashlib.sha256(img.read_bytes()[10 * B:]).hexdigest()


def test_xml_is_byte_identical_to_bmaptool_create(tmp_path: Path) -> None:
    if not shutil.which("bmaptool"):
        pytest.skip("bmaptool (Debian bmap-tools) is not installed")
    img = sparse_image(tmp_path / "b.img", 3000 * B + 77,
                       [(0, B), (7 * B, 40 * B), (900 * B, 5), (3000 * B, 77)])
    ours = bm.create(img).to_xml()
    theirs = subprocess.run(["bmaptool", "create", str(img)], check=True,
                            capture_output=True, text=True).stdout
    assert ours == theirs


def test_loads_what_bmaptool_writes(tmp_path: Path) -> None:
    if not shutil.which("bmaptool"):
        pytest.skip("bmaptool (Debian bmap-tools) is not installed")
    img = sparse_image(tmp_path / "c.img", 512 * B, [(B, 2 * B), (300 * B, 50 * B)])
    out = tmp_path / "c.bmap"
    subprocess.run(["bmaptool", "create", "-o", str(out), str(img)], check=True)
    assert bm.load(out) == bm.create(img)


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    img = sparse_image(tmp_path / "d.img", 100 * B, [(3 * B, B), (50 * B, 20 * B)])
    m = bm.create(img)
    m.write(tmp_path / "d.bmap")
    assert bm.load(tmp_path / "d.bmap") == m
    assert not (tmp_path / "d.bmap.tmp").exists()


def test_corrupted_map_is_refused(tmp_path: Path) -> None:
    img = sparse_image(tmp_path / "e.img", 100 * B, [(3 * B, B)])
    path = tmp_path / "e.bmap"
    bm.create(img).write(path)
    text = path.read_text()
    path.write_text(text.replace("<Range chksum", "<Range  chksum"))  # harmless to XML
    with pytest.raises(DeelitError, match="corrupt"):
        bm.load(path)


def test_map_with_range_outside_the_image_is_refused(tmp_path: Path) -> None:
    m = bm.BlockMap(image_size=10 * B, ranges=[bm.Range(8, 12, "0" * 64)])
    path = tmp_path / "f.bmap"
    path.write_text(m.to_xml())
    with pytest.raises(DeelitError, match="outside the image"):
        bm.load(path)


def test_not_xml_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "g.bmap"
    path.write_text("not a map")
    with pytest.raises(DeelitError, match="bmap create"):
        bm.load(path)


def test_fully_sparse_image_has_no_ranges(tmp_path: Path) -> None:
    img = tmp_path / "h.img"
    with img.open("wb") as f:
        f.truncate(1 << 20)
    m = bm.create(img)
    assert m.ranges == []
    (tmp_path / "h.bmap").write_text(m.to_xml())
    assert bm.load(tmp_path / "h.bmap").mapped_blocks == 0


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.lists(st.integers(min_value=0, max_value=255), max_size=30),
       tail=st.integers(min_value=0, max_value=B - 1))
def test_map_covers_exactly_the_written_blocks(tmp_path: Path, blocks: list[int],
                                              tail: int) -> None:
    size = 256 * B + tail
    img = tmp_path / "r.img"
    img.unlink(missing_ok=True)
    sparse_image(img, size, [(b * B, B) for b in blocks])
    m = bm.create(img)
    mapped = {b for r in m.ranges for b in range(r.first, r.last + 1)}
    # ext4 allocates whole blocks, so the map is exactly the set of written blocks
    assert mapped == set(blocks)
    assert all(a.last + 1 < b.first for a, b in zip(m.ranges, m.ranges[1:], strict=False))
    path = tmp_path / "r.bmap"
    m.write(path)
    assert bm.load(path) == m
    assert os.path.getsize(img) == size
