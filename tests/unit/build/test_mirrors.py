"""Mirrors come from the profile, else from the build host's apt sources (both formats)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.build.mirrors import resolve_mirrors
from provisioner.errors import DeelitError

DEB822 = """Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def apt_dir(tmp_path: Path, sources: str = "", one_line: str = "") -> Path:
    (tmp_path / "sources.list.d").mkdir(parents=True)
    if sources:
        (tmp_path / "sources.list.d" / "debian.sources").write_text(sources)
    if one_line:
        (tmp_path / "sources.list").write_text(one_line)
    return tmp_path


def test_host_deb822_sources(tmp_path: Path) -> None:
    m = resolve_mirrors(None, None, apt_dir(tmp_path, DEB822))
    assert m.debian == "http://mirror.example/debian"
    assert m.security == "http://mirror.example/debian-security"
    assert m.source_lines("trixie", ["main"]) == [
        "deb http://mirror.example/debian trixie main",
        "deb http://mirror.example/debian trixie-updates main",
        "deb http://mirror.example/debian-security trixie-security main",
    ]


def test_host_one_line_sources_skip_comments_and_other_repos(tmp_path: Path) -> None:
    text = ("# deb http://old.example/debian bookworm main\n"
            "deb https://vendor.example/apt stable main\n"
            "deb [arch=amd64] http://cache.example:3142/debian bookworm main\n")
    m = resolve_mirrors(None, None, apt_dir(tmp_path, one_line=text))
    assert m.debian == "http://cache.example:3142/debian"
    assert m.security is None


def test_profile_mirror_wins(tmp_path: Path) -> None:
    m = resolve_mirrors("http://cafe.example/debian/", None, apt_dir(tmp_path, DEB822))
    assert m.debian == "http://cafe.example/debian" and m.security is None


def test_no_debian_mirror_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DeelitError, match=r"no Debian mirror found.*set 'mirror:' in the profile"):
        resolve_mirrors(None, None, apt_dir(tmp_path, one_line="deb http://x.example/apt a b\n"))
