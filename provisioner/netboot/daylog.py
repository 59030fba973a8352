"""A log that rotates each day and ages out: for dnsmasq, which logs every PXE client's MAC.

Today's lines go to NAME; an earlier day's file becomes NAME.YYYY-MM-DD when the day changes
(or at the next start), and files older than `keep_days` are removed. A day's file is capped:
anyone on the LAN can make dnsmasq log, so a flood cannot fill the station's disk.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

KEEP_DAYS = 7
MAX_DAY_BYTES = 10 * 1024 * 1024


class DayLog:
    def __init__(self, path: Path, *, keep_days: int = KEEP_DAYS, max_day_bytes: int = MAX_DAY_BYTES,
                 today: Callable[[], dt.date] = dt.date.today) -> None:
        self.path, self.keep_days, self.max_day_bytes, self._today = path, keep_days, max_day_bytes, today
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._day: dt.date | None = None
        self._written = 0
        self._dropped = False

    def write(self, line: bytes) -> None:
        with self._lock:
            today = self._today()
            if self._file is None or self._day != today:
                self._open(today)
            assert self._file is not None
            if self._written + len(line) > self.max_day_bytes:
                if not self._dropped:
                    self._file.write(b"deelit: today's log is full; further lines are dropped\n")
                    self._file.flush()
                    self._dropped = True
                return
            self._file.write(line)
            self._file.flush()
            self._written += len(line)

    def copy_from(self, stream: Iterable[bytes]) -> None:
        """Writes every line of `stream` (a process's output) until it ends, then closes."""
        try:
            for line in stream:
                self.write(line)
        finally:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _open(self, today: dt.date) -> None:
        was_writing = self._day if self._file is not None else None
        if self._file is not None:
            self._file.close()
        if self.path.exists():
            # the day it was written: the one this log was writing, else (a restart) its mtime
            written = was_writing or dt.date.fromtimestamp(self.path.stat().st_mtime)
            if written != today:
                os.replace(self.path, self._dated(written))
        self._age_out(today)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "ab")
        self._day, self._written, self._dropped = today, self.path.stat().st_size, False

    def _dated(self, day: dt.date) -> Path:
        return self.path.with_name(f"{self.path.name}.{day.isoformat()}")

    def _age_out(self, today: dt.date) -> None:
        oldest = today - dt.timedelta(days=self.keep_days)
        for old in self.path.parent.glob(f"{self.path.name}.????-??-??"):
            try:
                day = dt.date.fromisoformat(old.name.rsplit(".", 1)[1])
            except ValueError:
                continue
            if day < oldest:
                old.unlink(missing_ok=True)
