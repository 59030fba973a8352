"""Stopping the child processes the provisioner starts (QEMU, dnsmasq, servers)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 10, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL when it has not exited after `timeout` s; reaps it either way.

    `group`: signal its whole process group (a child started with start_new_session=True whose
    own children must go too, e.g. `ip netns exec … qemu`)."""
    if proc is None or proc.poll() is not None:
        return
    _signal(proc, signal.SIGTERM, group)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL, group)
        proc.wait()


def _signal(proc: subprocess.Popen[Any], sig: signal.Signals, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
