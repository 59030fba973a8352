"""Which machines the registry does not know a volunteer approved for wiping at this station.

A machine that network-boots and is new to the registry is inventoried and graded, and then
waits: its disk is written only once it is approved, one by one (the station page, `deelit
station approve`), all that wait at once, or by a batch a volunteer armed (`--approve-for 30m`,
`--approve-next 20`) that ends by itself. Kept in memory only: a visitor's laptop that nobody
approved leaves no record, and a restarted station asks again.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from provisioner.errors import DeelitError
from provisioner.registry.tokens import utcnow

Verdict = Literal["approved", "refused", "waiting"]
MAX_BATCH = dt.timedelta(hours=12)  # a batch outlives no café day
MAX_BATCH_COUNT = 500


@dataclass(frozen=True)
class Batch:
    """Approval armed for the next machines: until a time, for a count, or both."""

    until: dt.datetime | None = None
    remaining: int | None = None

    def live(self, now: dt.datetime) -> bool:
        return ((self.until is None or now < self.until)
                and (self.remaining is None or self.remaining > 0))


def parse_duration(text: str) -> dt.timedelta:
    """'30m', '2h', '90s', '1h30m' -> a timedelta; refuses anything else or over 12 hours."""
    rest, total = text.strip().lower(), 0
    units = {"h": 3600, "m": 60, "s": 1}
    if not rest:
        raise DeelitError("approval time: empty; say e.g. 30m, 2h or 1h30m")
    while rest:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if digits == 0 or digits == len(rest) or rest[digits] not in units:
            raise DeelitError(f"approval time {text!r}: say e.g. 30m, 2h or 1h30m")
        total += int(rest[:digits]) * units[rest[digits]]
        rest = rest[digits + 1:]
    span = dt.timedelta(seconds=total)
    if not dt.timedelta(0) < span <= MAX_BATCH:
        raise DeelitError(f"approval time {text!r}: between 1s and 12h")
    return span


def check_count(count: int) -> int:
    if not 0 < count <= MAX_BATCH_COUNT:
        raise DeelitError(f"approval count {count}: between 1 and {MAX_BATCH_COUNT}")
    return count


class Approvals:
    """Approved and refused machine keys (serials, MACs), and the armed batch, if any."""

    def __init__(self, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._approved: set[str] = set()
        self._refused: set[str] = set()
        self._batch: Batch | None = None

    @staticmethod
    def _keys(keys: Iterable[str | None]) -> set[str]:
        return {k.strip().lower() for k in keys if k and k.strip()}

    def approve(self, *keys: str | None) -> None:
        found = self._keys(keys)
        with self._lock:
            self._approved |= found
            self._refused -= found

    def refuse(self, *keys: str | None) -> None:
        found = self._keys(keys)
        with self._lock:
            self._refused |= found
            self._approved -= found

    def verdict(self, *keys: str | None) -> Verdict:
        """What may happen to the unknown machine with these keys; a live batch approves it
        (and counts it) the first time it is asked about."""
        found = self._keys(keys)
        with self._lock:
            if found & self._refused:
                return "refused"
            if found & self._approved:
                return "approved"
            batch = self._batch
            if found and batch is not None and batch.live(self.clock()):
                self._approved |= found
                if batch.remaining is not None:
                    self._batch = Batch(batch.until, batch.remaining - 1)
                return "approved"
            return "waiting"

    def arm(self, *, span: dt.timedelta | None = None, count: int | None = None) -> Batch:
        if span is None and count is None:
            raise DeelitError("arm a batch for a time (30m), a number of machines (20), or both")
        if span is not None and not dt.timedelta(0) < span <= MAX_BATCH:
            raise DeelitError("approval time: between 1s and 12h")
        batch = Batch(self.clock() + span if span is not None else None,
                      check_count(count) if count is not None else None)
        with self._lock:
            self._batch = batch
        return batch

    def disarm(self) -> None:
        with self._lock:
            self._batch = None

    def status(self) -> dict[str, object]:
        """The batch as the page shows it: armed or not, until when, how many left."""
        with self._lock:
            batch = self._batch
        now = self.clock()
        if batch is None or not batch.live(now):
            return {"armed": False, "until": None, "seconds_left": None, "remaining": None}
        return {"armed": True,
                "until": batch.until.isoformat() if batch.until else None,
                "seconds_left": round((batch.until - now).total_seconds()) if batch.until else None,
                "remaining": batch.remaining}
