"""Helpers of the pupil tests: the deelit command, and the file of measured figures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from provisioner.profile import PROJECT_ROOT

DEELIT = [sys.executable, "-m", "provisioner.cli"]


def deelit(*args: str, check: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*DEELIT, *args], capture_output=True,
                          text=True, check=False, cwd=PROJECT_ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"deelit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def deelit_logged(*args: str, log: Path, timeout: float) -> tuple[int, str]:
    """A long deelit command with its output streamed to `log`, so a run that takes too long
    still shows how far it got; past `timeout` it is killed with its children."""
    with log.open("w") as out:
        proc = subprocess.Popen([*DEELIT, *args], stdout=out, stderr=subprocess.STDOUT,
                                cwd=PROJECT_ROOT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # ansible-playbook and its workers too
            proc.wait()
            pytest.fail(f"deelit {' '.join(args[:2])} still running after {timeout:.0f} s; "
                        f"its output: {log}\n{log.read_text()[-3000:]}")
    return code, log.read_text()


def record(artifacts: Path, **values: Any) -> None:
    """Measured figures, kept in measurements.json next to the screenshots."""
    path = artifacts / "measurements.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(values)
    path.write_text(json.dumps(data, indent=2) + "\n")
