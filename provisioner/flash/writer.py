"""Writes one image to many targets at once; read-back verification follows in readback.py.

One reader thread reads each mapped span of the source once (raw or zstd), checks it against
the map's SHA-256, and hands the same aligned buffer to one writer thread per target. Each
writer zeroes the image's first span, writes the rest, writes the first span last (so a stick
cut off midway carries no partition table and does not look usable), and flushes. Only when
every target has been written and flushed are they read back, all together (see readback.py):
reading back only after the last write also catches sticks that fake their capacity, whose
late writes overwrite early ranges. A failing target is reported; the others carry on.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from provisioner.errors import DeelitError
from provisioner.flash.policy import Target
from provisioner.flash.readback import check_targets
from provisioner.flash.source import Source, spans
from provisioner.flash.state import ALIGN, CHUNK, FlashResult, TargetState
from provisioner.formats import bmap as bm

QUEUE_DEPTH = 4  # at least this many chunks in flight between the reader and the writers
# How far the reader may run ahead of the slowest target. Reading and hashing outpace a stick,
# so the lead grows while data spans are read, and it keeps the sticks busy while the reader
# decompresses long holes of a .zst image (the tail of a disk image is often GiBs of zeros
# before the backup GPT): 256 MiB is about 1.7 s of writing at 150 MB/s.
READ_AHEAD = 256 << 20


class _Chunk:
    """One source span in a pool buffer, released when every live target has written it."""

    def __init__(self, buf: mmap.mmap, offset: int, length: int, release: Callable[[], None]):
        self.view = memoryview(buf)[:length]
        self.offset = offset
        self.length = length
        self._refs = 0
        self._lock = threading.Lock()
        self._release = release

    def share(self, n: int) -> None:
        self._refs = n
        if n == 0:
            self._release()

    def done(self) -> None:
        with self._lock:
            self._refs -= 1
            last = self._refs == 0
        if last:
            self._release()


class _Pool:
    def __init__(self, count: int, size: int) -> None:
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        for _ in range(count):
            self._free.put(mmap.mmap(-1, size))  # page-aligned, as O_DIRECT needs

    def get(self) -> mmap.mmap:
        return self._free.get()

    def put(self, buf: mmap.mmap) -> None:
        self._free.put(buf)


@dataclass
class _Handles:
    fd: int  # O_EXCL, O_DIRECT when the target takes it
    direct: bool
    plain: int  # buffered descriptor for the unaligned tail of an image


def _open_target(t: Target, image_size: int) -> _Handles:
    """Opens exclusively (nothing can mount the stick meanwhile) and re-checks its identity."""
    if t.is_file:
        flags = os.O_RDWR | os.O_CREAT
        fd = os.open(t.path, flags, 0o644)
        os.ftruncate(fd, 0)  # an image file becomes an exact copy: holes read as zeros
        os.ftruncate(fd, image_size)
    else:
        try:
            fd = os.open(t.path, os.O_RDWR | os.O_EXCL)
        except OSError as exc:
            raise DeelitError(f"{t.label}: cannot open exclusively ({exc.strerror}); "
                              f"is it mounted or in use? nothing was written") from exc
        st = os.fstat(fd)
        if (os.major(st.st_rdev), os.minor(st.st_rdev)) != t.devno:
            os.close(fd)
            raise DeelitError(f"{t.path} changed since it was checked (stick swapped?); "
                              f"nothing was written, run the command again")
    direct = True
    try:
        dfd = os.open(t.path, os.O_RDWR | os.O_DIRECT)
    except OSError:  # tmpfs and some filesystems: buffered writes, fsync, fadvise
        direct = False
        dfd = os.dup(fd)
    plain = fd
    return _Handles(dfd, direct, plain)


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view, offset = view[n:], offset + n


class _Writer(threading.Thread):
    def __init__(self, state: TargetState, handles: _Handles, head: tuple[int, int] | None,
                 cancel: threading.Event) -> None:
        super().__init__(name=f"write {state.target.path}", daemon=True)
        self.state = state
        self.h = handles
        self.head = head
        self.cancel = cancel
        self.inbox: queue.Queue[_Chunk | None] = queue.Queue()  # bounded by the buffer pool

    def run(self) -> None:
        s = self.state
        start = time.monotonic()
        s.phase = "write"
        try:
            if self.head is not None:
                zeros = mmap.mmap(-1, max(self.head[1], ALIGN))
                self._write(memoryview(zeros)[: self.head[1]], self.head[0])
                zeros.close()
        except OSError as exc:
            self._fail(f"write failed at byte {self.head[0] if self.head else 0}", exc)
        while True:
            item = self.inbox.get()
            if item is None:
                break
            try:
                if s.error is None and not self.cancel.is_set():
                    self._write(item.view, item.offset)
                    s.written += item.length
            except OSError as exc:
                self._fail(f"write failed at byte {item.offset}", exc)
            finally:
                item.done()
        if s.error is None and not self.cancel.is_set():
            s.phase = "flush"
            try:
                os.fsync(self.h.fd)
                if self.h.plain != self.h.fd:
                    os.fsync(self.h.plain)
            except OSError as exc:
                self._fail("flush failed", exc)
        s.write_seconds = time.monotonic() - start

    def _write(self, view: memoryview, offset: int) -> None:
        if self.h.direct and len(view) % ALIGN:
            _pwrite_all(self.h.plain, view, offset)  # the image's last, partial block
        else:
            _pwrite_all(self.h.fd, view, offset)

    def _fail(self, what: str, exc: OSError) -> None:
        if self.state.error is None:
            self.state.error = (f"{what}: {exc.strerror or exc} (stick removed or faulty? "
                                f"replace it and flash it again)")
            self.state.phase = "failed"


def flash(
    source: Source,
    targets: list[Target],
    *,
    verify: bool = True,
    cancel: threading.Event | None = None,
    on_start: Callable[[list[TargetState]], None] | None = None,
) -> FlashResult:
    """Writes the mapped ranges of `source` to every target, then verifies each target."""
    block_map = source.bmap
    cancel = cancel or threading.Event()
    states = [TargetState(t, block_map.mapped_bytes) for t in targets]
    handles: list[_Handles] = []
    try:
        for t in targets:  # open all before writing any: a busy stick means nothing is written
            handles.append(_open_target(t, block_map.image_size))
    except BaseException:
        _close_all(handles)
        raise
    if on_start:
        on_start(states)
    plan = list(spans(block_map, CHUNK))
    head = (plan[0][1], plan[0][2]) if plan else None
    writers = [_Writer(s, h, head, cancel) for s, h in zip(states, handles, strict=True)]
    result = FlashResult(states, verify)
    expected: list[str] = []
    try:
        for w in writers:
            w.start()
        t0 = time.monotonic()
        expected = _read_and_dispatch(source, plan, writers, cancel, result)
        result.read_seconds = time.monotonic() - t0
        for w in writers:
            w.join()
        if cancel.is_set():
            raise KeyboardInterrupt
        if result.source_error:
            for s in states:
                s.error = s.error or f"not completed: {result.source_error}"
                s.phase = "failed"
        elif verify:
            _close_all(handles)  # read-back uses its own O_DIRECT descriptors
            handles = []
            check_targets(block_map, expected, states, cancel)
        for s in states:
            if s.error is None:
                s.phase = "done"
    finally:
        cancel.set()  # writers skip what is left; then join them before closing their fds
        for w in writers:
            if w.is_alive():
                with contextlib.suppress(queue.Full):
                    w.inbox.put_nowait(None)
        for w in writers:
            if w.is_alive():
                w.join()
        _close_all(handles)
    return result


def _close_all(handles: list[_Handles]) -> None:
    for h in handles:
        for fd in {h.fd, h.plain}:
            with contextlib.suppress(OSError):
                os.close(fd)


def _read_and_dispatch(source: Source, plan: list[tuple[int, int, int]],
                       writers: list[_Writer], cancel: threading.Event,
                       result: FlashResult) -> list[str]:
    """The single reader: each span once, fanned out to the live writers and to a hasher.

    Hashing runs in its own thread so reading, hashing and writing overlap. The first span
    is dispatched last, and only once the whole image matched its map (see the module
    docstring). Returns the checksum of every range, from the map or computed here.
    """
    pool = _Pool(_pool_chunks(len(plan)), CHUNK)
    hasher = _Hasher(source.bmap, plan, result)
    hasher.start()
    held: _Chunk | None = None
    reader = source.open()
    try:
        for n, (_, offset, length) in enumerate(plan):
            if cancel.is_set() or result.source_error:
                break
            buf = pool.get()
            chunk = _Chunk(buf, offset, length, functools.partial(pool.put, buf))
            try:
                reader.read_into(chunk.view, offset)
            except (DeelitError, OSError) as exc:
                pool.put(buf)
                result.source_error = f"reading the image failed: {exc}"
                break
            if n == 0:
                chunk.share(2)  # the hasher, and this function until it dispatches it
                hasher.inbox.put(chunk)
                held = chunk
                continue
            _fan_out(chunk, writers, hasher)
        hasher.inbox.put(None)
        hasher.join()  # every range checked before the head makes the copy look usable
        if held is not None:
            if result.source_error or cancel.is_set():
                held.done()
            else:
                _fan_out_held(held, writers)
    finally:
        reader.close()
        if hasher.is_alive():
            hasher.inbox.put(None)
        for w in writers:
            w.inbox.put(None)
    return hasher.expected


def _pool_chunks(span_count: int) -> int:
    """Buffers for the read-ahead: READ_AHEAD, fewer for a small image or little free memory."""
    budget = READ_AHEAD
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) << 10 for line in f
                         if line.startswith("MemAvailable:"))
        budget = min(budget, avail // 4)
    return max(QUEUE_DEPTH * 2 + 1, min(budget // CHUNK, span_count))


class _Hasher(threading.Thread):
    """Hashes the source per range, checks it against the map, records the checksums."""

    def __init__(self, block_map: bm.BlockMap, plan: list[tuple[int, int, int]],
                 result: FlashResult) -> None:
        super().__init__(name="hash source", daemon=True)
        self.map = block_map
        self.index = [i for i, _, _ in plan]
        self.result = result
        self.expected = [r.checksum or "" for r in block_map.ranges]
        self.inbox: queue.Queue[_Chunk | None] = queue.Queue()

    def run(self) -> None:
        h = hashlib.new(self.map.checksum_type)
        for i in self.index:
            chunk = self.inbox.get()
            if chunk is None:
                return
            if self.result.source_error:
                chunk.done()
                continue
            h.update(chunk.view)
            r = self.map.ranges[i]
            end_of_range = chunk.offset + chunk.length == sum(self.map.extent(r))
            chunk.done()
            if not end_of_range:
                continue
            digest = h.hexdigest()
            h = hashlib.new(self.map.checksum_type)
            if r.checksum and digest != r.checksum:
                self.result.source_error = (
                    f"the image does not match its bmap at blocks {r.first}-{r.last} "
                    f"(corrupt download, or a .bmap from another build)")
            self.expected[i] = digest
        self.inbox.get()  # the closing None


def _fan_out(chunk: _Chunk, writers: list[_Writer], hasher: _Hasher) -> None:
    live = [w for w in writers if w.state.error is None]
    chunk.share(len(live) + 1)
    hasher.inbox.put(chunk)
    for w in live:
        w.inbox.put(chunk)  # failed writers still drain, so this never blocks for long


def _fan_out_held(chunk: _Chunk, writers: list[_Writer]) -> None:
    """The head: its reference from the reader is handed on to the live writers."""
    live = [w for w in writers if w.state.error is None]
    with chunk._lock:
        chunk._refs += len(live) - 1
    if not live:
        chunk._release()
    for w in live:
        w.inbox.put(chunk)
