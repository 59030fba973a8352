"""The laptop's own screen for the agent's questions: a virtual terminal of its own (tty8),
brought to the front, in a large font, reading the keyboard.

The agent's log goes to the journal and the serial console; a person at the laptop sees this
terminal instead. Every line shown is also logged, so the serial console (and the tests that
read it) sees the same words. Without a terminal (a container, a test run), it only logs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import subprocess
import termios
from collections.abc import Callable
from pathlib import Path
from typing import Any

VT = 8  # no getty runs there: the keys pressed reach the agent alone
VT_ACTIVATE, VT_WAITACTIVE = 0x5606, 0x5607
FONT = Path("/usr/share/consolefonts/Lat15-TerminusBold32x16.psf.gz")  # console-setup


class VtScreen:
    def __init__(self, log: Callable[[str], None], vt: int = VT) -> None:
        self.log = log
        self.fd: int | None = None
        try:
            self.fd = os.open(f"/dev/tty{vt}", os.O_RDWR | os.O_NOCTTY)
            with open("/dev/tty0", "wb", buffering=0) as console:
                fcntl.ioctl(console, VT_ACTIVATE, vt)
                fcntl.ioctl(console, VT_WAITACTIVE, vt)
        except OSError:
            return
        if FONT.exists():
            with contextlib.suppress(OSError):
                subprocess.run(["setfont", "-C", f"/dev/tty{vt}", str(FONT)], check=False,
                               capture_output=True, timeout=10)

    def show(self, lines: list[str]) -> None:
        for line in lines:
            if line:
                self.log(f"[screen] {line}")
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.fd, ("\033[2J\033[H" + "\r\n".join(lines) + "\r\n").encode())

    def _mode(self, *, canonical: bool) -> list[Any]:
        assert self.fd is not None
        old = termios.tcgetattr(self.fd)
        new = termios.tcgetattr(self.fd)
        flags = termios.ICANON | termios.ECHO
        new[3] = (new[3] | flags) if canonical else (new[3] & ~flags)
        termios.tcflush(self.fd, termios.TCIFLUSH)  # keys pressed before the question count not
        termios.tcsetattr(self.fd, termios.TCSANOW, new)
        return old

    def key(self, timeout: float) -> str | None:
        if self.fd is None:
            select.select([], [], [], timeout)
            return None
        old = self._mode(canonical=False)
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            return os.read(self.fd, 16).decode(errors="replace") if ready else None
        finally:
            termios.tcsetattr(self.fd, termios.TCSANOW, old)

    def line(self, prompt: str) -> str | None:
        if self.fd is None:
            return None
        old = self._mode(canonical=True)
        try:
            os.write(self.fd, prompt.encode())
            data = os.read(self.fd, 256).decode(errors="replace")
            self.log(f"[screen] typed {len(data.strip())} character(s)")
            return data
        finally:
            termios.tcsetattr(self.fd, termios.TCSANOW, old)
