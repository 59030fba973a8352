"""NIST SP 800-88 Clear: one pass of a seeded ChaCha20 keystream, then a read-back.

The stream is the ChaCha20 keystream under key SHA-256("deelit-overwrite/2:<seed>"), its
64-bit block counter at byte offset / 64. Any range of it (block i starts at i * BLOCK) can be
recomputed on its own, so the read-back compares without keeping what was written, and one
cipher call makes a whole 1 MiB chunk at several GB/s instead of the ~0.5 GB/s of
`random.randbytes`. ChaCha20 rather than AES-CTR: old laptops without AES-NI (Core 2, Atom,
Pentium B9xx) run it at SSE speed, where AES falls to a few hundred MB/s. Random rather than
zeros so a controller that compresses or deduplicates cannot skip work; not a secret: anyone
with the seed may regenerate it.

The read-back is either a sample (first and last MiB plus 1% random 64 KiB blocks, read four
at a time; the default) or full (every block, in 4 MiB reads, two at a time). Writes and
reads use O_DIRECT from page-aligned buffers so the read-back sees the medium, not the page
cache. Threads do the I/O while the caller's thread computes (or the reverse when writing),
so the disk stays busy: the cipher and the comparison hold the GIL, pwrite/preadv release it.
"""

from __future__ import annotations

import errno
import hashlib
import math
import mmap
import os
import queue
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from pydantic import BaseModel

from provisioner.errors import DeelitError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import CipherContext

BLOCK = 64 * 1024  # sampling and mismatch-reporting unit
MIB = 1 << 20
# 4 MiB per write/read syscall: each chunk costs two thread hand-offs and a trip through the
# block layer; with 1 MiB the full read-back ran ~20% slower (bench/wipe.py, loop device).
CHUNK_BLOCKS = 64
CHUNK = CHUNK_BLOCKS * BLOCK
PIECE = MIB  # per cipher call: the cipher holds the GIL, so keep each hold short (~0.15 ms)
# Compared per cipher call in the read-back: the expected bytes stay in cache for the memcmp
# (the whole chunk at once spilled out of L2 and cost a quarter of the comparison's speed).
COMPARE = 256 * 1024
DEPTH = 3  # chunk buffers in flight: one on the disk, one being computed, one spare
# Reads in flight. A sample's scattered blocks, one at a time, each paid a full request
# latency: the 1% sample added ~5% to the pass on a fast device, ~3% with four. The full
# read-back with one read in flight left the disk idle while a finished read waited for
# the comparing thread's GIL: ~0.75x the raw read speed, ~0.87x with two (bench/wipe.py).
SAMPLE_READERS = 4
FULL_READERS = 2
STREAM = "ChaCha20 keystream, key SHA-256 of the seed, block counter at byte offset / 64"
_CHACHA_BLOCK = 64
_ZEROS = memoryview(bytes(PIECE))  # encrypting zeros yields the bare keystream

Progress = Callable[[int, int], None]
Scope = Literal["sample", "full"]
SCOPES: tuple[str, ...] = ("sample", "full")


def stream_key(seed: int) -> bytes:
    return hashlib.sha256(f"deelit-overwrite/2:{seed}".encode()).digest()


