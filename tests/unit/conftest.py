"""Helpers shared by the unit suites."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.formats import manifest as fm


@pytest.fixture
def manifest_data() -> dict[str, Any]:
    """A complete, valid manifest.json as the build writes it (a fresh dict per test)."""
    return {
        "format": fm.FORMAT,
        "build_id": "ci-20260101-abc",
        "created": "2026-01-01T00:00:00+00:00",
        "source_date_epoch": 1767225600,
        "profile": {"name": "ci", "digest": "d" * 64, "resolved": {"name": "ci", "suite": "trixie"}},
        "roles": {"base": "b" * 64},
        "cache_keys": {"bootstrap": "1" * 64, "tree": "2" * 64, "artifacts": "3" * 64},
        "packages": [{"name": "bash", "version": "5.2.37-2", "architecture": "amd64"}],
        "artifacts": [{"name": "ci.img.zst", "kind": "disk-image", "size": 123, "sha256": "a" * 64},
                      {"name": "ci.bmap", "kind": "bmap", "size": 45, "sha256": "c" * 64}],
    }
