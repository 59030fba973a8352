"""finalize's cleaning on a small made-up tree: what a build host leaves behind is gone."""

from __future__ import annotations

import socket
from pathlib import Path

from provisioner.build.finalize import IMAGE_HOSTNAME, clean_tree


def make_tree(root: Path) -> Path:
    files = {
        "etc/hostname": socket.gethostname() + "\n",  # what mmdebstrap copies from the host
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "etc/ssh/ssh_host_ed25519_key": "secret",
        "etc/ssh/ssh_host_ed25519_key.pub": "public",
        "etc/ssh/sshd_config": "kept",
        "var/lib/apt/lists/deb.example_dists_trixie_InRelease": "lists",
        "var/lib/apt/lists/lock": "",
        "var/cache/apt/archives/bash_5.2_amd64.deb": "deb",
        "var/lib/dbus/machine-id": "0123",
        "root/.ansible/tmp/x": "leftover",
        "tmp/build.log": "leftover",
        "etc/apt/apt.conf.d/99mmdebstrap": "build-only",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_clean_tree_leaves_an_anonymous_root(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    clean_tree(tree)
    assert (tree / "etc/hostname").read_text() == IMAGE_HOSTNAME + "\n"
    assert (tree / "etc/machine-id").read_text() == ""
    assert not list((tree / "etc/ssh").glob("ssh_host_*"))
    assert (tree / "etc/ssh/sshd_config").read_text() == "kept"
    assert [p.name for p in (tree / "var/lib/apt/lists").iterdir()] == ["lock"]
    assert not list((tree / "var/cache/apt/archives").iterdir())
    for gone in ("var/lib/dbus/machine-id", "root/.ansible", "tmp/build.log",
                 "etc/apt/apt.conf.d/99mmdebstrap"):
        assert not (tree / gone).exists(), gone
