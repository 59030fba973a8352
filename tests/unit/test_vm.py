"""QEMU command lines for each firmware and medium (no guest is started here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from provisioner.errors import DeelitError
from provisioner.vm import OVMF_DIR, VM, VMSpec, smbios_value


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        (tmp_path / name).write_bytes(name.encode() * 100)
    return tmp_path


def option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_bios_http_boot_fetches_from_the_host(artifacts: Path) -> None:
    vm = VM(VMSpec(artifact=artifacts, ssh_pubkey="ssh-ed25519 AAAA test,key", smbios_serial="SN,1"))
    try:
        argv = vm.argv()
        assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg"]
        assert vm.server is not None
        append = option(argv, "-append")[0]
        assert f"fetch=http://10.0.2.2:{vm.server.port}/filesystem.squashfs" in append
        assert "boot=live" in append and "console=ttyS0,115200n8" in append
        assert option(argv, "-smbios") == [
            "type=1,serial=SN,,1",
            "type=11,value=io.systemd.credential:ssh.authorized_keys.root=ssh-ed25519 AAAA test,,key",
        ]
        assert f"user,id=n0,hostfwd=tcp:127.0.0.1:{vm.ssh_port}-:22" in option(argv, "-netdev")
        assert "if=pflash" not in " ".join(argv)
    finally:
        vm.stop()


@pytest.mark.skipif(not (OVMF_DIR / "OVMF_CODE_4M.secboot.fd").exists(), reason="needs Debian's ovmf")
def test_secure_boot_uses_smm_secure_flash_and_a_private_vars_copy(artifacts: Path) -> None:
    vm = VM(VMSpec(artifact=artifacts, firmware="uefi-secureboot"))
    try:
        argv = vm.argv()
        assert "q35,smm=on" in option(argv, "-machine")
        assert "driver=cfi.pflash01,property=secure,value=on" in option(argv, "-global")
        drives = option(argv, "-drive")
        assert any("readonly=on" in d and "OVMF_CODE_4M.secboot.fd" in d for d in drives)
        vars_drive = next(d for d in drives if "unit=1" in d)
        assert str(vm.tmp) in vars_drive  # never the system-wide template
    finally:
        vm.stop()


def test_local_medium_is_an_ext4_disk_with_the_squashfs(artifacts: Path) -> None:
    vm = VM(VMSpec(artifact=artifacts, media="local"))
    try:
        argv = vm.argv()
        disk = next(d for d in option(argv, "-drive") if "if=virtio" in d).split(",")[0].removeprefix("file=")
        listing = subprocess.run(["debugfs", "-R", "ls -l /live", disk], capture_output=True,
                                 text=True, check=True).stdout
        assert "filesystem.squashfs" in listing
        assert "fetch=" not in option(argv, "-append")[0]
    finally:
        vm.stop()
    assert not vm.tmp.exists()


def test_missing_artifact_is_named(tmp_path: Path) -> None:
    with pytest.raises(DeelitError, match=r"vmlinuz: missing; is .* a netboot artifact folder"):
        VM(VMSpec(artifact=tmp_path)).argv()


def test_smbios_values_double_commas() -> None:
    assert smbios_value("MacBookPro15,1") == "MacBookPro15,,1"
