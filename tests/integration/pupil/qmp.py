"""Screenshots of a QEMU guest as images, and the measures the pupil tests judge screens by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from provisioner.lab import qmp as lab_qmp


class QMP(lab_qmp.QMP):
    """The lab's QMP client, with screenshots as images to judge."""

    def screenshot(self, png: Path) -> Image.Image:  # type: ignore[override]
        return Image.open(super().screenshot(png)).convert("RGB")


def _pixels(image: Image.Image) -> list[tuple[int, int, int]]:
    """(r, g, b) of a reduced copy: enough to judge a screen, quick to count."""
    return list(image.convert("RGB").resize((160, 120)).getdata())


def share(image: Image.Image, wanted: Any) -> float:
    """The fraction of pixels whose (r, g, b) `wanted` accepts."""
    pixels = _pixels(image)
    return sum(1 for p in pixels if wanted(*p)) / len(pixels)


def changed_share(before: Image.Image, after: Image.Image) -> float:
    """The fraction of pixels that differ between two screens."""
    a, b = _pixels(before), _pixels(after)
    return sum(1 for p, q in zip(a, b, strict=True)
               if sum(abs(x - y) for x, y in zip(p, q, strict=True)) > 30) / len(a)


def distinct_colours(image: Image.Image) -> int:
    small = image.resize((160, 120))
    return len(set(small.getdata()))
