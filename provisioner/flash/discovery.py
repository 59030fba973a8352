"""What block devices there are and what holds them: sysfs, /proc mounts and swaps, lsblk.

Facts only, read without opening any device for writing; what those facts mean for a flash
target (accepted or refused, and why) is decided in policy.py.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

SYSFS = Path("/sys")
PROC = Path("/proc")
DevNo = tuple[int, int]


# --- sysfs -------------------------------------------------------------------------------


def read_attr(p: Path, default: str = "") -> str:
    """A sysfs or procfs file's text, stripped; `default` when it cannot be read."""
    try:
        return p.read_text().strip()
    except OSError:
        return default


def node(devno: DevNo, sysfs: Path) -> Path:
    return sysfs / "dev" / "block" / f"{devno[0]}:{devno[1]}"


def devno_of(entry: Path) -> DevNo | None:
    text = read_attr(entry / "dev")
    if ":" not in text:
        return None
    major, minor = text.split(":", 1)
    return int(major), int(minor)


def partitions(entry: Path) -> list[Path]:
    try:
        return sorted(p for p in entry.iterdir() if (p / "partition").is_file())
    except OSError:
        return []


def children(entry: Path, sub: str) -> list[Path]:
    """Entries of holders/ or slaves/, as sysfs device directories."""
    try:
        return [p.resolve() for p in (entry / sub).iterdir()]
    except OSError:
        return []


def family(entry: Path) -> set[DevNo]:
    """The device, its partitions and everything stacked on them (dm, md, crypt)."""
    out: set[DevNo] = set()
    todo = [entry, *partitions(entry)]
    while todo:
        n = todo.pop()
        devno = devno_of(n)
        if devno is None or devno in out:
            continue
        out.add(devno)
        todo.extend(children(n, "holders"))
    return out


def disks_under(devno: DevNo, sysfs: Path) -> set[str]:
    """Kernel names of the whole disks a device lives on (partition → disk, dm → slaves)."""
    out: set[str] = set()
    todo = [node(devno, sysfs)]
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
        slaves = children(real, "slaves")
        if slaves:
            todo.extend(slaves)
        else:
            out.add(real.name)
    return out


def is_usb(entry: Path) -> bool:
    return "/usb" in str(entry.resolve())


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
    for line in read_attr(mountinfo).splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields:
            continue
        major, minor = fields[2].split(":")
        source = _unescape(fields[fields.index("-") + 2])
        out.append(Mount((int(major), int(minor)), _unescape(fields[4]), source))
    return out


def mount_devnos(m: Mount) -> set[DevNo]:
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


def swaps() -> list[DevNo]:
    out: list[DevNo] = []
    for line in read_attr(PROC / "swaps").splitlines()[1:]:
        path = _unescape(line.split()[0]) if line.split() else ""
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISBLK(st.st_mode):
            out.append((os.major(st.st_rdev), os.minor(st.st_rdev)))
    return out


def mounted_elsewhere(devnos: set[DevNo]) -> str | None:
    """Names a mount of the devices in another mount namespace (invisible in our mountinfo)."""
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
            if mount_devnos(m) & devnos:
                comm = read_attr(pid_dir / "comm", "?")
                return f"{m.mountpoint} in the mount namespace of pid {pid_dir.name} ({comm})"
    return None


def system_disks(sysfs: Path = SYSFS) -> set[str]:
    """Whole disks holding the running system (/, /boot, /usr, /var)."""
    out: set[str] = set()
    by_mp = {m.mountpoint: m for m in mounts()}
    for mp in ("/", "/boot", "/boot/efi", "/usr", "/var"):
        if mp in by_mp:
            for devno in mount_devnos(by_mp[mp]):
                out |= disks_under(devno, sysfs)
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


def clean(v: object) -> str | None:
    """An lsblk value as text, None when absent or blank."""
    return str(v).strip() or None if v is not None else None
