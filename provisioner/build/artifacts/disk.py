"""Artifact `disk`: a raw GPT image that boots on legacy BIOS, UEFI and UEFI with Secure Boot.

    1  bios-boot   1 MiB   GRUB i386-pc core.img (grub-bios-setup puts boot.img in the MBR)
    2  esp        64 MiB   FAT32: Debian's signed shim + GRUB in EFI/debian and in the fallback
                           path EFI/BOOT/BOOTX64.EFI, and the one grub.cfg both firmwares read
    3  root       rest     ext4 of the finalized tree (discoverable root-x86-64 type); systemd-repart
                           and systemd-growfs make it fill the target disk on first boot

Assembled from per-partition images (mkfs.ext4 -d, mkfs.vfat + mcopy, sfdisk on a file, the
partitions copied in by their data extents, grub-bios-setup with a device map): no mount and no
loop device, so a failed build leaves nothing attached. Every boot file comes from the image's own
packages; UUIDs derive from the tree's cache key and every time from SOURCE_DATE_EPOCH, so the same
tree gives the same image. Shipped as NAME.img.zst + NAME.bmap (bmaptool's format).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from provisioner.build.artifacts import boot_password
from provisioner.build.context import BuildContext
from provisioner.build.runner import StepFailed, run_logged
from provisioner.formats import bmap
from provisioner.profile import DiskOutput

MiB = 1 << 20
SECTOR = 512
ESP_SIZE = 64 * MiB
BIOS_BOOT_SIZE = 1 * MiB
TYPE_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
TYPE_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
TYPE_ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # systemd-repart's Type=root
ROOT_LABEL = "deelit-root"
KERNEL_CMDLINE = "console=tty0 console=ttyS0,115200n8"
GRUB_TIMEOUT = 1
GRUB_BIOS_SETUP = Path("/usr/lib/grub/i386-pc/grub-bios-setup")
# Everything the BIOS core.img needs is built in: no module directory on disk to keep in step.
BIOS_MODULES = ["biosdisk", "part_gpt", "fat", "ext2", "search", "search_fs_uuid", "configfile",
                "normal", "echo", "test", "linux", "serial", "terminal", "password_pbkdf2"]
# Tree paths (Debian packages shim-signed, grub-efi-amd64-signed) -> names on the ESP.
EFI_FILES = {
    "usr/lib/shim/shimx64.efi.signed": ("EFI/BOOT/BOOTX64.EFI", "EFI/debian/shimx64.efi"),
    "usr/lib/shim/mmx64.efi.signed": ("EFI/BOOT/mmx64.efi", "EFI/debian/mmx64.efi"),
    "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed": ("EFI/BOOT/grubx64.efi",
                                                          "EFI/debian/grubx64.efi"),
}
KINDS = {".img.zst": "disk-image", ".bmap": "bmap"}

_templates = Environment(
    loader=PackageLoader("provisioner.build.artifacts", "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


def kind(name: str) -> str | None:
    return next((k for suffix, k in KINDS.items() if name.endswith(suffix)), None)


def parse_size(text: str) -> int:
    match = re.fullmatch(r"([0-9]+)(MiB|GiB)", text)
    if not match:
        raise ValueError(f"'{text}' is not a size like 4GiB or 512MiB")
    return int(match[1]) * (MiB if match[2] == "MiB" else 1024 * MiB)


@dataclass(frozen=True)
class DiskIds:
    """Stable identifiers: the same tree gives the same disk (every laptop shares them)."""

    disk: str
    bios_part: str
    esp_part: str
    root_part: str
    root_fs: str
    root_hash_seed: str
    esp_volume: str  # 8 hex digits: the FAT volume id

    @classmethod
    def derive(cls, seed: str) -> DiskIds:
        def one(what: str) -> str:
            return str(uuid.uuid5(uuid.NAMESPACE_URL, f"deelit-disk:{seed}:{what}"))

        return cls(one("disk"), one("bios"), one("esp"), one("root"), one("root-fs"),
                   one("root-hash"), one("esp-volume").replace("-", "")[:8].upper())

    @property
    def esp_uuid(self) -> str:
        """The FAT volume id as GRUB's search --fs-uuid and /dev/disk/by-uuid spell it."""
        return f"{self.esp_volume[:4]}-{self.esp_volume[4:]}"


