"""QEMU command lines for each firmware and medium (no guest is started here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.errors import DeelitError
from provisioner.vm import OVMF_DIR, VM, GuestPanic, VMSpec, smbios_value


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


# A stand-in for QEMU: each start counts itself in `boots`; while `boots` is below `panics`
# it prints a panic to the console log (with TCG's int3 oops when `oops` is set) and hangs,
# as a panicked guest does; after that it answers as the guest's SSH server would.
FAKE_GUEST = """
import socket, sys, time
log, port, boots, panics, oops = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
with open(boots, "a+") as f:
    f.write("x")
    f.seek(0)
    n = len(f.read())
if n <= panics:
    with open(log, "w") as f:
        f.write(("Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\\n" if oops == "1" else "")
                + "Kernel panic - not syncing: Fatal exception in interrupt\\n")
    time.sleep(60)
srv = socket.create_server(("127.0.0.1", port))
while True:
    conn, _ = srv.accept()
    conn.sendall(b"SSH-2.0-fake\\r\\n")
    conn.close()
"""


def fake_guest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, panics: int, oops: bool) -> VM:
    log, boots = tmp_path / "console.log", tmp_path / "boots"
    vm = VM(VMSpec(artifact=tmp_path, console_log=log))
    monkeypatch.setattr(vm, "argv", lambda: [sys.executable, "-c", FAKE_GUEST, str(log),
                                             str(vm.ssh_port), str(boots), str(panics),
                                             "1" if oops else "0"])
    return vm


def test_a_tcg_int3_oops_while_booting_boots_the_guest_once_more(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_guest(tmp_path, monkeypatch, panics=1, oops=True) as vm:
        vm.wait_for_ssh(30)
        assert vm.booted_again
    assert (tmp_path / "boots").read_text() == "xx"
    assert b"Oops: int3" in (tmp_path / "console.log.panic").read_bytes()


def test_the_same_oops_twice_is_a_panic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_guest(tmp_path, monkeypatch, panics=2, oops=True) as vm, \
            pytest.raises(GuestPanic, match="panicked"):
        vm.wait_for_ssh(30)
    assert (tmp_path / "boots").read_text() == "xx"


def test_any_other_panic_is_not_booted_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_guest(tmp_path, monkeypatch, panics=1, oops=False) as vm, \
            pytest.raises(GuestPanic, match="panicked"):
        vm.wait_for_ssh(30)
    assert (tmp_path / "boots").read_text() == "x"
