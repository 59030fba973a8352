"""Write the target disk image block-level: only the mapped ranges, verified, from HTTP or a stick.

Sources: the station over HTTP (one Range request per piece of a mapped range, against the
raw image it serves) or files on the USB stick (`NAME.img.zst` streamed through zstd, or a raw
`NAME.img`). Every piece is checked against the block map's SHA-256 of its range as it
arrives, and after writing every range is read back past the page cache and checked again.

Safety: the target must be a whole disk, not in use (mounted, swap, holders: the boot medium
is mounted, so it is refused), opened O_EXCL, and at least as large as the image. The first
MiB (partition tables, boot code) is zeroed first and written last, so an interrupted install
leaves a disk that boots nothing rather than half an image. A larger disk gets its backup GPT
moved to its end; the image grows its root to fill the disk on first boot.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from provisioner.agent.blockdev import DiskIdentity, Safety, identify, refuse_if_in_use
from provisioner.errors import DeelitError
from provisioner.formats import bmap as bm

PIECE = 4 << 20  # bytes per HTTP request / write
HEAD = 1 << 20  # partition tables and boot code live here: zeroed first, written last
ALIGN = 4096
Progress = Callable[[int, int], None]  # bytes done, bytes total


@dataclass(frozen=True)
class Span:
    """A piece of one mapped range; `last` marks the piece that completes the range."""

    offset: int
    length: int
    range_index: int
    last: bool


def spans(block_map: bm.BlockMap, piece: int = PIECE) -> list[Span]:
    """Every mapped byte as pieces in disk order, clipped to the image size; no piece
    straddles HEAD, so the head can be held back and written last."""
    out = []
    for i, r in enumerate(block_map.ranges):
        start = r.first * block_map.block_size
        end = min((r.last + 1) * block_map.block_size, block_map.image_size)
        while start < end:
            limit = HEAD if start < HEAD else end
            n = min(piece, end - start, limit - start)
            out.append(Span(start, n, i, start + n >= end))
            start += n
    return out


# --- sources -----------------------------------------------------------------------------------


class HttpSource:
    """The station's raw image; pieces by HTTP Range, retried on network errors."""

    def __init__(self, base: str, token: str | None = None, attempts: int = 5) -> None:
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.attempts = attempts

    def _get(self, path: str, headers: dict[str, str] | None = None) -> bytes:
        req = urllib.request.Request(self.base + path, headers={**self.headers, **(headers or {})})
        delay = 1.0
        for attempt in range(self.attempts):
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    if headers and "Range" in headers and resp.status != 206:
                        raise DeelitError(f"{self.base}{path}: the server ignored the Range "
                                          f"request (HTTP {resp.status})")
                    return bytes(resp.read())
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == self.attempts - 1:
                    raise DeelitError(f"{self.base}{path}: HTTP {exc.code} {exc.reason}") from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.attempts - 1:
                    raise DeelitError(f"{self.base}{path}: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 30)
        raise AssertionError("unreachable")

    def block_map(self) -> bm.BlockMap:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "disk.bmap"
            path.write_bytes(self._get("/image/disk.bmap"))
            return bm.load(path)

    def pieces(self, order: list[Span]) -> Iterator[tuple[Span, bytes]]:
        for s in order:
            data = self._get("/image/disk.img", {"Range": f"bytes={s.offset}-{s.offset + s.length - 1}"})
            if len(data) != s.length:
                raise DeelitError(f"{self.base}/image/disk.img: {len(data)} bytes for a "
                                  f"{s.length}-byte range at {s.offset}")
            yield s, data


class FileSource:
    """An image on the stick: raw (random access) or .zst (one sequential pass through zstd)."""

    def __init__(self, image: Path, bmap_path: Path) -> None:
        self.image, self.bmap_path = image, bmap_path

    def block_map(self) -> bm.BlockMap:
        return bm.load(self.bmap_path)

    def pieces(self, order: list[Span]) -> Iterator[tuple[Span, bytes]]:
        if not self.image.name.endswith(".zst"):
            with self.image.open("rb") as f:
                for s in order:
                    f.seek(s.offset)
                    yield s, f.read(s.length)
            return
        # A zstd stream cannot seek: one pass in disk order, skipping the holes.
        proc = subprocess.Popen(["zstd", "-q", "-d", "-c", str(self.image)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        pos = 0
        try:
            for s in order:
                _skip(proc.stdout, s.offset - pos)
                data = _read_exactly(proc.stdout, s.length)
                if len(data) != s.length:
                    raise DeelitError(f"{self.image}: ends before the block map's range at "
                                      f"{s.offset}: truncated image?")
                pos = s.offset + s.length
                yield s, data
        finally:
            proc.stdout.close()
            proc.kill()
            proc.wait()


def _skip(stream: object, n: int) -> None:
    while n > 0:
        chunk = stream.read(min(n, 1 << 20))  # type: ignore[attr-defined]
        if not chunk:
            return
        n -= len(chunk)


def _read_exactly(stream: object, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = stream.read(n - got)  # type: ignore[attr-defined]
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


# --- target ------------------------------------------------------------------------------------


@dataclass
class InstallResult:
    device: str
    image_size: int
    disk_size: int
    bytes_written: int
    ranges: int
    seconds: float
    verified: bool
    gpt_relocated: bool


def check_target(device: str, image_size: int, safety: Safety) -> DiskIdentity:
    ident = identify(device, safety)
    refuse_if_in_use(ident, safety)
    if ident.size_bytes < image_size:
        raise DeelitError(
            f"refusing {device}: {ident.size_bytes / 1e9:.1f} GB is smaller than the image "
            f"({image_size / 1e9:.1f} GB); this laptop needs a larger disk"
        )
    return ident


def _open_exclusive(device: str) -> int:
    try:  # O_EXCL on a block device fails while anything (a mount, LVM) holds it
        return os.open(device, os.O_RDWR | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        raise DeelitError(f"refusing {device}: cannot open it exclusively ({exc.strerror}); "
                          "it is in use") from exc


def install(
    source: HttpSource | FileSource,
    device: str,
    *,
    safety: Safety | None = None,
    progress: Progress | None = None,
) -> InstallResult:
    safety = safety or Safety()
    started = time.monotonic()
    block_map = source.block_map()
    if block_map.checksum_type != "sha256" or any(r.checksum is None for r in block_map.ranges):
        raise DeelitError("the block map has no SHA-256 per range: cannot verify what is written")
    ident = check_target(device, block_map.image_size, safety)
    order = spans(block_map)
    total = sum(s.length for s in order)
    fd = _open_exclusive(device)
    done = 0
    try:
        os.pwrite(fd, bytes(min(HEAD, ident.size_bytes)), 0)  # no old table survives a crash
        os.fsync(fd)
        hashers: dict[int, hashlib._Hash] = {}
        head: list[tuple[int, bytes]] = []  # at most HEAD bytes, written last
        for s, data in source.pieces(order):
            h = hashers.setdefault(s.range_index, hashlib.sha256())
            h.update(data)
            if s.last:
                want = block_map.ranges[s.range_index].checksum
                if h.hexdigest() != want:
                    raise DeelitError(f"range {s.range_index} of the image arrived corrupted "
                                      f"(sha256 {h.hexdigest()[:12]}, map says {str(want)[:12]})")
                del hashers[s.range_index]
            if s.offset < HEAD:
                head.append((s.offset, data))
            else:
                os.pwrite(fd, data, s.offset)
            done += s.length
            if progress:
                progress(done, total * 2)
        os.fsync(fd)
        for offset, data in head:  # the partition table last: only a complete image boots
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    read_back(device, block_map, order, lambda n: progress(total + n, total * 2) if progress else None)
    relocated = False
    if ident.size_bytes > block_map.image_size:
        relocated = relocate_backup_gpt(device)
    return InstallResult(device=device, image_size=block_map.image_size, disk_size=ident.size_bytes,
                         bytes_written=total, ranges=len(block_map.ranges),
                         seconds=time.monotonic() - started, verified=True,
                         gpt_relocated=relocated)


def read_back(device: str, block_map: bm.BlockMap, order: list[Span],
              progress: Callable[[int], None] | None = None) -> None:
    """Every mapped range read from the medium (O_DIRECT, else cache dropped) against its hash."""
    try:
        fd, direct = os.open(device, os.O_RDONLY | os.O_DIRECT), True
    except OSError:
        fd, direct = os.open(device, os.O_RDONLY), False
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    buf = mmap.mmap(-1, PIECE + ALIGN)  # page-aligned, as O_DIRECT needs
    done = 0
    try:
        hashers: dict[int, hashlib._Hash] = {}
        for s in order:
            start = s.offset - s.offset % ALIGN
            want_len = s.offset + s.length - start
            size = -(-want_len // ALIGN) * ALIGN if direct else want_len
            view = memoryview(buf)[:size]
            n = os.preadv(fd, [view], start)
            data = bytes(view[s.offset - start:min(n, want_len)])
            view.release()
            h = hashers.setdefault(s.range_index, hashlib.sha256())
            h.update(data)
            if s.last:
                r = block_map.ranges[s.range_index]
                if h.hexdigest() != r.checksum:
                    raise DeelitError(
                        f"{device}: blocks {r.first}-{r.last} read back differently from what was "
                        "written: the disk is failing; do not use it"
                    )
                del hashers[s.range_index]
            done += s.length
            if progress:
                progress(done)
    finally:
        buf.close()
        os.close(fd)


def relocate_backup_gpt(device: str) -> bool:
    """A GPT image on a larger disk: move the backup header to the disk's end (util-linux)."""
    sfdisk = shutil.which("sfdisk")
    if sfdisk is None:
        return False
    probe = subprocess.run([sfdisk, "--json", device], capture_output=True, text=True, check=False)
    if '"label": "gpt"' not in probe.stdout and '"label":"gpt"' not in probe.stdout:
        return False
    proc = subprocess.run([sfdisk, "--quiet", "--relocate", "gpt-bak-std", device],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DeelitError(f"sfdisk could not move the backup GPT of {device}: {proc.stderr.strip()}")
    return True


# --- which disk -------------------------------------------------------------------------------


def choose_target(disks: list[dict[str, object]], image_size: int, in_use: set[str]) -> str:
    """The one internal disk to install to; anything ambiguous is refused, never guessed.

    `disks` are lsblk rows (name, path, size, tran, rm, type). USB and removable disks (the
    stick), disks in use (the boot medium) and too-small disks are never candidates.
    """
    candidates, reasons = [], []
    for d in disks:
        name, path = str(d.get("name")), str(d.get("path") or f"/dev/{d.get('name')}")
        if d.get("type") != "disk" or name.startswith(("loop", "zram", "ram", "sr")):
            continue
        if d.get("tran") == "usb" or d.get("rm") in (True, 1, "1"):
            reasons.append(f"{path}: removable/USB")
        elif name in in_use:
            reasons.append(f"{path}: in use (boot medium)")
        elif int(str(d.get("size") or 0)) < image_size:
            reasons.append(f"{path}: smaller than the image")
        else:
            candidates.append(path)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DeelitError("no internal disk to install to (" + ("; ".join(reasons) or "none found")
                          + ")")
    raise DeelitError(f"several internal disks ({', '.join(candidates)}): name one with "
                      "deelit.disk=/dev/... on the kernel command line")
