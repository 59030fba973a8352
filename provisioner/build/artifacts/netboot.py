"""Artifact `netboot`: vmlinuz, initrd.img and filesystem.squashfs (zstd) for PXE and live use.

Boots with live-boot: `boot=live fetch=http://HOST/PATH/filesystem.squashfs` over the network,
or `boot=live` with the squashfs at `live/filesystem.squashfs` on any attached disk.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from provisioner.build.context import BuildContext
from provisioner.build.runner import StepFailed, run_logged
from provisioner.profile import NetbootOutput

KERNEL = "vmlinuz"
INITRD = "initrd.img"
SQUASHFS = "filesystem.squashfs"
FILES = {KERNEL: "kernel", INITRD: "initrd", SQUASHFS: "rootfs"}


def kernel_files(tree: Path) -> tuple[Path, Path]:
    """The newest kernel in /boot and its initramfs."""
    kernels = sorted(tree.glob("boot/vmlinuz-*"), key=lambda p: _version_key(p.name))
    if not kernels:
        raise StepFailed("artifacts", f"no kernel in {tree}/boot (is linux-image installed?)", None)
    kernel = kernels[-1]
    initrd = kernel.with_name(kernel.name.replace("vmlinuz-", "initrd.img-"))
    if not initrd.exists():
        raise StepFailed("artifacts", f"no initramfs {initrd} for {kernel.name}", None)
    return kernel, initrd


def _version_key(name: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", name)]


def write(ctx: BuildContext, options: NetbootOutput, dest: Path) -> None:
    assert ctx.tree is not None
    kernel, initrd = kernel_files(ctx.tree)
    shutil.copyfile(kernel, dest / KERNEL)
    shutil.copyfile(initrd, dest / INITRD)
    # Reproducible: mksquashfs takes every timestamp from SOURCE_DATE_EPOCH (and refuses the
    # -mkfs-time/-all-time options when that variable is set, so it is the only way).
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(ctx.source_date_epoch)}
    run_logged(
        "artifacts",
        ["mksquashfs", ctx.tree, dest / SQUASHFS, "-noappend", "-no-progress",
         "-comp", "zstd", "-Xcompression-level", str(options.compression_level), "-xattrs"],
        ctx.log,
        env=env,
        stream=ctx.verbose,
    )
