"""Helpers shared by the unit suites."""

from __future__ import annotations

from pathlib import Path
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


@pytest.fixture(scope="session")
def release_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with two OpenSSH Ed25519 key pairs without passphrase, for signed builds:
    `partner` (the IT partner a point trusts, comment partner@ci) and `stranger` (+ .pub)."""
    import shutil
    import subprocess

    if shutil.which("ssh-keygen") is None:
        pytest.skip("needs ssh-keygen (openssh-client)")
    folder = tmp_path_factory.mktemp("release-keys")
    for name, comment in (("partner", "partner@ci"), ("stranger", "stranger@elsewhere")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                        "-f", str(folder / name)], stdin=subprocess.DEVNULL, check=True,
                       capture_output=True)
    return folder


@pytest.fixture(autouse=True)
def _no_point_signers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A point's DEELIT_SIGNERS (serve and flash accept only signed builds) stays out of the
    unit tests; the tests that want it set it."""
    monkeypatch.delenv("DEELIT_SIGNERS", raising=False)
