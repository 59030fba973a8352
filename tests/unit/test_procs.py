"""procs.stop: a child that obeys SIGTERM ends by it, one that ignores it is killed."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

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


def test_group_stop_ends_the_grandchildren_too() -> None:
    """`ip netns exec … qemu` style: the child's own child must not outlive it."""
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & echo $!; wait"], stdout=subprocess.PIPE,
                            start_new_session=True, text=True)
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    procs.stop(proc, timeout=2, group=True)
    time.sleep(0.2)
    stat = Path(f"/proc/{grandchild}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"  # gone, or dead and unreaped
