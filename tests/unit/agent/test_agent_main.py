"""`python3 -m provisioner.agent`: the installer's `deelit agent …`, errors as one line."""

from __future__ import annotations

import subprocess
import sys


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provisioner.agent", *args], capture_output=True,
                          text=True, check=False, env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"})


def test_lists_the_agent_commands() -> None:
    proc = agent("--help")
    assert proc.returncode == 0 and "deelit agent" in proc.stdout
    for command in ("inventory", "grade", "wipe", "run"):
        assert command in proc.stdout


def test_error_is_one_line_and_non_zero() -> None:
    proc = agent("wipe", "/nonexistent/disk", "--dry-run")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: /nonexistent/disk: No such file or directory: give a disk device such as /dev/sda"]
    assert "Traceback" not in proc.stderr
