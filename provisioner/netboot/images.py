"""The target disk image as the station serves it: raw and sparse, so agents fetch byte ranges.

Builds ship `NAME.img.zst` + `NAME.bmap`; zstd frames cannot be read at an offset, so the
station expands the image once per build id into DATA/images/BUILD_ID/disk.img (holes stay
holes) and agents ask for exactly the mapped ranges with HTTP Range requests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import DeelitError
from provisioner.formats import bmap as bm
from provisioner.formats import manifest as fm


@dataclass(frozen=True)
class PreparedImage:
    build_id: str
    profile: str
    folder: Path  # disk.img, disk.bmap, manifest.json
    size: int
    mapped_bytes: int

    @property
    def raw(self) -> Path:
        return self.folder / "disk.img"


def _find(image_dir: Path) -> tuple[Path, Path, fm.Manifest]:
    manifest = fm.read(image_dir / fm.FILENAME)
    images = sorted(image_dir.glob("*.img.zst")) or sorted(image_dir.glob("*.img"))
    if not images:
        raise DeelitError(
            f"{image_dir} has no disk image (*.img.zst): build a profile with `outputs: disk:`"
        )
    image = images[0]
    stem = image.name.removesuffix(".zst").removesuffix(".img")
    bmap_path = image_dir / f"{stem}.bmap"
    if not bmap_path.is_file():
        raise DeelitError(f"{bmap_path}: missing; the disk image needs its block map")
    return image, bmap_path, manifest


def prepare(image_dir: Path, data_dir: Path) -> PreparedImage:
    """Expands the build's disk image once; a half-expanded one is never served."""
    image, bmap_path, manifest = _find(image_dir)
    fm.check_files(manifest, image_dir, [image.name, bmap_path.name])  # before serving a byte
    build_id, profile = manifest.build_id, manifest.profile.name
    folder = data_dir / "images" / build_id
    block_map = bm.load(bmap_path)
    done = folder / ".complete"
    if not done.exists():
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        raw = staging / "disk.img"
        if image.name.endswith(".zst"):
            proc = subprocess.run(["zstd", "-q", "-d", "--sparse", "-f", "-o", str(raw), str(image)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise DeelitError(f"zstd could not expand {image}: {proc.stderr.strip()}")
        else:
            subprocess.run(["cp", "--sparse=always", str(image), str(raw)], check=True)
        if raw.stat().st_size != block_map.image_size:
            raise DeelitError(f"{image}: {raw.stat().st_size} bytes expanded, but {bmap_path} "
                              f"says {block_map.image_size}: image and block map do not match")
        shutil.copyfile(bmap_path, staging / "disk.bmap")
        shutil.copyfile(image_dir / fm.FILENAME, staging / fm.FILENAME)
        (staging / ".complete").write_text(build_id + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    return PreparedImage(build_id=build_id, profile=profile, folder=folder,
                         size=block_map.image_size,
                         mapped_bytes=block_map.mapped_blocks * block_map.block_size)
