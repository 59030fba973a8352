"""Artifact `netboot`: vmlinuz, initrd.img and filesystem.squashfs (zstd) for PXE and live use.

Boots with live-boot: `boot=live fetch=http://HOST/PATH/filesystem.squashfs` over the network,
or `boot=live` with the squashfs at `live/filesystem.squashfs` on any attached disk.
With `secure_boot`, also the image's signed shim and network GRUB (`shimx64.efi`,
`grubnetx64.efi`): the first links of the Secure Boot PXE chain, from the same Debian release
as the kernel they load.
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
SHIM = "shimx64.efi"
GRUB_NET = "grubnetx64.efi"
FILES = {KERNEL: "kernel", INITRD: "initrd", SQUASHFS: "rootfs", SHIM: "efi-shim",
         GRUB_NET: "efi-grub-net"}
# in the tree (Debian's shim-signed, grub-efi-amd64-signed) -> in the artifacts
SIGNED_BOOT_FILES = {
    "usr/lib/shim/shimx64.efi.signed": SHIM,
    "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed": GRUB_NET,
}


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
    if options.secure_boot:
        for src, name in SIGNED_BOOT_FILES.items():
            if not (ctx.tree / src).is_file():
                raise StepFailed("artifacts", f"no {src} in the image for outputs.netboot."
                                 "secure_boot (shim-signed, grub-efi-amd64-signed)", None)
            shutil.copyfile(ctx.tree / src, dest / name)
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
