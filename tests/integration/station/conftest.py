"""Builds the end-to-end tests need, through the build area's own entry point (as `deelit
build` and `deelit demo`: from the build cache when nothing changed, about a second each),
into temporary folders: no dependency on out/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.build import pipeline
from provisioner.build.cache import Cache
from provisioner.profile import load_profile


def build(profile: str, out: Path) -> Path:
    pipeline.build(load_profile(profile), out, Cache())
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


@pytest.fixture(scope="session")
def pupil_test_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The family image with a technician key accepted from a boot credential (tests only),
    with its disk image: what the station writes in the pupil end-to-end test."""
    return build("pupil-test", tmp_path_factory.mktemp("builds") / "pupil-test")


TAIL_LINES = 40


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed café test shows the end of each log it saved (tmp_path/logs: the laptops'
    serial consoles, the station, dnsmasq) in its report: CI keeps no files, only what it
    printed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed or "tmp_path" not in item.fixturenames:
        return
    logs = Path(item.funcargs["tmp_path"]) / "logs"  # type: ignore[attr-defined]
    for log in sorted(logs.glob("*.log")) if logs.is_dir() else []:
        lines = log.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        report.sections.append((f"last {len(lines)} lines of {log.name}", "\n".join(lines)))