@dataclass(frozen=True)
class Partition:
    name: str
    type_guid: str
    uuid: str
    start: int  # bytes from the start of the disk
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Layout:
    size: int
    disk_guid: str
    bios: Partition
    esp: Partition
    root: Partition

    @property
    def partitions(self) -> tuple[Partition, Partition, Partition]:
        return (self.bios, self.esp, self.root)

    def sfdisk_script(self) -> str:
        lines = ["label: gpt", f"label-id: {self.disk_guid}", "unit: sectors", "first-lba: 2048",
                 "sector-size: 512", ""]
        for p in self.partitions:
            lines.append(f"start={p.start // SECTOR}, size={p.size // SECTOR}, "
                         f"type={p.type_guid}, uuid={p.uuid}, name=\"{p.name}\"")
        return "\n".join(lines) + "\n"


def plan_layout(size: int, ids: DiskIds) -> Layout:
    """1 MiB aligned; the last MiB stays free for the backup GPT."""
    bios = Partition("bios-boot", TYPE_BIOS_BOOT, ids.bios_part, MiB, BIOS_BOOT_SIZE)
    esp = Partition("esp", TYPE_ESP, ids.esp_part, bios.end, ESP_SIZE)
    root_size = size - esp.end - MiB
    if size % MiB or root_size < 64 * MiB:
        raise ValueError(f"{size} bytes: a disk image needs whole MiB and at least "
                         f"{(esp.end + 65 * MiB) // MiB} MiB")
    root = Partition("root", TYPE_ROOT_X86_64, ids.root_part, esp.end, root_size)
    return Layout(size, ids.disk, bios, esp, root)


@dataclass(frozen=True)
class DiskStats:
    image: Path  # the compressed artifact
    image_size: int  # the raw disk, bytes
    mapped_size: int  # bytes bmaptool copies
    compressed_size: int
    seconds: dict[str, float]  # per phase


def image_name(profile_name: str, options: DiskOutput) -> str:
    return options.name or profile_name


def write(ctx: BuildContext, options: DiskOutput, dest: Path) -> DiskStats:
    """Writes NAME.img.zst and NAME.bmap into dest; scratch files stay in the build's work dir."""
    assert ctx.tree is not None
    phases: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        phases[name] = now - clock
        clock = now

    scratch = ctx.work / "disk"
    scratch.mkdir()
    name = image_name(ctx.profile.name, options)
    ids = DiskIds.derive(f"{ctx.profile.name}:{ctx.keys.tree}")
    try:
        layout = plan_layout(parse_size(options.size), ids)
    except ValueError as exc:
        raise StepFailed("artifacts", f"outputs.disk.size: {exc}", None) from None
    _check_boot_files(ctx.tree)
    root = _root_tree(ctx, scratch / "root", ids)
    lap("tree")
    grub_dir = _bios_core(ctx, root, scratch / "grub", ids)
    lap("grub-mkimage")
    raw = scratch / f"{name}.img"
    _partition(ctx, raw, layout)
    assert ctx.boot_password is not None
    _copy_in(raw, layout.esp, _esp_image(ctx, scratch / "esp.img", layout.esp, ids,
                                         ctx.boot_password.hash))
    lap("esp")
    _root_filesystem(ctx, root, raw, layout.root, ids)
    if raw.stat().st_size != layout.size:  # the backup GPT sits in the image's last MiB
        raise StepFailed("artifacts", f"mke2fs changed the size of {raw}", None)
    lap("mkfs.ext4")
    _install_bios_boot(ctx, raw, grub_dir, scratch)
    lap("bios-boot")
    block_map = bmap.create(raw)
    block_map.write(dest / f"{name}.bmap")
    lap("bmap")
    compressed = _compress(ctx, raw, options.compression_level, scratch / f"{name}.img.zst")
    final = dest / compressed.name
    os.rename(compressed, final)
    lap("zstd")
    stats = DiskStats(final, layout.size, block_map.mapped_bytes, final.stat().st_size, phases)
    with ctx.log.open("a") as log:
        log.write(f"disk {name}: image {stats.image_size / MiB:.0f} MiB, mapped "
                  f"{stats.mapped_size / MiB:.1f} MiB, compressed {stats.compressed_size / MiB:.1f} "
                  f"MiB; " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()) + "\n")
    return stats


