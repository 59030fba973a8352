"""testinfra suites of the roles, run by `deelit verify` against a built tree (chroot backend)
or a booted image (paramiko backend). They read the resolved profile from DEELIT_PROFILE_JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"


@pytest.fixture(scope="session")
def profile() -> dict[str, Any]:
    path = os.environ.get("DEELIT_PROFILE_JSON")
    if not path:
        pytest.skip("run through `deelit verify PROFILE`: needs a built tree or a booted image")
    return json.loads(open(path).read())


@pytest.fixture(scope="session")
def role_vars(profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r.get("vars", {}) for r in profile["roles"]}


@pytest.fixture(scope="session")
def role_settings(role_vars: dict[str, dict[str, Any]]) -> Callable[[str], dict[str, Any]]:
    """What a role ran with: its defaults, its vars/main.yml, then the profile's vars for it,
    as Ansible merges them. Skips the calling test when the profile does not have the role."""
    def settings(role: str) -> dict[str, Any]:
        if role not in role_vars:
            pytest.skip(f"profile has no {role} role")
        merged: dict[str, Any] = {}
        for layer in ("defaults", "vars"):
            path = ROLES / role / layer / "main.yml"
            if path.exists():
                merged |= yaml.safe_load(path.read_text()) or {}
        return merged | role_vars[role]
    return settings


@pytest.fixture(scope="module")
def booted(host: Any) -> bool:
    """True against a running system, False against a tree on the build host."""
    return bool(host.backend.NAME != "chroot")
