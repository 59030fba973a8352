"""Which flash targets are accepted, and every reason to refuse one.

A target is accepted only when deelit can show it is the intended, idle stick: it exists, is
a whole block device (or, with --to-file, an image file), holds neither the running system
nor the source image, has nothing mounted, no swap and no other holder, is writable, is big
enough, and is removable (or --allow-fixed was given). The facts come from discovery.py;
nothing here writes or creates a file.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.errors import DeelitError
from provisioner.flash import discovery as dv
from provisioner.flash.discovery import SYSFS, DevNo


@dataclass(frozen=True)
class Target:
    """An accepted target; `devno` pins the exact device so a swapped stick is noticed."""

    path: Path
    is_file: bool
    size: int
    devno: DevNo | None = None
    name: str = ""
    model: str | None = None
    serial: str | None = None
    transport: str | None = None
    removable: bool = False

    @property
    def label(self) -> str:
        parts = [p for p in (self.model, self.serial) if p]
        return f"{self.path} ({', '.join(parts)})" if parts else str(self.path)


@dataclass(frozen=True)
class Refusal:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class TargetRefused(DeelitError):
    """One or more targets failed the checks; nothing has been written to any of them."""

    def __init__(self, refusals: list[Refusal]) -> None:
        self.refusals = refusals
        lines = "\n  ".join(str(r) for r in refusals)
        super().__init__(f"refusing to flash; nothing was written:\n  {lines}", exit_code=2)


@dataclass
class Candidate:
    """A whole disk as `deelit flash --list` shows it, with the reason it would be refused."""

    path: Path
    size: int
    model: str | None
    serial: str | None
    transport: str | None
    removable: bool
    read_only: bool
    mountpoints: list[str] = field(default_factory=list)
    refusal: str | None = None


# --- the checks ----------------------------------------------------------------------------


@dataclass
class _Context:
    image_size: int
    source: Path | None
    allow_fixed: bool
    to_file: bool
    sysfs: Path
    system: set[str]
    source_disks: set[str]


def check(
    paths: list[str],
    *,
    image_size: int,
    source: Path | None,
    allow_fixed: bool = False,
    to_file: bool = False,
    sysfs: Path = SYSFS,
) -> list[Target]:
    """Accepts every target or raises TargetRefused listing each refusal with its reason."""
    source_disks: set[str] = set()
    if source is not None:
        st = os.stat(source)
        source_disks = dv.disks_under((os.major(st.st_dev), os.minor(st.st_dev)), sysfs)
    ctx = _Context(image_size, source, allow_fixed, to_file, sysfs, dv.system_disks(sysfs),
                   source_disks)
    accepted: list[Target] = []
    refusals: list[Refusal] = []
    seen: dict[object, str] = {}
    for p in paths:
        result = _check_one(p, ctx)
        if isinstance(result, str):
            refusals.append(Refusal(p, result))
            continue
        key = result.devno if result.devno else os.path.realpath(p)
        if key in seen:
            refusals.append(Refusal(p, f"is the same target as {seen[key]}; give each once"))
            continue
        seen[key] = p
        accepted.append(result)
    if not paths:
        refusals.append(Refusal("(none)", "no target given"))
    if refusals:
        raise TargetRefused(refusals)
    return accepted


def _check_one(p: str, ctx: _Context) -> Target | str:
    path = Path(p)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if ctx.to_file and not os.path.realpath(path).startswith("/dev/"):
            return _check_new_file(path)
        return "does not exist (is the stick plugged in? see `deelit flash --list`)"
    except OSError as exc:
        return f"cannot be inspected: {exc.strerror}"
    if stat.S_ISREG(st.st_mode):
        return _check_file(path, ctx)
    if not stat.S_ISBLK(st.st_mode):
        return "is not a block device (see `deelit flash --list` for the sticks)"
    return _check_block(path, (os.major(st.st_rdev), os.minor(st.st_rdev)), ctx)


def _check_new_file(path: Path) -> Target | str:
    if not path.parent.is_dir():
        return f"does not exist, and neither does its folder {path.parent}"
    return Target(path=path, is_file=True, size=0)


def _check_file(path: Path, ctx: _Context) -> Target | str:
    if not ctx.to_file:
        return "is a regular file, not a block device; pass --to-file to write an image file"
    if ctx.source is not None and path.samefile(ctx.source):
        return "is the source image itself"
    if not os.access(path, os.W_OK):
        return "is read-only"
    return Target(path=path, is_file=True, size=path.stat().st_size)


def _check_block(path: Path, devno: DevNo, ctx: _Context) -> Target | str:
    entry = dv.node(devno, ctx.sysfs)
    if not entry.exists():
        return f"has no sysfs entry ({entry}); cannot prove what it is"
    real = entry.resolve()
    name = real.name
    if (real / "partition").is_file():
        return f"is a partition of /dev/{real.parent.name}; give the whole disk"
    if name in ctx.system:
        return "holds the running system; this is the computer's own disk"
    backing = dv.read_attr(real / "loop" / "backing_file")
    if ctx.source is not None and backing and _same(backing, ctx.source):
        return "is a loop device over the source image"
    if name in ctx.source_disks:
        return f"holds the source image ({ctx.source}); copy the image elsewhere first"
    devnos = dv.family(real)
    for m in dv.mounts():
        if dv.mount_devnos(m) & devnos:
            return f"has a mounted filesystem ({m.source} on {m.mountpoint}); unmount it first"
    if set(dv.swaps()) & devnos:
        return "is in use as swap; run swapoff first"
    holders = [h.name for n in (real, *dv.partitions(real)) for h in dv.children(n, "holders")]
    if holders:
        return f"is in use by {', '.join(sorted(holders))} (device-mapper, RAID or LVM)"
    busy = _exclusive_probe(path, devnos)
    if busy:
        return busy
    if dv.read_attr(real / "ro") == "1":
        return "is read-only (write-protect switch?)"
    size = int(dv.read_attr(real / "size", "0")) * 512
    if size == 0:
        return "has no medium (empty card reader, or a loop device with no file attached)"
    if size < ctx.image_size:
        return f"is too small: {size} bytes for an image of {ctx.image_size} bytes"
    removable = dv.read_attr(real / "removable") == "1" or dv.is_usb(real)
    if not removable and not ctx.allow_fixed:
        return "is not removable (a fixed disk); pass --allow-fixed if you really mean it"
    info = next(iter(dv.lsblk(str(path))), {})
    return Target(path=path, is_file=False, size=size, devno=devno, name=name,
                  model=dv.clean(info.get("model")), serial=dv.clean(info.get("serial")),
                  transport=dv.clean(info.get("tran")) or ("usb" if dv.is_usb(real) else None),
                  removable=removable)


def _same(a: str, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _exclusive_probe(path: Path, devnos: set[DevNo]) -> str | None:
    """O_EXCL fails while the kernel holds the device: a mount in any namespace, swap, md."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            return f"cannot be opened: {exc.strerror}"
        where = dv.mounted_elsewhere(devnos)
        if where:
            return f"has a mounted filesystem ({where}); unmount it first"
        return "is busy (held by the kernel or another program); close it and retry"
    os.close(fd)
    return None


