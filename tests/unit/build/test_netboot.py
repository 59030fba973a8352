"""The netboot writer on a tiny tree: real mksquashfs, reproducible, SOURCE_DATE_EPOCH-proof."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from provisioner.build.artifacts import netboot
from provisioner.build.runner import StepFailed
from provisioner.profile import NetbootOutput

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs squashfs-tools")


def tiny_tree(root: Path) -> Path:
    (root / "boot").mkdir(parents=True)
    for version in ("6.1.0-9-amd64", "6.12.1-1-amd64"):
        (root / "boot" / f"vmlinuz-{version}").write_text(f"kernel {version}")
        (root / "boot" / f"initrd.img-{version}").write_text(f"initrd {version}")
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("deelit\n")
    return root


def write(tmp: Path, tree: Path, name: str, *, secure_boot: bool = False) -> Path:
    dest = tmp / name
    dest.mkdir()
    ctx: Any = SimpleNamespace(tree=tree, log=tmp / f"{name}.log", verbose=False,
                               source_date_epoch=1767225600)
    netboot.write(ctx, NetbootOutput(compression_level=3, secure_boot=secure_boot), dest)
    return dest


def test_newest_kernel_and_reproducible_squashfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tiny_tree(tmp_path / "tree")
    first = write(tmp_path, tree, "a")
    # a caller's own SOURCE_DATE_EPOCH must neither break mksquashfs nor change the result
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")
    second = write(tmp_path, tree, "b")
    assert (first / "vmlinuz").read_text() == "kernel 6.12.1-1-amd64"
    assert (first / "initrd.img").read_text() == "initrd 6.12.1-1-amd64"
    assert (first / "filesystem.squashfs").read_bytes() == (second / "filesystem.squashfs").read_bytes()


def test_secure_boot_ships_the_images_signed_shim_and_network_grub(tmp_path: Path) -> None:
    tree = tiny_tree(tmp_path / "tree")
    assert not (write(tmp_path, tree, "plain") / "shimx64.efi").exists()
    with pytest.raises(StepFailed, match="shim-signed"):
        write(tmp_path, tree, "missing", secure_boot=True)
    for src in netboot.SIGNED_BOOT_FILES:
        (tree / src).parent.mkdir(parents=True, exist_ok=True)
        (tree / src).write_bytes(src.encode())
    out = write(tmp_path, tree, "sb", secure_boot=True)
    assert (out / "shimx64.efi").read_bytes() == b"usr/lib/shim/shimx64.efi.signed"
    assert (out / "grubnetx64.efi").read_bytes().endswith(b"grubnetx64.efi.signed")
    assert {netboot.FILES[n] for n in ("shimx64.efi", "grubnetx64.efi")} == {"efi-shim", "efi-grub-net"}


def test_secure_boot_adds_the_signed_packages_to_the_bootstrap() -> None:
    from provisioner.build.bootstrap import bootstrap_packages
    from provisioner.profile import load_profile

    assert {"shim-signed", "grub-efi-amd64-signed"} <= set(bootstrap_packages(load_profile("installer")))
    assert "shim-signed" not in bootstrap_packages(load_profile("base"))
