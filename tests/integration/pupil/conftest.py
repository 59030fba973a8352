"""Shared by the pupil tests: one pupil-test build (or $DEELIT_PUPIL_OUT), its resolved
profile, and where screenshots and measured figures go. Every test here is `heavy_vm` (a
pupil build and desktop boots under TCG): selected with `-m heavy_vm`, see the README."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from provisioner.formats import manifest as fm

from .helpers import deelit, record


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(os.environ.get("DEELIT_TEST_ARTIFACTS") or tmp_path_factory.mktemp("pupil-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Path:
    """$DEELIT_PUPIL_OUT names an existing pupil-test build (a CI job that built it already)."""
    given = os.environ.get("DEELIT_PUPIL_OUT")
    if given:
        assert (Path(given) / "manifest.json").exists(), f"DEELIT_PUPIL_OUT={given}: no build there"
        return Path(given).absolute()
    out = tmp_path_factory.mktemp("pupil-test") / "out"
    started = time.monotonic()
    deelit("build", "pupil-test", "--out", str(out))
    record(artifacts, build_seconds=round(time.monotonic() - started))
    return out


@pytest.fixture(scope="session")
def built_profile(build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The resolved profile the build was made from, as YAML: verify and fleet use exactly
    the roles and vars that are in the image."""
    resolved = fm.read(build / fm.FILENAME).profile.resolved
    path = tmp_path_factory.mktemp("profile") / f"{resolved['name']}.yaml"
    path.write_text(yaml.safe_dump(resolved, sort_keys=False))
    return path