def candidates(sysfs: Path = SYSFS) -> list[Candidate]:
    """Whole disks with a medium, each with the reason it would be refused (None: usable)."""
    info = {str(r.get("name")): r for r in dv.lsblk()}
    system = dv.system_disks(sysfs)
    out: list[Candidate] = []
    for entry in sorted((sysfs / "block").iterdir()):
        devno = dv.devno_of(entry)
        size = int(dv.read_attr(entry / "size", "0")) * 512
        if devno is None or size == 0:
            continue
        row = info.get(entry.name, {})
        dev = Path(str(row.get("path") or f"/dev/{entry.name}"))
        ctx = _Context(0, None, False, False, sysfs, system, set())
        verdict = _check_block(dev, devno, ctx) if dev.exists() else "no device node"
        mps = row.get("mountpoints") or []
        out.append(Candidate(
            path=dev, size=size, model=dv.clean(row.get("model")),
            serial=dv.clean(row.get("serial")), transport=dv.clean(row.get("tran")),
            removable=dv.read_attr(entry / "removable") == "1" or dv.is_usb(entry),
            read_only=dv.read_attr(entry / "ro") == "1",
            mountpoints=[str(m) for m in mps if m] if isinstance(mps, list) else [],
            refusal=verdict if isinstance(verdict, str) else None))
    return out
