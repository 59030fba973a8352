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


HEAVY_VM_ENV = "DEELIT_HEAVY_VM"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skips, each saying why: `root` tests without root; `heavy_vm` tests unless asked for."""
    skip_root = pytest.mark.skip(reason="needs root (mounts, chroot, loop devices, namespaces)")
    skip_heavy = pytest.mark.skip(
        reason=f"several TCG boots of many minutes each, beyond CI's time budget: set {HEAVY_VM_ENV}=1"
    )
    heavy_wanted = os.environ.get(HEAVY_VM_ENV) == "1"
    for item in items:
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(skip_root)
        if "heavy_vm" in item.keywords and not heavy_wanted:
            item.add_marker(skip_heavy)
