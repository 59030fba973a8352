"""Flash targets: discovery from sysfs and lsblk, and every reason to refuse one.

A target is accepted only when deelit can show it is the intended, idle stick: it exists, is
a whole block device (or, with --to-file, an image file), holds neither the running system
nor the source image, has nothing mounted, no swap and no other holder, is writable, is big
enough, and is removable (or --allow-fixed was given). Nothing here writes or creates a file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.errors import DeelitError

SYSFS = Path("/sys")
PROC = Path("/proc")
DevNo = tuple[int, int]


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


# --- sysfs -------------------------------------------------------------------------------


def _read(p: Path, default: str = "") -> str:
    try:
        return p.read_text().strip()
    except OSError:
        return default


def _node(devno: DevNo, sysfs: Path) -> Path:
    return sysfs / "dev" / "block" / f"{devno[0]}:{devno[1]}"


def _devno_of(node: Path) -> DevNo | None:
    text = _read(node / "dev")
    if ":" not in text:
        return None
    major, minor = text.split(":", 1)
    return int(major), int(minor)


def _partitions(node: Path) -> list[Path]:
    try:
        return sorted(p for p in node.iterdir() if (p / "partition").is_file())
    except OSError:
        return []


def _children(node: Path, sub: str) -> list[Path]:
    """Entries of holders/ or slaves/, as sysfs device directories."""
    try:
        return [p.resolve() for p in (node / sub).iterdir()]
    except OSError:
        return []


def _family(node: Path) -> set[DevNo]:
    """The device, its partitions and everything stacked on them (dm, md, crypt)."""
    out: set[DevNo] = set()
    todo = [node, *_partitions(node)]
    while todo:
        n = todo.pop()
        devno = _devno_of(n)
        if devno is None or devno in out:
            continue
        out.add(devno)
        todo.extend(_children(n, "holders"))
    return out


def _disks_under(devno: DevNo, sysfs: Path) -> set[str]:
    """Kernel names of the whole disks a device lives on (partition → disk, dm → slaves)."""
    out: set[str] = set()
    todo = [_node(devno, sysfs)]
    seen: set[Path] = set()
    while todo:
        n = todo.pop()
        if not n.exists():
            continue
        real = n.resolve()
        if real in seen:
            continue
        seen.add(real)
        if (real / "partition").is_file():
            real = real.parent
        slaves = _children(real, "slaves")
        if slaves:
            todo.extend(slaves)
        else:
            out.add(real.name)
    return out


def _is_usb(node: Path) -> bool:
    return "/usb" in str(node.resolve())


# --- /proc ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    devno: DevNo
    mountpoint: str
    source: str


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(s: str) -> str:
    """mountinfo and /proc/swaps write space, tab, newline and backslash as \\ooo."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), s)


def mounts(mountinfo: Path = PROC / "self" / "mountinfo") -> list[Mount]:
    out: list[Mount] = []
    for line in _read(mountinfo).splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields:
            continue
        major, minor = fields[2].split(":")
        source = _unescape(fields[fields.index("-") + 2])
        out.append(Mount((int(major), int(minor)), _unescape(fields[4]), source))
    return out


def _mount_devnos(m: Mount) -> set[DevNo]:
    """A mount's device number, plus its source's (btrfs reports an anonymous 0:N)."""
    out = {m.devno}
    if m.source.startswith("/dev/"):
        try:
            st = os.stat(m.source)
            if stat.S_ISBLK(st.st_mode):
                out.add((os.major(st.st_rdev), os.minor(st.st_rdev)))
        except OSError:
            pass
    return out


def _swaps() -> list[DevNo]:
    out: list[DevNo] = []
    for line in _read(PROC / "swaps").splitlines()[1:]:
        path = _unescape(line.split()[0]) if line.split() else ""
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISBLK(st.st_mode):
            out.append((os.major(st.st_rdev), os.minor(st.st_rdev)))
    return out


def _mounted_elsewhere(family: set[DevNo]) -> str | None:
    """Names a mount of the device in another mount namespace (invisible in our mountinfo)."""
    seen_ns: set[str] = set()
    for pid_dir in PROC.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            ns = os.readlink(pid_dir / "ns" / "mnt")
        except OSError:
            continue
        if ns in seen_ns:
            continue
        seen_ns.add(ns)
        for m in mounts(pid_dir / "mountinfo"):
            if _mount_devnos(m) & family:
                comm = _read(pid_dir / "comm", "?")
                return f"{m.mountpoint} in the mount namespace of pid {pid_dir.name} ({comm})"
    return None


def system_disks(sysfs: Path = SYSFS) -> set[str]:
    """Whole disks holding the running system (/, /boot, /usr, /var)."""
    out: set[str] = set()
    by_mp = {m.mountpoint: m for m in mounts()}
    for mp in ("/", "/boot", "/boot/efi", "/usr", "/var"):
        if mp in by_mp:
            for devno in _mount_devnos(by_mp[mp]):
                out |= _disks_under(devno, sysfs)
    return out


