"""A minimal QMP client: screenshots and key presses on a QEMU guest (no extra dependency)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from PIL import Image


class QMP:
    def __init__(self, path: Path, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.sock.settimeout(120)
        self.reader = self.sock.makefile("r")
        json.loads(self.reader.readline())  # greeting
        self.execute("qmp_capabilities")

    def execute(self, command: str, **arguments: Any) -> Any:
        self.sock.sendall(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
        while True:
            reply = json.loads(self.reader.readline())
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error']}")
            # anything else is an asynchronous event: skip it

    def screenshot(self, png: Path) -> Image.Image:
        """The guest's screen as PNG (QEMU writes PPM; the file tool and people want PNG)."""
        ppm = png.with_suffix(".ppm")
        self.execute("screendump", filename=str(ppm))
        image = Image.open(ppm).convert("RGB")
        image.save(png)
        ppm.unlink()
        return image

    def key(self, *names: str) -> None:
        """Presses the keys together (QEMU qcode names: ret, esc, tab, alt, …)."""
        keys = [{"type": "qcode", "data": n} for n in names]
        self.execute("send-key", keys=keys)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


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
