"""Overwrite-wipe throughput against the raw sequential write speed of the same target.

Baseline: O_DIRECT sequential writes of one pre-generated 1 MiB buffer (no generation cost),
the fastest the target takes data. Measured: `overwrite.write_pass` (seeded random stream,
generated while writing) and the full wipe (pass + sampled read-back). Needs root (a loop
device over a file on the same filesystem as --dir). Prints MiB/s and ratios.

    .venv/bin/python bench/wipe.py [--size-mib 512] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import mmap
import os
import subprocess
import tempfile
import time
from pathlib import Path

from provisioner.agent import overwrite


def raw_write(dev: str, size: int) -> float:
    buf = mmap.mmap(-1, overwrite.MIB)
    buf[:] = os.urandom(overwrite.MIB)
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    try:
        start = time.perf_counter()
        for offset in range(0, size, overwrite.MIB):
            os.pwrite(fd, buf, offset)
        os.fsync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        buf.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    size = args.size_mib * overwrite.MIB
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
            raw_write(dev, size)  # allocate the backing file's blocks first: fair to both
            raw = min(raw_write(dev, size) for _ in range(2))
            start = time.perf_counter()
            overwrite.write_pass(dev, size, seed=1)
            wiped = time.perf_counter() - start
            sample = overwrite.choose_sample(size, sample_seed=1)
            start = time.perf_counter()
            assert overwrite.verify_pass(dev, size, 1, sample).passed
            verify = time.perf_counter() - start
            gen_start = time.perf_counter()
            for i in range(256):
                overwrite.block_data(1, i)
            gen = time.perf_counter() - gen_start
        finally:
            subprocess.run(["losetup", "-d", dev], check=False)
    mib = args.size_mib
    print(f"target: loop device over {backing.parent} ({mib} MiB), 2 shared cores")
    print(f"raw O_DIRECT sequential write : {mib / raw:8.1f} MiB/s  (baseline)")
    print(f"random generation alone       : {16 / gen:8.1f} MiB/s")
    print(f"overwrite pass                : {mib / wiped:8.1f} MiB/s  = {raw / wiped:.3f} x raw")
    print(
        f"overwrite pass + verification : {mib / (wiped + verify):8.1f} MiB/s  = "
        f"{raw / (wiped + verify):.3f} x raw  "
        f"({len(sample.indices)} blocks read back, {verify:.2f} s)"
    )


if __name__ == "__main__":
    main()
