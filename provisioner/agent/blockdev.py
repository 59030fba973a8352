"""Which disk a path is, whether the running system uses it, and its confirmation token."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.agent.sysrun import run
from provisioner.errors import DeelitError


@dataclass(frozen=True)
class Safety:
    """Where the in-use checks look; tests point them at a fake mountinfo."""

    mountinfo: Path = Path("/proc/self/mountinfo")
    swaps: Path = Path("/proc/swaps")
    sysfs: Path = Path("/sys")


@dataclass
class DiskIdentity:
    path: str
    name: str  # kernel name: sda, nvme0n1, vdb, loop3
    size_bytes: int
    logical_block_size: int
    rotational: bool
    kind: str  # nvme, ata, virtio, loop, other
    model: str | None = None
    serial: str | None = None
    vendor: str | None = None
    transport: str | None = None
    backing_file: str | None = None  # loop devices only
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def nvme_controller(self) -> str | None:
        match = re.fullmatch(r"(nvme\d+)n\d+", self.name)
        return f"/dev/{match.group(1)}" if match else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _sys_name(devnum: int, sysfs: Path) -> Path | None:
    link = sysfs / "dev" / "block" / f"{os.major(devnum)}:{os.minor(devnum)}"
    return link.resolve() if link.exists() else None


def _whole_disk(node: Path) -> Path:
    return node.parent if (node / "partition").exists() else node


def identify(path: str, safety: Safety = Safety()) -> DiskIdentity:
    """Identity of a whole disk; a partition, a file or a missing node is refused."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DeelitError(f"{path}: {exc.strerror}: give a disk device such as /dev/sda") from exc
    if not stat.S_ISBLK(st.st_mode):
        raise DeelitError(f"{path} is not a block device: give a disk such as /dev/sda")
    node = _sys_name(st.st_rdev, safety.sysfs)
    if node is None:
        raise DeelitError(f"{path}: no entry under {safety.sysfs}/dev/block: is sysfs mounted?")
    if (node / "partition").exists():
        raise DeelitError(
            f"{path} is a partition of /dev/{node.parent.name}: wipe the whole disk instead"
        )
    name = node.name
    sectors = int(_read(node / "size") or 0)
    if sectors == 0:
        raise DeelitError(f"{path} has size 0 (no medium, or a detached loop device)")
    lbs = int(_read(node / "queue" / "logical_block_size") or 512)
    device = node / "device"
    ident = DiskIdentity(
        path=path,
        name=name,
        size_bytes=sectors * 512,  # sysfs counts 512-byte sectors whatever the block size
        logical_block_size=lbs,
        rotational=_read(node / "queue" / "rotational") == "1",
        kind="other",
        model=_read(device / "model"),
        serial=_read(device / "serial"),
        vendor=_read(device / "vendor"),
        backing_file=_read(node / "loop" / "backing_file"),
    )
    try:  # udev's view (ATA serials live there, not in sysfs)
        cols = "MODEL,SERIAL,TRAN,VENDOR"
        rows = json.loads(run(["lsblk", "--json", "-d", "-o", cols, path]).stdout)
        row = rows["blockdevices"][0]
        ident.model = (row.get("model") or ident.model or "").strip() or None
        ident.serial = (row.get("serial") or ident.serial or "").strip() or None
        ident.vendor = (row.get("vendor") or ident.vendor or "").strip() or None
        ident.transport = row.get("tran")
    except (DeelitError, KeyError, IndexError, ValueError):
        pass
    if name.startswith("nvme"):
        ident.kind = "nvme"
    elif name.startswith("loop"):
        ident.kind = "loop"
    elif name.startswith("vd"):
        ident.kind = "virtio"
    elif ident.transport in ("sata", "ata") or (ident.vendor or "").upper() == "ATA":
        ident.kind = "ata"
    return ident


def confirmation_token(ident: DiskIdentity) -> str:
    """Short token derived from what makes this disk itself: model, serial, size.

    A serial-less disk (loop, some virtio) adds its backing file or kernel name, so a token
    typed for one disk never matches another.
    """
    parts = [ident.model or "", ident.serial or "", str(ident.size_bytes)]
    if not ident.serial:
        parts += [ident.backing_file or "", ident.name]
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:8].upper()
    return f"WIPE-{digest[:4]}-{digest[4:]}"


def _disks_under(node: Path, safety: Safety, seen: set[str]) -> set[str]:
    """Whole disks a block device sits on: through partitions, dm/md slaves and loop files."""
    disk = _whole_disk(node)
    if disk.name in seen:
        return set()
    seen.add(disk.name)
    found = {disk.name}
    for slaves in (node / "slaves", disk / "slaves"):
        if slaves.is_dir():
            for slave in slaves.iterdir():
                found |= _disks_under(slave.resolve(), safety, seen)
    backing = _read(disk / "loop" / "backing_file")
    if backing:
        try:
            below = _sys_name(os.stat(backing).st_dev, safety.sysfs)
        except OSError:
            below = None
        if below is not None:
            found |= _disks_under(below, safety, seen)
    return found


def disks_in_use(safety: Safety = Safety()) -> dict[str, str]:
    """Disk name → why the running system needs it (mounted filesystems, swap)."""
    used: dict[str, str] = {}

    def mark(devnum: int | None, why: str) -> None:
        node = _sys_name(devnum, safety.sysfs) if devnum is not None else None
        if node is not None:
            for disk in _disks_under(node, safety, set()):
                used.setdefault(disk, why)

    try:
        lines = safety.mountinfo.read_text().splitlines()
    except OSError as exc:
        raise DeelitError(f"cannot read {safety.mountinfo}: {exc.strerror}") from exc
    # Root first, so the boot disk is reported as such even if other mounts share it.
    entries = []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 2:
            entries.append((fields[2], fields[4], tail[1]))
    entries.sort(key=lambda e: e[1] != "/")
    for majmin, mountpoint, source in entries:
        why = (
            "holds the running system's root filesystem (the disk it booted from)"
            if mountpoint == "/"
            else f"has a filesystem mounted at {mountpoint}"
        )
        major, _, minor = majmin.partition(":")
        if major != "0":
            mark(os.makedev(int(major), int(minor)), why)
        elif source.startswith("/dev/"):  # btrfs and friends report an anonymous 0:N
            with contextlib.suppress(OSError):
                mark(os.stat(source).st_rdev, why)
    try:
        swaps = safety.swaps.read_text().splitlines()[1:]
    except OSError:
        swaps = []
    for line in swaps:
        source = line.split()[0] if line.split() else ""
        if source.startswith("/dev/"):
            with contextlib.suppress(OSError):
                mark(os.stat(source).st_rdev, "is used as swap")
    return used


def refuse_if_in_use(ident: DiskIdentity, safety: Safety = Safety()) -> None:
    used = disks_in_use(safety)
    if ident.name in used:
        raise DeelitError(
            f"refusing to wipe {ident.path}: it {used[ident.name]}; "
            "boot the installer from USB or the network and wipe the internal disk from there"
        )
    node = safety.sysfs / "block" / ident.name
    holders = [h.name for h in (node / "holders").glob("*")]
    for part in node.glob(f"{ident.name}*"):
        holders += [h.name for h in (part / "holders").glob("*")]
    if holders:
        raise DeelitError(
            f"refusing to wipe {ident.path}: in use by {', '.join(sorted(holders))} "
            "(device-mapper, RAID or LVM): close those first"
        )
