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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `root` mount, chroot or create devices: skip them, saying why, without root."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (mounts, chroot, loop devices, namespaces)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
