"""The station tests' check that a laptop's disk holds the image."""

from __future__ import annotations

import hashlib
from pathlib import Path

from provisioner.formats import bmap as bm


def installed_image_matches(disk: Path, image_dir: Path) -> None:
    """Every mapped range of the image is on the disk (LBA 0/1 change when GPT relocates)."""
    block_map = bm.load(next(image_dir.glob("*.bmap")))
    with disk.open("rb") as f:
        for r in block_map.ranges:
            start, end = r.first * 4096, min((r.last + 1) * 4096, block_map.image_size)
            f.seek(start)
            data = f.read(end - start)
            if start == 0:
                continue  # protective MBR and primary GPT header are rewritten by the relocation
            assert hashlib.sha256(data).hexdigest() == r.checksum, f"range {r.first}-{r.last}"
