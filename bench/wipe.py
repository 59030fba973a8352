"""Overwrite-wipe throughput against the raw sequential speed of the same target.

Baselines, measured in the same run: O_DIRECT sequential writes of one pre-generated buffer
and O_DIRECT sequential reads into one, in the wipe's own I/O size (`overwrite.CHUNK`, 4 MiB),
with no generation and no comparison: the fastest the target takes and gives data.
Measured: `overwrite.write_pass` (ChaCha20 stream, generated while writing), the full
read-back (`verify_pass(full=True)`) and the default sampled one. Runs are interleaved, in
alternating order (a busy shared host slows baselines and candidates alike); speeds are the
best of --runs, ratios best ÷ best plus the median and range of the per-run ratios.
Needs root (a loop device over a file on the same filesystem as --dir). Prints MiB/s, the
ratios and their goals.

    .venv/bin/python bench/wipe.py [--size-mib 512] [--dir /var/tmp] [--runs 6]
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from provisioner.agent import overwrite

MIB = overwrite.MIB
IO = overwrite.CHUNK


def raw_write(dev: str, size: int) -> float:
    buf = mmap.mmap(-1, IO)
    buf[:] = os.urandom(IO)
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    try:
        start = time.perf_counter()
        for offset in range(0, size, IO):
            os.pwrite(fd, buf, offset)
        os.fsync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        buf.close()


def raw_read(dev: str, size: int) -> float:
    buf = mmap.mmap(-1, IO)
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    try:
        start = time.perf_counter()
        for offset in range(0, size, IO):
            os.preadv(fd, [buf], offset)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        buf.close()


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def generation_only(size: int) -> float:
    """The stream alone into an aligned buffer: what the pass costs the CPU."""
    buf = mmap.mmap(-1, overwrite.CHUNK)
    view = memoryview(buf)
    try:
        start = time.perf_counter()
        for offset in range(0, size, overwrite.CHUNK):
            overwrite.stream_into(1, offset, view)
        return time.perf_counter() - start
    finally:
        view.release()
        buf.close()


def passed(v: overwrite.Verification) -> None:
    assert v.passed, v


def measure(dev: str, size: int, runs: int, sample: overwrite.Sample) -> dict[str, list[float]]:
    """Seconds per step, one list entry per run. Every other run swaps each baseline with its
    candidate: the first write, and the first read after a write, of a loop device over a file
    are often faster (the host's cache), and a fixed order would favour one side."""
    steps: dict[str, Callable[[], object]] = {
        "raw write": lambda: raw_write(dev, size),
        "pass": lambda: overwrite.write_pass(dev, size, seed=1),
        "raw read": lambda: raw_read(dev, size),
        "full": lambda: passed(overwrite.verify_pass(dev, size, 1, full=True)),
        "sample": lambda: passed(overwrite.verify_pass(dev, size, 1, sample)),
    }
    orders = (
        ["raw write", "pass", "raw read", "full", "sample"],
        ["pass", "raw write", "restore", "full", "raw read", "sample"],
    )
    raw_write(dev, size)  # allocate the backing file's blocks first: fair to all
    times: dict[str, list[float]] = {name: [] for name in steps}
    for run in range(runs):
        for name in orders[run % 2]:
            if name == "restore":  # the reads need the stream back after the raw write
                overwrite.write_pass(dev, size, seed=1)
            else:
                times[name].append(timed(steps[name]))
    return times


def ratio(base: list[float], candidate: list[float]) -> str:
    """best ÷ best, then the median and range of the per-run ratios (drift on a shared host
    moves a run's baseline and candidate together)."""
    per_run = sorted(b / c for b, c in zip(base, candidate, strict=True))
    return (f"{min(base) / min(candidate):.3f} (per run: median {statistics.median(per_run):.3f}, "
            f"{per_run[0]:.3f}-{per_run[-1]:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--dir", default="/var/tmp")
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    size, mib = args.size_mib * MIB, args.size_mib
    sample = overwrite.choose_sample(size, sample_seed=1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        backing = Path(tmp) / "bench.img"
        with backing.open("wb") as f:
            f.truncate(size)
        dev = subprocess.run(
            ["losetup", "-f", "--show", "--direct-io=on", str(backing)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        try:
            t = measure(dev, size, args.runs, sample)
        finally:
            subprocess.run(["losetup", "-d", dev], check=False)
    gen = generation_only(size)
    best = {name: min(v) for name, v in t.items()}
    share = sorted(100 * s / p for s, p in zip(t["sample"], t["pass"], strict=True))
    io = f"{IO // MIB} MiB I/Os"
    print(f"target: loop device over {backing.parent} ({mib} MiB), {os.cpu_count()} cores, "
          f"best of {args.runs} interleaved runs")
    print(f"raw O_DIRECT sequential write : {mib / best['raw write']:8.1f} MiB/s  (baseline, {io})")
    print(f"raw O_DIRECT sequential read  : {mib / best['raw read']:8.1f} MiB/s  (baseline, {io})")
    print(f"stream generation alone       : {mib / gen:8.1f} MiB/s  ({overwrite.STREAM})")
    print(f"overwrite pass                : {mib / best['pass']:8.1f} MiB/s  = "
          f"{ratio(t['raw write'], t['pass'])} x raw write  (goal >= 0.9)")
    print(f"full verification (read-back) : {mib / best['full']:8.1f} MiB/s  = "
          f"{ratio(t['raw read'], t['full'])} x raw read  (goal >= 0.9)")
    print(f"sampled verification          : {best['sample']:8.3f} s      = "
          f"{100 * best['sample'] / best['pass']:.1f} % of the pass (per run: median "
          f"{statistics.median(share):.1f} %, {share[0]:.1f}-{share[-1]:.1f} %)  (goal <= 5 %; "
          f"{len(sample.indices)} blocks, {sample.percent} %)")
    print(f"pass + sampled verification   : {mib / (best['pass'] + best['sample']):8.1f} MiB/s")
    print(f"pass + full verification      : {mib / (best['pass'] + best['full']):8.1f} MiB/s")


if __name__ == "__main__":
    main()
