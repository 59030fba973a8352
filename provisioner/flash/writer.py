"""Writes one image to many targets at once and reads every target back.

One reader thread reads each mapped span of the source once (raw or zstd), checks it against
the map's SHA-256, and hands the same aligned buffer to one writer thread per target. Each
writer zeroes the image's first span, writes the rest, writes the first span last (so a stick
cut off midway carries no partition table and does not look usable), and flushes. Only when
every target has been written and flushed are they read back, all together, past the page
cache (O_DIRECT, else fadvise DONTNEED), and every range of every target is compared with
its checksum (one SHA-256 per chunk for all targets whose bytes are identical; see
`read_back`). Reading back only after the last write also catches sticks that fake their
capacity: their late writes overwrite early ranges. A failing target is reported; the others
carry on.
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
from dataclasses import dataclass, field
from typing import Any

from provisioner.errors import DeelitError
from provisioner.flash.policy import Target
from provisioner.flash.source import Source, spans
from provisioner.formats import bmap as bm

CHUNK = 8 << 20  # large aligned writes: fewer syscalls, whole erase blocks on sticks
QUEUE_DEPTH = 4  # at least this many chunks in flight between the reader and the writers
# How far the reader may run ahead of the slowest target. Reading and hashing outpace a stick,
# so the lead grows while data spans are read, and it keeps the sticks busy while the reader
# decompresses long holes of a .zst image (the tail of a disk image is often GiBs of zeros
# before the backup GPT): 256 MiB is about 1.7 s of writing at 150 MB/s.
READ_AHEAD = 256 << 20
ALIGN = 4096  # O_DIRECT alignment that covers 512e and 4Kn sticks


@dataclass
class TargetState:
    """Live progress and the outcome for one target (read by the progress display)."""

    target: Target
    total: int
    phase: str = "waiting"  # waiting, write, flush, verify, done, failed
    written: int = 0
    verified: int = 0
    error: str | None = None
    mismatches: list[tuple[int, int]] = field(default_factory=list)  # (first, last) blocks
    write_seconds: float = 0.0
    verify_seconds: float = 0.0
    verified_ok: bool | None = None  # None: not verified

    @property
    def ok(self) -> bool:
        return self.error is None and self.verified_ok is not False


@dataclass
class FlashResult:
    states: list[TargetState]
    verify: bool
    source_error: str | None = None
    read_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.source_error is None and all(s.ok for s in self.states)


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
            _verify_all(block_map, expected, states, cancel)
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


# --- read-back ---------------------------------------------------------------------------
#
# All targets are read back together, chunk by chunk, each by its own thread past the page
# cache. Copies of one image are identical when they are good, so one SHA-256 per chunk is
# enough for all of them: the chunk of one target is hashed and the others are compared
# with it byte for byte (memcmp, several times faster than hashing). A target whose chunk
# differs takes a copy of the shared hash state at that point and hashes its own bytes from
# then on, so every target's range checksum is still exactly the SHA-256 of what it holds.


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


def _verify_all(block_map: bm.BlockMap, expected: list[str], states: list[TargetState],
                cancel: threading.Event) -> None:
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
    _verify_all(block_map, expected, states, threading.Event())
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