def _context(key: bytes, offset: int) -> CipherContext:
    """The keystream from `offset` (a multiple of 64) on.

    The 16-byte ChaCha20 nonce of `cryptography` is state words 12-15: a 32-bit block
    counter, then the nonce proper, whose first word takes the position's high 32 bits.
    Whether the counter carries into that word differs between versions (50 refuses), so a
    context is never run across a 2**32-block (256 GiB) boundary: see `_fill`.
    """
    position = (offset // _CHACHA_BLOCK).to_bytes(8, "little") + bytes(8)
    return Cipher(algorithms.ChaCha20(key, position), mode=None).encryptor()


def _fill(key: bytes, offset: int, out: memoryview) -> None:
    """Stream bytes [offset, offset + len(out)) into `out`, in place, one context per MiB.

    Pieces end on MiB boundaries, and 256 GiB is a whole number of MiB, so no piece crosses
    a counter wrap; a fresh context per MiB costs ~1%.
    """
    done = 0
    while done < len(out):
        at = offset + done
        piece = out[done : min(len(out), done + PIECE - at % PIECE)]
        _context(key, at).update_into(_ZEROS[: len(piece)], piece)
        done += len(piece)


def stream_into(seed: int, offset: int, out: memoryview) -> None:
    if offset % _CHACHA_BLOCK:
        raise ValueError(f"stream offset {offset} is not a multiple of {_CHACHA_BLOCK}")
    _fill(stream_key(seed), offset, out)


def stream(seed: int, offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of the stream, at any byte offset."""
    skip = offset % _CHACHA_BLOCK
    out = bytearray(skip + length)
    stream_into(seed, offset - skip, memoryview(out))
    return bytes(out[skip:])


def block_data(seed: int, index: int, length: int = BLOCK) -> bytes:
    return stream(seed, index * BLOCK, length)


def block_count(size: int) -> int:
    return math.ceil(size / BLOCK)


def block_len(size: int, index: int) -> int:
    return min(BLOCK, size - index * BLOCK)


@contextmanager
def open_direct(path: str, flags: int) -> Iterator[tuple[int, bool]]:
    """(fd, direct): O_DIRECT when the target allows it, else buffered (then fsync + drop)."""
    try:
        fd = os.open(path, flags | os.O_DIRECT)
        direct = True
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise DeelitError(f"cannot open {path}: {exc.strerror}") from exc
        fd, direct = os.open(path, flags), False
    try:
        yield fd, direct
    finally:
        os.close(fd)


Span = tuple[int, int]  # (byte offset, length), length <= CHUNK
_Filled = tuple[Span, memoryview, mmap.mmap]


def _pipelined(
    spans: Iterable[Span], fill: Callable[[Span, memoryview], None], helpers: int = 1
) -> Iterator[tuple[Span, memoryview]]:
    """Each span filled by `fill` in helper threads, up to DEPTH chunks ahead of the caller.

    One helper hands the spans over in order; several (concurrent reads, which a disk's
    queue serves faster when they are scattered) in any order. A view is valid until the
    caller asks for the next one (its buffer is then reused). An error in `fill` is raised here.
    """
    bufs = [mmap.mmap(-1, CHUNK) for _ in range(DEPTH + helpers - 1)]  # page-aligned: O_DIRECT
    free: queue.Queue[mmap.mmap] = queue.Queue()
    ready: queue.Queue[_Filled | BaseException | None] = queue.Queue()  # None: a helper ended
    stop = threading.Event()
    todo, todo_lock = iter(spans), threading.Lock()
    for b in bufs:
        free.put(b)

    def work() -> None:
        try:
            while True:
                buf = free.get()
                with todo_lock:
                    span = None if stop.is_set() else next(todo, None)
                if span is None:
                    return
                view = memoryview(buf)[: span[1]]
                try:
                    fill(span, view)
                except BaseException:
                    view.release()  # else the traceback keeps the buffer exported
                    raise
                ready.put((span, view, buf))
        except BaseException as exc:  # handed to the caller, which raises it
            ready.put(exc)
        finally:
            ready.put(None)

    threads = [
        threading.Thread(target=work, name=f"wipe-io-{n}", daemon=True) for n in range(helpers)
    ]
    for t in threads:
        t.start()
    try:
        ended = 0
        while ended < helpers:
            if (item := ready.get()) is None:
                ended += 1
                continue
            if isinstance(item, BaseException):
                raise item
            span, view, buf = item
            try:
                yield span, view
            finally:
                view.release()
            free.put(buf)
    finally:
        stop.set()
        for _ in threads:  # wakes helpers waiting for a buffer; they see `stop` and return
            free.put(bufs[0])
        for t in threads:
            t.join()
        while not ready.empty():  # views the caller never got
            if isinstance(left := ready.get_nowait(), tuple):
                left[1].release()
        for b in bufs:
            b.close()


def _chunks(size: int) -> Iterator[Span]:
    for offset in range(0, size, CHUNK):
        yield offset, min(CHUNK, size - offset)


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _read_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise OSError(errno.EIO, f"end of device at byte {offset + done}")
        done += got


def write_pass(path: str, size: int, seed: int, progress: Progress | None = None) -> None:
    """Write the stream over the whole device; the next chunk is computed during each write."""
    key = stream_key(seed)

    def generate(span: Span, view: memoryview) -> None:
        _fill(key, span[0], view)

    written = 0
    try:
        # O_EXCL on a block device fails while the kernel has it mounted or claimed.
        with open_direct(path, os.O_WRONLY | os.O_EXCL) as (fd, direct):
            for (offset, length), view in _pipelined(_chunks(size), generate):
                _write_all(fd, view, offset)
                written = offset + length
                if progress:
                    progress(written, size)
            os.fsync(fd)
            if not direct:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as exc:
        raise DeelitError(
            f"writing {path} failed at byte {written}: {exc.strerror}; no certificate written"
        ) from exc
    if written != size:
        raise DeelitError(f"wrote {written} of {size} bytes of {path}; no certificate written")


class Sample(BaseModel):
    """Which blocks a verification reads: first and last MiB, plus a random share of the rest."""

    block_size: int = BLOCK
    blocks_total: int
    indices: list[int]
    random_fraction: float
    sample_seed: int

    @property
    def percent(self) -> float:
        return round(100.0 * len(self.indices) / self.blocks_total, 3)


def choose_sample(size: int, fraction: float = 0.01, sample_seed: int | None = None) -> Sample:
    total = block_count(size)
    edge = math.ceil(MIB / BLOCK)
    fixed = set(range(min(edge, total))) | set(range(max(0, total - edge), total))
    rest = [i for i in range(total) if i not in fixed] if total < 4 * edge else None
    want = math.ceil(total * fraction)
    seed = sample_seed if sample_seed is not None else random.SystemRandom().getrandbits(63)
    rng = random.Random(seed)
    picked: set[int] = set()
    if rest is not None:
        picked = set(rng.sample(rest, min(want, len(rest))))
    else:  # big disk: draw from the middle range without listing it
        while len(picked) < min(want, total - len(fixed)):
            i = rng.randrange(edge, total - edge)
            picked.add(i)
    return Sample(
        blocks_total=total,
        indices=sorted(fixed | picked),
        random_fraction=fraction,
        sample_seed=seed,
    )


def read_blocks(path: str, size: int, indices: list[int]) -> Iterator[tuple[int, bytes]]:
    """Each block as the medium holds it (O_DIRECT into an aligned buffer)."""
    buf = mmap.mmap(-1, BLOCK)
    try:
        with open_direct(path, os.O_RDONLY) as (fd, direct):
            if not direct:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            for i in indices:
                length = block_len(size, i)
                view = memoryview(buf)[:length]
                got = os.preadv(fd, [view], i * BLOCK)
                view.release()
                if got != length:
                    raise DeelitError(f"short read of {path} at block {i}: {got} of {length} bytes")
                yield i, bytes(buf[:length])
    except OSError as exc:
        raise DeelitError(f"reading {path} back failed: {exc.strerror}") from exc
    finally:
        buf.close()


def _runs(size: int, indices: Iterable[int]) -> Iterator[Span]:
    """Sorted block indices as spans of consecutive blocks, each at most one chunk."""
    first = prev = -1
    for i in indices:
        if first >= 0 and i == prev + 1 and i - first < CHUNK_BLOCKS:
            prev = i
            continue
        if first >= 0:
            yield first * BLOCK, min(size, (prev + 1) * BLOCK) - first * BLOCK
        first = prev = i
    if first >= 0:
        yield first * BLOCK, min(size, (prev + 1) * BLOCK) - first * BLOCK


def _expected(
    key: bytes, offset: int, length: int, scratch: bytearray
) -> Iterator[tuple[int, bytearray]]:
    """The stream over [offset, offset + length) as consecutive pieces of at most
    len(scratch) bytes, in `scratch` (valid until the next piece); one context per MiB."""
    done = 0
    ctx: CipherContext | None = None
    while done < length:
        at = offset + done
        n = min(len(scratch), length - done, PIECE - at % PIECE)
        if ctx is None or at % PIECE == 0:
            ctx = _context(key, at)
        want = scratch if n == len(scratch) else bytearray(n)
        ctx.update_into(_ZEROS[:n], want)
        yield done, want
        done += n


def _bad_blocks(key: bytes, span: Span, got: memoryview, scratch: bytearray) -> list[int]:
    """Indices of the blocks in `span` whose bytes differ from the stream."""
    offset, length = span
    bad: list[int] = []
    for start, want in _expected(key, offset, length, scratch):
        # bytearray on the left: a memcmp, where memoryview == would compare bytewise
        if want == got[start : start + len(want)]:
            continue
        bad += [
            (offset + start + i) // BLOCK
            for i in range(0, len(want), BLOCK)
            if want[i : i + BLOCK] != got[start + i : start + i + BLOCK]
        ]
    return bad


def compare_spans(
    path: str,
    seed: int,
    spans: Iterable[Span],
    *,
    readers: int = 1,
    progress: Progress | None = None,
    total: int = 0,
) -> list[int]:
    """Read each span back (the next ones are read during each comparison); the wrong
    blocks, in ascending order. Progress counts bytes compared (`total`: all spans')."""
    key, scratch = stream_key(seed), bytearray(COMPARE)
    bad: list[int] = []
    done = 0
    try:
        with open_direct(path, os.O_RDONLY) as (fd, direct):
            if not direct:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

            def read(span: Span, view: memoryview) -> None:
                _read_all(fd, view, span[0])

            for span, got in _pipelined(spans, read, readers):
                bad += _bad_blocks(key, span, got, scratch)
                done += span[1]
                if progress:
                    progress(done, total)
    except OSError as exc:
        raise DeelitError(f"reading {path} back failed: {exc.strerror}") from exc
    return sorted(bad)


class Verification(BaseModel):
    method: str
    # Certificates written before the full read-back existed lack `scope`: they were sampled.
    scope: Scope = "sample"
    block_size: int
    blocks_total: int
    blocks_sampled: int  # blocks read back: all of them when scope is "full"
    percent_sampled: float
    first_and_last_mib: bool = True
    sample_seed: int | None = None  # None for a full read-back (nothing was drawn)
    mismatches: int
    mismatch_blocks: list[int]
    passed: bool


def verify_pass(
    path: str,
    size: int,
    seed: int,
    sample: Sample | None = None,
    *,
    full: bool = False,
    progress: Progress | None = None,
) -> Verification:
    """Compare the medium with the regenerated stream: every block (full) or a sample."""
    total = block_count(size)
    if full:
        bad = compare_spans(
            path, seed, _chunks(size), readers=FULL_READERS, progress=progress, total=size
        )
        read, seed_used = total, None
        what = "read-back of every block"
    else:
        sample = sample or choose_sample(size)
        bad = compare_spans(path, seed, _runs(size, sample.indices), readers=SAMPLE_READERS)
        read, seed_used = len(sample.indices), sample.sample_seed
        what = (
            "read-back of sampled blocks (first and last MiB, "
            f"{100 * sample.random_fraction:g}% random)"
        )
    return Verification(
        method=f"{what} compared with the regenerated stream ({STREAM})",
        scope="full" if full else "sample",
        block_size=BLOCK,
        blocks_total=total,
        blocks_sampled=read,
        percent_sampled=round(100.0 * read / total, 3),
        sample_seed=seed_used,
        mismatches=len(bad),
        mismatch_blocks=bad[:20],
        passed=not bad,
    )
