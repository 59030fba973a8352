"""Builds the end-to-end tests need, from the build cache when nothing changed (about a second)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .laptop import DEELIT


def build(profile: str, out: Path) -> Path:
    proc = subprocess.run([str(DEELIT), "build", profile, "--out", str(out)], capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode != 0:
        pytest.fail(f"deelit build {profile} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return out


@pytest.fixture(scope="session")
def ci_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ci` with its disk image (the target the station installs)."""
    return build("ci", tmp_path_factory.mktemp("builds") / "ci")


@pytest.fixture(scope="session")
def installer_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("installer", tmp_path_factory.mktemp("builds") / "installer")


@pytest.fixture(scope="session")
def installer_usb_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("installer-usb", tmp_path_factory.mktemp("builds") / "installer-usb")
