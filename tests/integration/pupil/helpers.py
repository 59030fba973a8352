"""Helpers of the pupil tests: the deelit command, and the file of measured figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from provisioner.profile import PROJECT_ROOT


def deelit(*args: str, check: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli", *args], capture_output=True,
                          text=True, check=False, cwd=PROJECT_ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"deelit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def record(artifacts: Path, **values: Any) -> None:
    """Measured figures, kept in measurements.json next to the screenshots."""
    path = artifacts / "measurements.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(values)
    path.write_text(json.dumps(data, indent=2) + "\n")
