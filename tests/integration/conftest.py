"""Fixtures shared by the integration tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .chromium import DevTools


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[DevTools]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); the station "
                    "page test needs it")
    tools = DevTools(binary, tmp_path / "chromium-profile")
    yield tools
    tools.close()