def _check_boot_files(tree: Path) -> None:
    needed = [*EFI_FILES, "usr/lib/grub/i386-pc/boot.img", "usr/bin/grub-mkimage",
              "usr/sbin/mke2fs", "usr/lib64/ld-linux-x86-64.so.2", "vmlinuz", "initrd.img"]
    missing = [p for p in needed if not (tree / p).exists()]
    if missing:
        raise StepFailed(
            "artifacts",
            f"the tree {tree} lacks {', '.join(missing)}: the disk image needs grub-pc-bin, "
            "grub-efi-amd64-signed, shim-signed, e2fsprogs and a kernel (bootstrap adds them when the "
            "profile has outputs.disk; a role must not remove them)",
            None,
        )


def _render(template: str, **values: object) -> str:
    return _templates.get_template(template).render(**values)


def _write_new(path: Path, text: str, sde: int) -> None:
    """Replaces a file of the hard-linked copy without touching the cached tree's inode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_text(text)
    path.chmod(0o644)
    os.utime(path, (sde, sde))


def _root_tree(ctx: BuildContext, root: Path, ids: DiskIds) -> Path:
    """A hard-linked copy of the tree plus what only a disk install has (fstab, repart.d).

    The cached tree stays as it is (the netboot squashfs comes from it too): files here are only
    ever added or replaced, never written in place.
    """
    assert ctx.tree is not None
    run_logged("artifacts", ["cp", "-a", "-l", ctx.tree, root], ctx.log)
    sde = ctx.source_date_epoch
    values = {"profile": ctx.profile.name, "root_uuid": ids.root_fs}
    _write_new(root / "etc/fstab", _render("fstab.j2", **values), sde)
    _write_new(root / "etc/repart.d/50-deelit-root.conf", _render("repart-root.conf.j2", **values), sde)
    for folder in (root / "etc/repart.d", root / "etc"):
        os.utime(folder, (sde, sde))
    _atimes_after(root, sde)
    return root


def _atimes_after(root: Path, sde: int) -> None:
    """Moves every access time past SOURCE_DATE_EPOCH, so the image's mke2fs clamps them all to it.

    mke2fs keeps an access time older than SOURCE_DATE_EPOCH; the host's relatime moves it forward
    whenever a build, a test or mke2fs itself reads the file, so the same cached tree gave two
    different images. Access times only ever move forward from here, so they stay past it.
    """
    now = max(time.time_ns(), (sde + 1) * 1_000_000_000)
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            os.utime(path, ns=(now, os.lstat(path).st_mtime_ns), follow_symlinks=False)
    os.utime(root, ns=(now, os.lstat(root).st_mtime_ns))


def _bios_core(ctx: BuildContext, root: Path, grub_dir: Path, ids: DiskIds) -> Path:
    """core.img made by the image's own grub-mkimage (in a chroot: no mounts needed)."""
    work = root / ".deelit-grub"
    work.mkdir()
    (work / "early.cfg").write_text(_render("grub-bios-early.cfg.j2", esp_uuid=ids.esp_uuid))
    try:
        run_logged(
            "artifacts",
            ["chroot", root, "grub-mkimage", "-O", "i386-pc", "-d", "/usr/lib/grub/i386-pc",
             "-p", "/EFI/debian", "-c", "/.deelit-grub/early.cfg", "-o", "/.deelit-grub/core.img",
             *BIOS_MODULES],
            ctx.log,
        )
        grub_dir.mkdir()
        os.rename(work / "core.img", grub_dir / "core.img")
        shutil.copyfile(root / "usr/lib/grub/i386-pc/boot.img", grub_dir / "boot.img")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.utime(root, (ctx.source_date_epoch, ctx.source_date_epoch))
    return grub_dir


