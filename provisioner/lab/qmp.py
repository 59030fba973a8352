"""A minimal QMP client for the lab's virtual laptops: screenshots and key presses.

QEMU's machine protocol over a UNIX socket (`-qmp unix:PATH,server=on,wait=off`), with no
dependency beyond the standard library: QEMU (7.1 and later) writes the screenshot as PNG
itself, which people and the file viewers want.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any


class QMP:
    def __init__(self, path: Path, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX)
            try:
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

    def __enter__(self) -> QMP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, command: str, **arguments: Any) -> Any:
        self.sock.sendall(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
        while True:
            line = self.reader.readline()
            if not line:
                raise ConnectionError(f"QMP {command}: QEMU closed the socket")
            reply = json.loads(line)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error']}")
            # anything else is an asynchronous event: skip it

    def screenshot(self, png: Path) -> Path:
        """The guest's screen, as PNG at `png`."""
        png.parent.mkdir(parents=True, exist_ok=True)
        self.execute("screendump", filename=str(png.absolute()), format="png")
        return png

    def key(self, *names: str) -> None:
        """Presses the keys together (QEMU qcode names: ret, esc, tab, alt, …)."""
        keys = [{"type": "qcode", "data": n} for n in names]
        self.execute("send-key", keys=keys)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()
