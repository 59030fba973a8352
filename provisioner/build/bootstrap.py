"""Step `bootstrap`: the root tree from mmdebstrap, cached as a folder by its inputs.

It installs, in one apt run, what every image needs, what the outputs need, the profile's own
packages and every package the profile's roles declare (role_packages.py): the roles then
only configure. The folder is the bottom layer that every role's layer stacks on.
"""

from __future__ import annotations

from provisioner.build.context import BuildContext
from provisioner.build.runner import run_logged
from provisioner.profile import Profile

# What every image needs before Ansible can run in it and before it can boot.
BASE_PACKAGES = ["systemd-sysv", "udev", "dbus", "python3", "python3-apt", "initramfs-tools", "zstd"]
NETBOOT_PACKAGES = ["live-boot"]
# Secure Boot PXE: the image's own signed shim and network GRUB go out beside its kernel (the
# build host's may be older: bookworm's GRUB 2.06 ignores a proxy-DHCP offer; trixie's reads it).
NETBOOT_SECURE_BOOT_PACKAGES = ["shim-signed", "grub-efi-amd64-signed"]
# The disk image boots with the image's own GRUB (BIOS modules, Debian's signed EFI binary behind
# the signed shim); systemd-repart + e2fsprogs grow the root on first boot; mokutil reports SB.
DISK_PACKAGES = ["grub-pc-bin", "grub-efi-amd64-signed", "shim-signed", "mokutil", "e2fsprogs"]
DISK_PACKAGES_SPLIT = {"trixie": ["systemd-repart"]}  # bookworm ships it inside systemd


def bootstrap_packages(profile: Profile, role_packages: dict[str, list[str]] | None = None) -> list[str]:
    pkgs = [*BASE_PACKAGES, f"linux-image-{profile.architecture}"]
    if profile.outputs.netboot is not None:
        pkgs += NETBOOT_PACKAGES
        if profile.outputs.netboot.secure_boot:
            pkgs += NETBOOT_SECURE_BOOT_PACKAGES
    if profile.outputs.disk is not None:
        pkgs += DISK_PACKAGES + DISK_PACKAGES_SPLIT.get(profile.suite, [])
    pkgs += profile.packages
    for declared in (role_packages or {}).values():
        pkgs += declared
    return sorted(set(pkgs))


def bootstrap(ctx: BuildContext) -> None:
    if ctx.tree is not None:
        ctx.cached.add("bootstrap")
        return
    hit = ctx.cache.lookup("bootstrap", ctx.keys.bootstrap)
    if hit is not None:
        ctx.bootstrap_dir = hit
        ctx.cached.add("bootstrap")
        return
    profile = ctx.profile
    packages = bootstrap_packages(profile, ctx.role_packages)
    staged = ctx.work / "bootstrap"
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        f"--architectures={profile.architecture}",
        f"--components={','.join(profile.components)}",
        f"--include={','.join(packages)}",
        # Hosts and mirrors are the build host's; the image's own apt sources come from the
        # base role. No recommends at bootstrap: the roles ask for what they want.
        "--aptopt=APT::Install-Recommends \"false\"",
        profile.suite,
        staged,
        *ctx.mirrors.source_lines(profile.suite, profile.components),
    ]
    run_logged("bootstrap", argv, ctx.log, stream=ctx.verbose)
    ctx.bootstrap_dir = ctx.cache.store(
        "bootstrap", ctx.keys.bootstrap, staged,
        {"profile": profile.name, "suite": profile.suite, "packages": packages},
    )
