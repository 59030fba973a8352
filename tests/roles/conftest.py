"""testinfra suites of the roles, run by `deelit verify` against a built tree (chroot backend)
or a booted image (paramiko backend). They read the resolved profile from DEELIT_PROFILE_JSON.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest


@pytest.fixture(scope="session")
def profile() -> dict[str, Any]:
    path = os.environ.get("DEELIT_PROFILE_JSON")
    if not path:
        pytest.skip("run through `deelit verify PROFILE`: needs a built tree or a booted image")
    return json.loads(open(path).read())


@pytest.fixture(scope="session")
def role_vars(profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r.get("vars", {}) for r in profile["roles"]}


@pytest.fixture(scope="module")
def booted(host: Any) -> bool:
    """True against a running system, False against a tree on the build host."""
    return bool(host.backend.NAME != "chroot")
