"""Block maps: which blocks of a raw image hold data, in bmaptool's XML format 2.0.

The map is built from the image's holes (SEEK_DATA/SEEK_HOLE), like `bmaptool create`, and
written in the same layout with the same checksums (SHA-256 per range, plus a checksum of the
file itself), so bmaptool reads deelit's maps and deelit reads bmaptool's.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.errors import DeelitError

BLOCK_SIZE = 4096
FORMAT_VERSION = "2.0"
_READ_CHUNK = 4 << 20

_HEADER = """<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->

"""


@dataclass(frozen=True)
class Range:
    """Blocks `first`..`last` (inclusive, as in the XML) and the checksum of their bytes."""

    first: int
    last: int
    checksum: str | None = None

    @property
    def blocks(self) -> int:
        return self.last - self.first + 1


@dataclass
class BlockMap:
    """The mapped ranges of one raw image. Plain data: the installer agent reuses it over HTTP."""

    image_size: int
    ranges: list[Range]
    block_size: int = BLOCK_SIZE
    checksum_type: str = "sha256"
    source: Path | None = field(default=None, compare=False)

    @property
    def blocks_count(self) -> int:
        return -(-self.image_size // self.block_size)

    @property
    def mapped_blocks(self) -> int:
        return sum(r.blocks for r in self.ranges)

    @property
    def mapped_bytes(self) -> int:
        """Bytes to copy: mapped blocks, the last one clipped at the end of the image."""
        return sum(self.extent(r)[1] for r in self.ranges)

    def extent(self, r: Range) -> tuple[int, int]:
        """(offset, length) in bytes of a range; the image's last block may be partial."""
        start = r.first * self.block_size
        end = min((r.last + 1) * self.block_size, self.image_size)
        return start, end - start

    def has_checksums(self) -> bool:
        return bool(self.ranges) and all(r.checksum for r in self.ranges)

    def to_xml(self) -> str:
        """bmaptool's layout, byte for byte, with the file checksum filled in."""
        cs_len = len(hashlib.new(self.checksum_type).hexdigest())
        percent = self.mapped_blocks * 100.0 / self.blocks_count if self.blocks_count else 0.0
        lines = [
            _HEADER,
            f'<bmap version="{FORMAT_VERSION}">\n',
            f"    <!-- Image size in bytes: {human_size(self.image_size)} -->\n",
            f"    <ImageSize> {self.image_size} </ImageSize>\n\n",
            "    <!-- Size of a block in bytes -->\n",
            f"    <BlockSize> {self.block_size} </BlockSize>\n\n",
            "    <!-- Count of blocks in the image file -->\n",
            f"    <BlocksCount> {self.blocks_count} </BlocksCount>\n\n",
            "    <!-- Count of mapped blocks: "
            f"{human_size(self.mapped_blocks * self.block_size)} or {percent:.1f}%",
            # bmaptool pads these two fields to fixed widths before it knows the values
            " " * (len(human_size(self.image_size)) + 6 - len(f"{percent:.1f}%")
                   - len(human_size(self.mapped_blocks * self.block_size)) + 3),
            "-->\n",
            f"    <MappedBlocksCount> {self.mapped_blocks}",
            " " * (len(str(self.blocks_count)) - len(str(self.mapped_blocks)) + 1),
            "</MappedBlocksCount>\n\n",
            "    <!-- Type of checksum used in this file -->\n",
            f"    <ChecksumType> {self.checksum_type} </ChecksumType>\n\n",
            "    <!-- The checksum of this bmap file. When it is calculated, the value of\n",
            '         the checksum has be zero (all ASCII "0" symbols).  -->\n',
            f"    <BmapFileChecksum> {'0' * cs_len} </BmapFileChecksum>\n\n",
            "    <!-- The block map which consists of elements which may either be a\n",
            "         range of blocks or a single block. The 'chksum' attribute\n",
            "         (if present) is the checksum of this blocks range. -->\n",
            "    <BlockMap>\n",
        ]
        for r in self.ranges:
            attr = f' chksum="{r.checksum}"' if r.checksum else ""
            span = f"{r.first}-{r.last}" if r.first != r.last else f"{r.first}"
            lines.append(f"        <Range{attr}> {span} </Range>\n")
        lines.append("    </BlockMap>\n</bmap>\n")
        text = "".join(lines)
        digest = hashlib.new(self.checksum_type, text.encode()).hexdigest()
        return text.replace("0" * cs_len, digest, 1)

    def write(self, path: Path) -> None:
        """Writes the map atomically (a half-written map would be read as corrupt)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_xml())
        os.replace(tmp, path)


def human_size(size: int) -> str:
    """bmaptool's human-readable size (the XML comments must match its output)."""
    if size == 1:
        return "1 byte"
    if size < 512:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024.0
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value:.1f} EiB"


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """Byte spans [start, end) holding data, from SEEK_DATA/SEEK_HOLE (no data is read)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            if exc.errno == errno.EINVAL:  # no hole support: everything is data
                yield pos, size
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if start >= size:
            return
        yield start, end
        pos = end


def map_ranges(fd: int, size: int, block_size: int = BLOCK_SIZE) -> list[tuple[int, int]]:
    """Data extents as inclusive block ranges, merged where they touch."""
    out: list[tuple[int, int]] = []
    for start, end in data_extents(fd, size):
        first, last = start // block_size, (end - 1) // block_size
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def create(image: Path, *, checksums: bool = True, block_size: int = BLOCK_SIZE) -> BlockMap:
    """The block map of a raw image, with a SHA-256 per range (reads only the mapped data)."""
    try:
        fd = os.open(image, os.O_RDONLY)
    except OSError as exc:
        raise DeelitError(f"cannot open image {image}: {exc.strerror}") from exc
    try:
        size = os.fstat(fd).st_size
        bmap = BlockMap(image_size=size, ranges=[], block_size=block_size, source=image)
        for first, last in map_ranges(fd, size, block_size):
            r = Range(first, last)
            if checksums:
                offset, length = bmap.extent(r)
                r = Range(first, last, _checksum_span(fd, offset, length, bmap.checksum_type))
            bmap.ranges.append(r)
        return bmap
    finally:
        os.close(fd)


def _checksum_span(fd: int, offset: int, length: int, kind: str) -> str:
    h = hashlib.new(kind)
    end = offset + length
    while offset < end:
        chunk = os.pread(fd, min(_READ_CHUNK, end - offset), offset)
        if not chunk:
            raise DeelitError(f"image ended early at byte {offset}: is it still being written?")
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


_RANGE_RE = re.compile(r"^\s*(\d+)(?:\s*-\s*(\d+))?\s*$")


def load(path: Path) -> BlockMap:
    """Reads a bmap file (format 1.3 with SHA-1, 1.4/2.x with ChecksumType) and checks it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DeelitError(f"cannot read bmap {path}: {exc.strerror}") from exc
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise DeelitError(f"bmap {path} is not valid XML ({exc}); recreate it with "
                          f"`deelit bmap create IMAGE`") from exc
    version = root.get("version", "")
    try:
        major, minor = (int(p) for p in version.split(".", 1))
    except ValueError:
        raise DeelitError(f"bmap {path} has no usable version attribute ({version!r})") from None
    if major > 2 or (major == 1 and minor < 3):
        raise DeelitError(f"bmap {path} has format {version}; deelit reads 1.3 to 2.x")
    if major == 1 and minor == 3:
        cs_type, cs_attr, cs_tag = "sha1", "sha1", "BmapFileSHA1"
    else:
        cs_type, cs_attr, cs_tag = _text(root, "ChecksumType", path), "chksum", "BmapFileChecksum"
    if cs_type not in hashlib.algorithms_available:
        raise DeelitError(f"bmap {path} uses checksum type {cs_type!r}, unknown here")

    stored = _text(root, cs_tag, path)
    zeroed = raw.replace(stored.encode(), b"0" * len(stored), 1)
    if hashlib.new(cs_type, zeroed).hexdigest() != stored:
        raise DeelitError(f"bmap {path} is corrupt: its own checksum does not match; "
                          f"download or recreate it")

    image_size = int(_text(root, "ImageSize", path))
    block_size = int(_text(root, "BlockSize", path))
    bmap = BlockMap(image_size=image_size, ranges=[], block_size=block_size,
                    checksum_type=cs_type, source=path)
    if int(_text(root, "BlocksCount", path)) != bmap.blocks_count:
        raise DeelitError(f"bmap {path} is inconsistent: BlocksCount does not match ImageSize")
    block_map = root.find("BlockMap")
    for elem in block_map if block_map is not None else []:
        m = _RANGE_RE.match(elem.text or "")
        if not m:
            raise DeelitError(f"bmap {path}: bad range {elem.text!r}")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else first
        if last < first or last >= bmap.blocks_count:
            raise DeelitError(f"bmap {path}: range {first}-{last} is outside the image")
        if bmap.ranges and first <= bmap.ranges[-1].last:
            raise DeelitError(f"bmap {path}: ranges overlap or are out of order at {first}")
        bmap.ranges.append(Range(first, last, elem.get(cs_attr)))
    if int(_text(root, "MappedBlocksCount", path)) != bmap.mapped_blocks:
        raise DeelitError(f"bmap {path} is inconsistent: MappedBlocksCount does not match")
    return bmap


def _text(root: ET.Element, tag: str, path: Path) -> str:
    elem = root.find(tag)
    if elem is None or elem.text is None:
        raise DeelitError(f"bmap {path} lacks <{tag}>")
    return elem.text.strip()
