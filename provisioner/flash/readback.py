"""Reads flashed targets back past the page cache and checks every mapped range.

All targets are read back together, chunk by chunk, each by its own thread past the page
cache (O_DIRECT, else fadvise DONTNEED). Copies of one image are identical when they are good,
so one SHA-256 per chunk is enough for all of them: the chunk of one target is hashed and the
others are compared with it byte for byte (memcmp, several times faster than hashing). A
target whose chunk differs takes a copy of the shared hash state at that point and hashes its
own bytes from then on, so every target's range checksum is still exactly the SHA-256 of what
it holds. Used after writing (writer.py) and alone (`deelit flash --verify-only`).
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from provisioner.flash.policy import Target
from provisioner.flash.source import Source, spans
from provisioner.flash.state import ALIGN, CHUNK, TargetState
from provisioner.formats import bmap as bm


def _memcmp() -> Callable[[int, int, int], int] | None:
    """libc's memcmp (it releases the GIL), or None where ctypes cannot load it."""
    try:
        import ctypes

        fn = ctypes.CDLL(None).memcmp
    except (ImportError, OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return fn


_MEMCMP = _memcmp()


class _Buffer:
    """A page-aligned read buffer (O_DIRECT) with its address for memcmp."""

    def __init__(self, size: int) -> None:
        self.map = mmap.mmap(-1, size)
        self._pin: object = None
        self.address = 0
        if _MEMCMP is not None:
            import ctypes

            self._pin = ctypes.c_char.from_buffer(self.map)  # holds an export on the map
            self.address = ctypes.addressof(self._pin)

    def same(self, other: _Buffer, n: int) -> bool:
        if _MEMCMP is not None:
            return _MEMCMP(self.address, other.address, n) == 0
        step = 64 << 10  # slices small enough to stay in the CPU cache
        return all(self.map[i:i + step] == other.map[i:i + step] for i in range(0, n, step))

    def close(self) -> None:
        self._pin = None
        self.map.close()


class _TargetReader(threading.Thread):
    """Reads one target's mapped spans past the page cache, up to two chunks ahead."""

    def __init__(self, block_map: bm.BlockMap, state: TargetState) -> None:
        super().__init__(name=f"read {state.target.path}", daemon=True)
        self.map = block_map
        self.state = state
        path = state.target.path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            self.direct = True
        except OSError:
            self.fd = os.open(path, os.O_RDONLY)
            self.direct = False
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean after fsync
        self.bufs = [_Buffer(CHUNK) for _ in range(3)]
        self.free: queue.Queue[_Buffer] = queue.Queue()
        for b in self.bufs:
            self.free.put(b)
        self.filled: queue.Queue[tuple[_Buffer, int] | BaseException] = queue.Queue()
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            for _, offset, n in spans(self.map, CHUNK):
                buf = self.free.get()
                if self.stop.is_set():
                    return
                size = -(-n // ALIGN) * ALIGN if self.direct else n  # O_DIRECT: whole blocks
                with memoryview(buf.map) as view:
                    got = os.preadv(self.fd, [view[:size]], offset)
                self.filled.put((buf, got))
        except BaseException as exc:  # handed to the comparing side
            self.filled.put(exc)

    def close(self) -> None:
        self.stop.set()
        self.free.put(self.bufs[0])  # unblocks the thread if it waits for a buffer
        if self.ident is not None:  # started
            self.join()
        os.close(self.fd)
        for b in self.bufs:
            b.close()


def read_back(block_map: bm.BlockMap, expected: list[str], states: list[TargetState],
              cancel: threading.Event | None = None) -> None:
    """Reads every mapped range of every target past the page cache and compares checksums.

    Sets each state's `mismatches` (the differing ranges) and `verify_seconds`; a target
    that cannot be read gets an `error` and the others carry on.
    """
    start = time.monotonic()
    readers: list[_TargetReader] = []
    for s in states:
        s.phase = "verify"
        try:
            readers.append(_TargetReader(block_map, s))
        except OSError as exc:
            _read_failed(s, exc, start)
    for r in readers:
        r.start()
    live = list(readers)
    bad: dict[int, set[int]] = {id(r): set() for r in readers}  # range indexes per reader
    kind = block_map.checksum_type
    try:
        current = -1
        shared = hashlib.new(kind)
        own: dict[int, Any] = {}  # id(reader) -> its own hash object once it differed
        short: set[int] = set()
        for index, _, n in spans(block_map, CHUNK):
            if index != current:
                if current >= 0:
                    _close_range(current, expected, live, shared, own, short, bad)
                current, shared, own, short = index, hashlib.new(kind), {}, set()
            items: list[tuple[_TargetReader, _Buffer, int]] = []
            for r in list(live):
                if cancel is not None and cancel.is_set():
                    raise OSError(errno.ECANCELED, "interrupted")
                item = r.filled.get()
                if isinstance(item, BaseException):
                    live.remove(r)
                    _read_failed(r.state, item, start)
                    continue
                items.append((r, *item))
            ref = next((b for r, b, got in items
                        if got >= n and id(r) not in own and id(r) not in short), None)
            for r, b, got in items:
                key = id(r)
                if got < n:  # a target shorter than the image cannot match
                    short.add(key)
                elif key in short:
                    pass
                elif key in own:
                    with memoryview(b.map) as view:
                        own[key].update(view[:n])
                elif ref is not None and b is not ref and not b.same(ref, n):
                    own[key] = shared.copy()  # the bytes before this chunk were the shared ones
                    with memoryview(b.map) as view:
                        own[key].update(view[:n])
            if ref is not None:
                with memoryview(ref.map) as view:
                    shared.update(view[:n])
            for r, b, _ in items:
                r.free.put(b)
                r.state.verified += n
        if current >= 0:
            _close_range(current, expected, live, shared, own, short, bad)
    except OSError as exc:
        for r in live:
            _read_failed(r.state, exc, start)
        live = []
    finally:
        for r in readers:
            r.close()
    seconds = time.monotonic() - start
    for r in live:
        s = r.state
        s.verify_seconds = seconds
        s.mismatches = [(rg.first, rg.last) for i, rg in enumerate(block_map.ranges)
                        if i in bad[id(r)]]


def _close_range(index: int, expected: list[str], live: list[_TargetReader], shared: Any,
                 own: dict[int, Any], short: set[int], bad: dict[int, set[int]]) -> None:
    shared_digest: str | None = None
    for r in live:
        key = id(r)
        if key in short:
            bad[key].add(index)
            continue
        if key in own:
            digest = own[key].hexdigest()
        else:
            if shared_digest is None:
                shared_digest = shared.hexdigest()
            digest = shared_digest
        if digest != expected[index]:
            bad[key].add(index)


def _read_failed(s: TargetState, exc: BaseException, start: float) -> None:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    s.error = f"read-back failed: {reason}; replace the stick"
    s.phase = "failed"
    s.verify_seconds = time.monotonic() - start


def check_targets(block_map: bm.BlockMap, expected: list[str], states: list[TargetState],
                  cancel: threading.Event) -> None:
    """Reads back the targets not failed yet; a target with a differing range fails, named."""
    live = [s for s in states if s.error is None]
    read_back(block_map, expected, live, cancel)
    for s in live:
        if s.error is not None:
            continue
        s.verified_ok = not s.mismatches
        if s.mismatches:
            first, last = s.mismatches[0]
            s.error = (f"verify failed: {len(s.mismatches)} range(s) differ from the image, "
                       f"first at blocks {first}-{last}; flash it again or replace the stick")
            s.phase = "failed"


def verify(source: Source, targets: list[Target]) -> list[TargetState]:
    """Checks targets against an image without writing (`deelit flash --verify-only`)."""
    block_map = source.bmap
    expected = [r.checksum or "" for r in block_map.ranges]
    if not block_map.has_checksums():
        expected = _source_checksums(source)
    states = []
    for t in targets:
        s = TargetState(t, block_map.mapped_bytes)
        s.written = s.total
        states.append(s)
    check_targets(block_map, expected, states, threading.Event())
    for s in states:
        if s.error is None:
            s.phase = "done"
    return states


def _source_checksums(source: Source) -> list[str]:
    block_map = source.bmap
    out = []
    buf = mmap.mmap(-1, CHUNK)
    reader = source.open()
    try:
        for r in block_map.ranges:
            h = hashlib.new(block_map.checksum_type)
            offset, length = block_map.extent(r)
            end = offset + length
            while offset < end:
                n = min(CHUNK, end - offset)
                view = memoryview(buf)[:n]
                reader.read_into(view, offset)
                h.update(view)
                view.release()
                offset += n
            out.append(h.hexdigest())
    finally:
        reader.close()
        buf.close()
    return out
