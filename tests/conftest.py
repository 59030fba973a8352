"""Shared test helpers: where the repository and the shared hardware fixtures are."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.lab.postgres import PgCluster

REPO = Path(__file__).resolve().parent.parent
# The shared fixtures live beside the repository; a clone elsewhere names them.
HARDWARE_FIXTURES = Path(os.environ.get("DEELIT_HARDWARE_FIXTURES",
                                        REPO.parent / "shared" / "fixtures" / "hardware"))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL for the session; each test makes its own database in it."""
    cluster = PgCluster().start()  # raises (does not skip) when PostgreSQL is not installed
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def hardware_fixtures() -> Path:
    if not HARDWARE_FIXTURES.is_dir():
        pytest.skip(f"hardware fixtures not found at {HARDWARE_FIXTURES} "
                    "(../shared beside the repo, or set DEELIT_HARDWARE_FIXTURES)")
    return HARDWARE_FIXTURES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`root` tests skip without root, saying so. (`heavy_vm` ones are deselected by the
    default marker expression in pyproject.toml, not skipped: `-m heavy_vm` selects them.)"""
    skip_root = pytest.mark.skip(reason="needs root (mounts, chroot, loop devices, namespaces)")
    for item in items:
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(skip_root)


_STARTED = time.monotonic()
_SLOW_LINE = 15.0  # seconds: a test phase at least this long gets a line of its own


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """Long phases print as they end, with the run's clock, so a run cut off by CI's time
    limit (which prints no --durations table) still shows where its time went."""
    if call.duration < _SLOW_LINE:
        return
    elapsed = int(time.monotonic() - _STARTED)
    reporter = item.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[{elapsed // 60:d}:{elapsed % 60:02d} into the run] {call.when} "
                            f"{call.duration:.0f} s: {item.nodeid}")
