"""Shared test helpers: where the repository and the shared hardware fixtures are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HARDWARE_FIXTURES = REPO.parent / "shared" / "fixtures" / "hardware"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def hardware_fixtures() -> Path:
    if not HARDWARE_FIXTURES.is_dir():
        pytest.skip(f"hardware fixtures not found at {HARDWARE_FIXTURES} (../shared beside the repo)")
    return HARDWARE_FIXTURES


def needs_root() -> pytest.MarkDecorator:
    """Skip marker for tests that mount, chroot or create devices."""
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, chroot, devices)")