def _esp_image(ctx: BuildContext, image: Path, part: Partition, ids: DiskIds,
               password_hash: str) -> Path:
    assert ctx.tree is not None
    sde = ctx.source_date_epoch
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(sde), "MTOOLS_SKIP_CHECK": "1"}
    # mkfs.fat 4.2 takes the wall clock for the label's time unless --invariant, which also
    # pins the volume id to 1234-ABCD: mlabel (mtools honours SOURCE_DATE_EPOCH) sets ours.
    run_logged("artifacts", ["mkfs.vfat", "--invariant", "-C", "-F", "32", "-s", "1",
                             "-S", str(SECTOR), "-n", "ESP", image, str(part.size // 1024)],
               ctx.log, env=env)
    run_logged("artifacts", ["mlabel", "-i", image, "-N", ids.esp_volume, "::ESP"], ctx.log, env=env)
    run_logged("artifacts", ["mmd", "-i", image, "::EFI", "::EFI/BOOT", "::EFI/debian"],
               ctx.log, env=env)
    cfg = image.with_name("grub.cfg")
    cfg.write_text(_render("grub.cfg.j2", profile=ctx.profile.name, root_uuid=ids.root_fs,
                           title=f"deelit {ctx.profile.name} (Debian {ctx.profile.suite})",
                           cmdline=KERNEL_CMDLINE, timeout=GRUB_TIMEOUT,
                           user=boot_password.USER, password_hash=password_hash))
    os.utime(cfg, (sde, sde))
    copies = [(ctx.tree / src, dst) for src, dsts in EFI_FILES.items() for dst in dsts]
    copies += [(cfg, "EFI/debian/grub.cfg"), (cfg, "EFI/BOOT/grub.cfg")]
    for src, dst in copies:
        run_logged("artifacts", ["mcopy", "-m", "-i", image, src, f"::{dst}"], ctx.log, env=env)
    return image


def _tree_bytes(tree: Path) -> int:
    out = subprocess.run(["du", "-s", "-x", "-B1", str(tree)], capture_output=True, text=True,
                         check=False).stdout.split()
    return int(out[0]) if out and out[0].isdigit() else 0


def _root_filesystem(ctx: BuildContext, root: Path, raw: Path, part: Partition, ids: DiskIds) -> None:
    """mke2fs -d straight into the root partition of the disk image (-E offset): the data is
    written once, not to a partition image first and then copied in."""
    needed = _tree_bytes(root) * 12 // 10 + 64 * MiB  # metadata, journal and some room
    if needed > part.size:
        raise StepFailed(
            "artifacts",
            f"the tree needs about {needed // MiB} MiB but outputs.disk.size leaves "
            f"{part.size // MiB} MiB for the root partition; raise outputs.disk.size in the "
            f"profile '{ctx.profile.name}'",
            None,
        )
    assert ctx.tree is not None
    # The image's own mke2fs (run through its own dynamic loader, no chroot): its features match
    # the image's GRUB, kernel and e2fsck, and since e2fsprogs 1.47.1 it sets every inode time to
    # SOURCE_DATE_EPOCH (the host's 1.47.0 copies ctime/atime, which differ on every build).
    # nodiscard: the file is new and sparse; nothing outside the partition is touched.
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(ctx.source_date_epoch),
           "MKE2FS_CONFIG": str(ctx.tree / "etc/mke2fs.conf")}
    mke2fs = [*_tree_program(ctx.tree), ctx.tree / "usr/sbin/mke2fs"]
    run_logged(
        "artifacts",
        [*mke2fs, "-q", "-F", "-t", "ext4", "-L", ROOT_LABEL, "-U", ids.root_fs,
         "-E", f"hash_seed={ids.root_hash_seed},offset={part.start},nodiscard", "-d", root, raw,
         f"{part.size // 1024}k"],
        ctx.log, env=env, shown=["mke2fs (the image's)", "-d", root, f"{raw} at {part.start}"],
    )


def _tree_program(tree: Path) -> list[str | Path]:
    """Runs a program of the tree with the tree's loader and libraries (amd64 on amd64)."""
    return [tree / "usr/lib64/ld-linux-x86-64.so.2", "--library-path",
            f"{tree}/usr/lib/x86_64-linux-gnu"]


def _partition(ctx: BuildContext, raw: Path, layout: Layout) -> None:
    """The disk image as a sparse file with its partition table (sfdisk)."""
    with raw.open("wb") as f:
        f.truncate(layout.size)
    script = raw.with_name("partitions.sfdisk")
    script.write_text(layout.sfdisk_script())
    run_logged("artifacts", ["sh", "-c", 'exec sfdisk --no-reread --no-tell-kernel "$1" < "$2"',
                             "sfdisk", raw, script], ctx.log, shown=["sfdisk", raw])


def _copy_in(raw: Path, part: Partition, image: Path) -> None:
    """A partition image copied into its partition by its data extents."""
    size = image.stat().st_size
    if size > part.size:
        raise StepFailed("artifacts", f"{image.name} ({size} bytes) is larger than "
                         f"partition {part.name} ({part.size} bytes)", None)
    dst, src = os.open(raw, os.O_WRONLY), os.open(image, os.O_RDONLY)
    try:
        for start, end in bmap.data_extents(src, size):
            _copy_range(src, dst, start, end - start, part.start + start)
    finally:
        os.close(src)
        os.close(dst)


def _copy_range(src: int, dst: int, offset: int, length: int, dst_offset: int) -> None:
    while length > 0:
        done = os.copy_file_range(src, dst, length, offset, dst_offset)
        if done <= 0:
            raise StepFailed("artifacts", f"short copy into the disk image at {dst_offset}", None)
        offset, dst_offset, length = offset + done, dst_offset + done, length - done


# grub-bios-setup insists on finding the device that holds --directory in /proc/self/mountinfo.
# As mkosi does, it is shown a mountinfo where / is the image itself (mapped to (hd0) by the
# device map); the bind mount lives in a private mount namespace that dies with the process.
_FAKE_MOUNTINFO = 'mount --bind "$1" "/proc/$$/mountinfo" && shift && exec "$@"'


def _install_bios_boot(ctx: BuildContext, raw: Path, grub_dir: Path, scratch: Path) -> None:
    """boot.img into the MBR, core.img into the BIOS boot partition: the host's grub-bios-setup
    patches in the sector numbers; the bytes are the image's own GRUB's."""
    device_map = scratch / "device.map"
    device_map.write_text(f"(hd0) {raw}\n")
    mountinfo = scratch / "mountinfo"
    mountinfo.write_text(f"1 0 1:1 / / - fat {raw}\n")
    setup: list[str | Path] = [GRUB_BIOS_SETUP, "--directory", grub_dir, "--device-map", device_map, raw]
    run_logged("artifacts", ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             _FAKE_MOUNTINFO, "sh", mountinfo, *setup], ctx.log, shown=setup)


def _compress(ctx: BuildContext, raw: Path, level: int, out: Path) -> Path:
    ultra = ["--ultra"] if level > 19 else []
    run_logged("artifacts", ["zstd", "-q", "-T0", f"-{level}", *ultra, raw, "-o", out], ctx.log)
    return out
