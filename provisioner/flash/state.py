"""What writing and read-back share: each target's live state and outcome, the run's result,
and the I/O sizes both sides use (the CLI's progress display reads the states as they change).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provisioner.flash.policy import Target

CHUNK = 8 << 20  # large aligned I/O: fewer syscalls, whole erase blocks on sticks
ALIGN = 4096  # O_DIRECT alignment that covers 512e and 4Kn sticks


@dataclass
class TargetState:
    """Live progress and the outcome for one target (read by the progress display)."""

    target: Target
    total: int
    phase: str = "waiting"  # waiting, write, flush, verify, done, failed
    written: int = 0
    verified: int = 0
    error: str | None = None
    mismatches: list[tuple[int, int]] = field(default_factory=list)  # (first, last) blocks
    write_seconds: float = 0.0
    verify_seconds: float = 0.0
    verified_ok: bool | None = None  # None: not verified

    @property
    def ok(self) -> bool:
        return self.error is None and self.verified_ok is not False


@dataclass
class FlashResult:
    states: list[TargetState]
    verify: bool
    source_error: str | None = None
    read_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.source_error is None and all(s.ok for s in self.states)
