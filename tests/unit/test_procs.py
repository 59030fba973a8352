"""procs.stop: a child that obeys SIGTERM ends by it, one that ignores it is killed."""

from __future__ import annotations

import signal
import subprocess
import time

from provisioner import procs


def _started(script: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sh", "-c", script])
    time.sleep(0.2)  # let the shell set its trap before it is signalled
    return proc


def test_terminated_child_is_reaped() -> None:
    proc = _started("exec sleep 30")
    procs.stop(proc)
    assert proc.returncode == -signal.SIGTERM


def test_child_ignoring_sigterm_is_killed_after_the_timeout() -> None:
    proc = _started("trap '' TERM; while :; do sleep 0.1; done")
    t0 = time.monotonic()
    procs.stop(proc, timeout=0.5)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - t0 < 5


def test_finished_or_missing_child_is_left_alone() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    procs.stop(proc)
    procs.stop(None)
    assert proc.returncode == 0
