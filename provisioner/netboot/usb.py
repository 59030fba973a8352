"""The offline installer stick: the installer's disk image (written by `deelit flash`) plus a
`deelit/` folder on its root filesystem with the target image, station.json and the queue.

Files go in and the queue comes out with debugfs on the root partition at its offset: no
mount, so nothing is left mounted if a step fails, and it works on an image file as on a stick.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from provisioner.errors import DeelitError
from provisioner.formats import manifest as fm

ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # the disk artifact's root partition


def root_offset(stick: Path) -> int:
    proc = subprocess.run(["sfdisk", "--json", str(stick)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise DeelitError(f"{stick}: no partition table ({proc.stderr.strip()}); write the "
                          "installer's disk image to it first (deelit flash)")
    table = json.loads(proc.stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    roots = [p for p in table.get("partitions", []) if str(p.get("type", "")).upper() == ROOT_TYPE]
    if len(roots) != 1:
        raise DeelitError(f"{stick}: not a deelit installer stick (no single root partition)")
    return int(roots[0]["start"]) * sector


def _refuse_mounted(stick: Path) -> None:
    if not stick.is_block_device():
        return
    mounts = Path("/proc/self/mounts").read_text().split()
    if any(m.startswith(str(stick)) for m in mounts):
        raise DeelitError(f"refusing {stick}: it is mounted; unmount it first")


def _debugfs(stick: Path, commands: list[str], write: bool) -> str:
    spec = f"{stick}?offset={root_offset(stick)}"
    proc = subprocess.run(["debugfs", *(["-w"] if write else []), "-f", "-", spec],
                          input="\n".join(commands) + "\n", capture_output=True, text=True,
                          check=False)
    bad = [ln for ln in proc.stderr.splitlines()
           if ln.strip() and not ln.startswith("debugfs ") and "Allocated inode" not in ln]
    if proc.returncode != 0 or bad:
        raise DeelitError(f"debugfs on {stick}: {'; '.join(bad) or proc.returncode}")
    return proc.stdout


def prepare(stick: Path, image_dir: Path, *, action: str = "wipe-install",
            point: str | None = None, thresholds: Path | None = None,
            batch: bool = False) -> None:
    """Puts the target image and station.json on the stick, and an empty queue folder.
    `batch`: laptops booted from it are wiped without the typed confirmation."""
    _refuse_mounted(stick)
    root_offset(stick)  # an installer stick at all, before looking at the image
    images = sorted(image_dir.glob("*.img.zst"))
    maps = sorted(image_dir.glob("*.bmap"))
    manifest = image_dir / "manifest.json"
    if not images or not maps or not manifest.is_file():
        raise DeelitError(f"{image_dir}: needs NAME.img.zst, NAME.bmap and manifest.json "
                          "(a build with outputs.disk)")
    fm.check_files(fm.read(manifest), image_dir, [images[0].name, maps[0].name])
    with tempfile.TemporaryDirectory() as tmp:
        station = Path(tmp) / "station.json"
        station.write_text(json.dumps({"action": action, **({"point": point} if point else {}),
                                       **({"batch": True} if batch else {})}))
        cmds = ["mkdir /deelit", "mkdir /deelit/image", "mkdir /deelit/queue",
                "mkdir /deelit/certificates", "cd /deelit/image"]
        cmds += [f"write {p} {p.name}" for p in (images[0], maps[0], manifest)]
        cmds += ["cd /deelit", f"write {station} station.json"]
        if thresholds is not None:
            cmds.append(f"write {thresholds} thresholds.yaml")
        _debugfs(stick, cmds, write=True)


def read_queue(stick: Path, dest: Path) -> list[Path]:
    """Copies the stick's queued records into dest (for `deelit registry import dest`)."""
    dest.mkdir(parents=True, exist_ok=True)
    _debugfs(stick, [f"rdump /deelit/queue {dest}"], write=False)
    return sorted((dest / "queue").glob("*.json"))
