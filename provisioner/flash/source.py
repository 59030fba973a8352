"""The image to flash: raw or `.zst`, with its block map found beside it, given, or made now."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

from provisioner.errors import DeelitError
from provisioner.formats import bmap as bm

# Ranges of a map made without checksums are split so a mismatch points at a small region.
_SPLIT_BLOCKS = (64 << 20) // bm.BLOCK_SIZE


@dataclass
class Source:
    path: Path
    bmap: bm.BlockMap
    compressed: bool
    bmap_path: Path | None  # None: the map was made from the image's holes just now

    def open(self) -> SourceReader:
        return SourceReader(self)


def bmap_candidates(image: Path) -> list[Path]:
    """Where a map may sit: NAME.img.zst.bmap, NAME.img.bmap, NAME.bmap (the build's choice)."""
    names = [image.name + ".bmap"]
    stem = image.name
    for suffix in (".zst", ".img"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            names.append(stem + ".bmap")
    return [image.with_name(n) for n in dict.fromkeys(names)]


def open_source(image: Path, bmap_path: Path | None = None) -> Source:
    if not image.is_file():
        raise DeelitError(f"image {image} does not exist or is not a regular file")
    compressed = image.name.endswith(".zst")
    if bmap_path is None:
        bmap_path = next((p for p in bmap_candidates(image) if p.is_file()), None)
    if bmap_path is not None:
        block_map = bm.load(bmap_path)
        _check_size(image, compressed, block_map, bmap_path)
        return Source(image, block_map, compressed, bmap_path)
    if not compressed:
        return Source(image, split(bm.create(image, checksums=False)), False, None)
    size = _zst_content_size(image)
    if size is None:
        raise DeelitError(f"{image} does not record its uncompressed size and has no .bmap "
                          f"beside it; give one with --bmap FILE")
    # Without a map every block of a compressed image must be written.
    whole = bm.BlockMap(image_size=size, ranges=[bm.Range(0, -(-size // bm.BLOCK_SIZE) - 1)])
    return Source(image, split(whole), True, None)


def split(block_map: bm.BlockMap, blocks: int = _SPLIT_BLOCKS) -> bm.BlockMap:
    """Same map with long checksum-less ranges cut into pieces (for finer verify reports)."""
    out: list[bm.Range] = []
    for r in block_map.ranges:
        if r.checksum:
            out.append(r)
            continue
        for first in range(r.first, r.last + 1, blocks):
            out.append(bm.Range(first, min(first + blocks - 1, r.last)))
    return bm.BlockMap(block_map.image_size, out, block_map.block_size,
                       block_map.checksum_type, block_map.source)


def _zst_content_size(image: Path) -> int | None:
    with image.open("rb") as f:
        head = f.read(18)
    try:
        size = zstandard.frame_content_size(head)
    except zstandard.ZstdError as exc:
        raise DeelitError(f"{image} is not a zstd file: {exc}") from exc
    return size if size >= 0 else None


def _check_size(image: Path, compressed: bool, block_map: bm.BlockMap, bmap_path: Path) -> None:
    actual = _zst_content_size(image) if compressed else image.stat().st_size
    if actual is not None and actual != block_map.image_size:
        raise DeelitError(f"bmap {bmap_path} describes an image of {block_map.image_size} bytes "
                          f"but {image} holds {actual}; use the .bmap built with this image")


class SourceReader:
    """Reads mapped spans in ascending order, each exactly once (zstd is a forward stream)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._fd = os.open(source.path, os.O_RDONLY)
        self._stream: zstandard.ZstdDecompressionReader | None = None
        self._pos = 0
        if source.compressed:
            raw = os.fdopen(os.dup(self._fd), "rb")
            reader = zstandard.ZstdDecompressor().stream_reader(
                raw, read_size=4 << 20, read_across_frames=True, closefd=True)
            self._stream = reader
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def read_into(self, buf: memoryview, offset: int) -> None:
        """Fills `buf` with the image bytes at `offset`, or raises naming the short image."""
        if self._stream is None:
            got = 0
            while got < len(buf):
                n = os.preadv(self._fd, [buf[got:]], offset + got)
                if n == 0:
                    raise DeelitError(f"image {self.source.path} ends at byte {offset + got}, "
                                      f"before the end of its mapped data")
                got += n
            return
        if offset < self._pos:
            raise DeelitError("internal: compressed image read out of order")
        self._skip(offset - self._pos)
        got = 0
        while got < len(buf):
            n = self._stream.readinto(buf[got:])
            if not n:
                raise DeelitError(f"compressed image {self.source.path} ends at byte "
                                  f"{offset + got}, before the end of its mapped data")
            got += n
        self._pos = offset + got

    def _skip(self, count: int) -> None:
        assert self._stream is not None
        scratch = bytearray(min(count, 4 << 20))
        view = memoryview(scratch)
        while count:
            n = self._stream.readinto(view[: min(count, len(scratch))])
            if not n:
                raise DeelitError(f"compressed image {self.source.path} is shorter than its map")
            count -= n
            self._pos += n

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        os.close(self._fd)


def spans(block_map: bm.BlockMap, chunk: int) -> Iterator[tuple[int, int, int]]:
    """(range index, offset, length) pieces of at most `chunk` bytes, in image order."""
    for i, r in enumerate(block_map.ranges):
        offset, length = block_map.extent(r)
        end = offset + length
        while offset < end:
            n = min(chunk, end - offset)
            yield i, offset, n
            offset += n