# --- lsblk ---------------------------------------------------------------------------------

_LSBLK_COLS = "NAME,PATH,TYPE,SIZE,MODEL,SERIAL,RM,RO,TRAN,HOTPLUG,MOUNTPOINTS"


def lsblk(device: str | None = None) -> list[dict[str, object]]:
    """`lsblk --json` rows (model, serial, transport come from udev); [] if lsblk fails."""
    cmd = ["lsblk", "--json", "--bytes", "--nodeps", "-o", _LSBLK_COLS]
    if device:
        cmd.append(device)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        rows = json.loads(res.stdout or "{}").get("blockdevices", [])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []
    return rows if isinstance(rows, list) else []


def _clean(v: object) -> str | None:
    return str(v).strip() or None if v is not None else None


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
        source_disks = _disks_under((os.major(st.st_dev), os.minor(st.st_dev)), sysfs)
    ctx = _Context(image_size, source, allow_fixed, to_file, sysfs, system_disks(sysfs),
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
    node = _node(devno, ctx.sysfs)
    if not node.exists():
        return f"has no sysfs entry ({node}); cannot prove what it is"
    real = node.resolve()
    name = real.name
    if (real / "partition").is_file():
        return f"is a partition of /dev/{real.parent.name}; give the whole disk"
    if name in ctx.system:
        return "holds the running system; this is the computer's own disk"
    backing = _read(real / "loop" / "backing_file")
    if ctx.source is not None and backing and _same(backing, ctx.source):
        return "is a loop device over the source image"
    if name in ctx.source_disks:
        return f"holds the source image ({ctx.source}); copy the image elsewhere first"
    family = _family(real)
    for m in mounts():
        if _mount_devnos(m) & family:
            return f"has a mounted filesystem ({m.source} on {m.mountpoint}); unmount it first"
    if set(_swaps()) & family:
        return "is in use as swap; run swapoff first"
    holders = [h.name for n in (real, *_partitions(real)) for h in _children(n, "holders")]
    if holders:
        return f"is in use by {', '.join(sorted(holders))} (device-mapper, RAID or LVM)"
    busy = _exclusive_probe(path, family)
    if busy:
        return busy
    if _read(real / "ro") == "1":
        return "is read-only (write-protect switch?)"
    size = int(_read(real / "size", "0")) * 512
    if size == 0:
        return "has no medium (empty card reader, or a loop device with no file attached)"
    if size < ctx.image_size:
        return f"is too small: {size} bytes for an image of {ctx.image_size} bytes"
    removable = _read(real / "removable") == "1" or _is_usb(real)
    if not removable and not ctx.allow_fixed:
        return "is not removable (a fixed disk); pass --allow-fixed if you really mean it"
    info = next(iter(lsblk(str(path))), {})
    return Target(path=path, is_file=False, size=size, devno=devno, name=name,
                  model=_clean(info.get("model")), serial=_clean(info.get("serial")),
                  transport=_clean(info.get("tran")) or ("usb" if _is_usb(real) else None),
                  removable=removable)


def _same(a: str, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _exclusive_probe(path: Path, family: set[DevNo]) -> str | None:
    """O_EXCL fails while the kernel holds the device: a mount in any namespace, swap, md."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            return f"cannot be opened: {exc.strerror}"
        where = _mounted_elsewhere(family)
        if where:
            return f"has a mounted filesystem ({where}); unmount it first"
        return "is busy (held by the kernel or another program); close it and retry"
    os.close(fd)
    return None


def candidates(sysfs: Path = SYSFS) -> list[Candidate]:
    """Whole disks with a medium, each with the reason it would be refused (None: usable)."""
    info = {str(r.get("name")): r for r in lsblk()}
    system = system_disks(sysfs)
    out: list[Candidate] = []
    for entry in sorted((sysfs / "block").iterdir()):
        devno = _devno_of(entry)
        size = int(_read(entry / "size", "0")) * 512
        if devno is None or size == 0:
            continue
        row = info.get(entry.name, {})
        dev = Path(str(row.get("path") or f"/dev/{entry.name}"))
        ctx = _Context(0, None, False, False, sysfs, system, set())
        verdict = _check_block(dev, devno, ctx) if dev.exists() else "no device node"
        mps = row.get("mountpoints") or []
        out.append(Candidate(
            path=dev, size=size, model=_clean(row.get("model")),
            serial=_clean(row.get("serial")), transport=_clean(row.get("tran")),
            removable=_read(entry / "removable") == "1" or _is_usb(entry),
            read_only=_read(entry / "ro") == "1",
            mountpoints=[str(m) for m in mps if m] if isinstance(mps, list) else [],
            refusal=verdict if isinstance(verdict, str) else None))
    return out
