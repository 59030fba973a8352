#!/usr/bin/env python3
"""Disk image benchmark: the `disk` artifact step against its floor, with the image's sizes.

The floor (the baseline) is what any builder of the same disk must pay at least: one mke2fs -d
of the same tree into a root filesystem of the same size, and zstd of that file at the profile's
level. The step adds the ESP, GRUB, partition table, copy-in and bmap on top. Printed:

    image size, mapped size (bmap), compressed size, step time per phase, floor, step / floor.

Usage (root): .venv/bin/python bench/disk.py [PROFILE]   (default: ci; its tree must be cached,
else the profile is built first into a temporary folder).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provisioner.build import pipeline
from provisioner.build.artifacts import disk
from provisioner.build.cache import Cache
from provisioner.profile import load_profile

MiB = disk.MiB


def cached_context(profile_name: str, tmp: Path) -> pipeline.BuildContext:
    prof = load_profile(profile_name)
    ctx = pipeline.prepare(prof, tmp / "out", Cache())
    if ctx.tree is None:
        print(f"{profile_name}: tree not cached, building it first…", flush=True)
        pipeline.run(ctx)
        ctx = pipeline.prepare(prof, tmp / "out2", Cache())
    assert ctx.tree is not None
    return ctx


def floor(tree: Path, root_size: int, level: int, tmp: Path) -> float:
    """mke2fs -d of tree into a root filesystem of root_size, then zstd at level: seconds."""
    started = time.monotonic()
    image = tmp / "floor-root.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), f"{root_size // 1024}k"],
                   check=True, capture_output=True)
    subprocess.run(["zstd", "-q", "-T0", f"-{level}", str(image), "-o", str(tmp / "floor.zst")],
                   check=True)
    seconds = time.monotonic() - started
    for scratch in (image, tmp / "floor.zst"):
        scratch.unlink()
    return seconds


def main() -> None:
    profile_name = sys.argv[1] if len(sys.argv) > 1 else "ci"
    with tempfile.TemporaryDirectory(prefix="deelit-bench-disk-", dir=Cache().root) as tmp_name:
        tmp = Path(tmp_name)
        ctx = cached_context(profile_name, tmp)
        options = ctx.profile.outputs.disk
        if options is None:
            sys.exit(f"profile '{profile_name}' has no outputs.disk")
        dest = tmp / "artifacts"
        dest.mkdir()
        try:
            started = time.monotonic()
            stats = disk.write(ctx, options, dest)
            step = time.monotonic() - started
        finally:
            pipeline._remove_work(ctx.work)
        layout = disk.plan_layout(stats.image_size, disk.DiskIds.derive("bench"))
        assert ctx.tree is not None
        floor_s = floor(ctx.tree, layout.root.size, options.compression_level, tmp)
        os.sync()
    print(f"profile {profile_name}: disk {options.size}, zstd -{options.compression_level}")
    print(f"  image size       {stats.image_size / MiB:9.1f} MiB")
    print(f"  mapped (bmap)    {stats.mapped_size / MiB:9.1f} MiB  "
          f"({stats.mapped_size / stats.image_size:.1%} of the image)")
    print(f"  compressed       {stats.compressed_size / MiB:9.1f} MiB  "
          f"({stats.compressed_size / stats.mapped_size:.1%} of mapped)")
    print(f"  step             {step:9.1f} s   " +
          ", ".join(f"{k} {v:.1f}" for k, v in stats.seconds.items()))
    print(f"  floor            {floor_s:9.1f} s   (mke2fs -d + zstd of the root alone)")
    print(f"  step / floor     {step / floor_s:9.2f}")


if __name__ == "__main__":
    main()
