"""NIST SP 800-88 Clear: one pass of seeded random data, then a sampled read-back.

Block i of the pass is `random.Random((seed << 64) | i).randbytes(BLOCK)`, so any block can be
regenerated from the seed alone: the read-back compares without keeping what was written.
Random rather than zeros so a controller that compresses or deduplicates cannot skip work.
Writes and reads use O_DIRECT so the read-back sees the medium, not the page cache.
"""

from __future__ import annotations

import errno
import math
import mmap
import os
import queue
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydantic import BaseModel

from provisioner.errors import DeelitError

BLOCK = 64 * 1024  # generation and sampling unit
CHUNK_BLOCKS = 16  # blocks per write syscall (1 MiB)
MIB = 1 << 20

Progress = Callable[[int, int], None]


def block_data(seed: int, index: int, length: int = BLOCK) -> bytes:
    return random.Random((seed << 64) | index).randbytes(length)


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


def write_pass(path: str, size: int, seed: int, progress: Progress | None = None) -> None:
    """Write the seeded stream over the whole device; generation overlaps the writes."""
    total = block_count(size)
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=4)

    def produce() -> None:
        for first in range(0, total, CHUNK_BLOCKS):
            last = min(total, first + CHUNK_BLOCKS)
            chunks.put(
                b"".join(block_data(seed, i, block_len(size, i)) for i in range(first, last))
            )
            if stop.is_set():
                break
        chunks.put(None)

    stop = threading.Event()
    producer = threading.Thread(target=produce, name="wipe-random", daemon=True)
    producer.start()
    buf = mmap.mmap(-1, CHUNK_BLOCKS * BLOCK)  # page-aligned, as O_DIRECT needs
    written = 0
    try:
        # O_EXCL on a block device fails while the kernel has it mounted or claimed.
        with open_direct(path, os.O_WRONLY | os.O_EXCL) as (fd, direct):
            while (data := chunks.get()) is not None:
                buf[: len(data)] = data
                view = memoryview(buf)[: len(data)]
                done = 0
                while done < len(data):
                    done += os.pwrite(fd, view[done:], written + done)
                view.release()
                written += len(data)
                if progress:
                    progress(written, size)
            os.fsync(fd)
            if not direct:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as exc:
        raise DeelitError(
            f"writing {path} failed at byte {written}: {exc.strerror}; no certificate written"
        ) from exc
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting on a full queue
            try:
                chunks.get_nowait()
            except queue.Empty:
                producer.join(0.05)
        buf.close()
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


class Verification(BaseModel):
    method: str
    block_size: int
    blocks_total: int
    blocks_sampled: int
    percent_sampled: float
    first_and_last_mib: bool = True
    sample_seed: int
    mismatches: int
    mismatch_blocks: list[int]
    passed: bool


def verify_pass(path: str, size: int, seed: int, sample: Sample) -> Verification:
    """Compare sampled blocks with the regenerated stream; every byte must match."""
    bad = [
        i
        for i, data in read_blocks(path, size, sample.indices)
        if data != block_data(seed, i, len(data))
    ]
    return Verification(
        method="read-back of sampled blocks compared with the regenerated random stream",
        block_size=BLOCK,
        blocks_total=sample.blocks_total,
        blocks_sampled=len(sample.indices),
        percent_sampled=sample.percent,
        sample_seed=sample.sample_seed,
        mismatches=len(bad),
        mismatch_blocks=bad[:20],
        passed=not bad,
    )
