"""The disk writer's pure parts: sizes, identifiers, layout (checked with the real sfdisk), GRUB
configuration, artifact kinds, the hard-linked root copy, and booting a disk image in vm.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from provisioner.build import pipeline
from provisioner.build.artifacts import disk
from provisioner.errors import DeelitError
from provisioner.profile import load_profile
from provisioner.vm import VM, VMSpec

MiB = disk.MiB


def test_parse_size() -> None:
    assert disk.parse_size("2GiB") == 2 << 30
    assert disk.parse_size("700MiB") == 700 << 20
    for bad in ("2GB", "1.5GiB", "", "GiB"):
        with pytest.raises(ValueError, match="is not a size"):
            disk.parse_size(bad)


def test_ids_are_stable_per_seed_and_distinct() -> None:
    a, b = disk.DiskIds.derive("ci:tree1"), disk.DiskIds.derive("ci:tree1")
    assert a == b
    other = disk.DiskIds.derive("ci:tree2")
    assert a.root_fs != other.root_fs and a.disk != other.disk
    values = [a.disk, a.bios_part, a.esp_part, a.root_part, a.root_fs, a.root_hash_seed]
    assert len(set(values)) == len(values)
    assert len(a.esp_volume) == 8 and a.esp_uuid == f"{a.esp_volume[:4]}-{a.esp_volume[4:]}"


def test_layout_is_aligned_contiguous_and_leaves_room_for_the_backup_gpt() -> None:
    layout = disk.plan_layout(2 << 30, disk.DiskIds.derive("x"))
    parts = layout.partitions
    assert [p.type_guid for p in parts] == [disk.TYPE_BIOS_BOOT, disk.TYPE_ESP, disk.TYPE_ROOT_X86_64]
    assert parts[0].start == MiB
    for p in parts:
        assert p.start % MiB == 0 and p.size % MiB == 0
    assert parts[1].start == parts[0].end and parts[2].start == parts[1].end
    assert layout.size - parts[2].end == MiB


def test_layout_refuses_a_disk_too_small_or_unaligned() -> None:
    with pytest.raises(ValueError, match="at least"):
        disk.plan_layout(100 * MiB, disk.DiskIds.derive("x"))
    with pytest.raises(ValueError, match="whole MiB"):
        disk.plan_layout(2 << 30 | 512, disk.DiskIds.derive("x"))


@pytest.mark.skipif(shutil.which("sfdisk") is None, reason="sfdisk (util-linux fdisk) not installed")
def test_sfdisk_script_gives_the_planned_table(tmp_path: Path) -> None:
    ids = disk.DiskIds.derive("x")
    layout = disk.plan_layout(300 * MiB, ids)
    image = tmp_path / "d.img"
    with image.open("wb") as f:
        f.truncate(layout.size)
    subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(image)],
                   input=layout.sfdisk_script(), text=True, check=True)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(image)], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    assert table["label"] == "gpt" and table["id"].lower() == ids.disk
    got = [(p["start"] * 512, p["size"] * 512, p["type"].upper(), p["uuid"].lower(), p["name"])
           for p in table["partitions"]]
    assert got == [(p.start, p.size, p.type_guid, p.uuid, p.name) for p in layout.partitions]


def test_grub_config_talks_on_screen_and_serial_and_names_the_root() -> None:
    ids = disk.DiskIds.derive("x")
    cfg = disk._render("grub.cfg.j2", profile="ci", root_uuid=ids.root_fs, title="t",
                       cmdline=disk.KERNEL_CMDLINE, timeout=1, user="deelit", password_hash="H")
    assert "serial --unit=0 --speed=115200" in cfg
    assert "terminal_output console serial" in cfg and "terminal_input console serial" in cfg
    assert f"search --no-floppy --fs-uuid --set=root {ids.root_fs}" in cfg
    assert f"root=UUID={ids.root_fs} ro console=tty0 console=ttyS0,115200n8" in cfg
    assert "insmod" not in cfg  # the signed GRUB loads no modules under Secure Boot
    # editing and the shell need the superuser; the one entry boots without; no recovery entry
    assert 'set superusers="deelit"' in cfg and "password_pbkdf2 deelit H" in cfg
    assert cfg.count("menuentry ") == 1 and "menuentry 't' --unrestricted {" in cfg
    early = disk._render("grub-bios-early.cfg.j2", esp_uuid=ids.esp_uuid)
    assert f"--fs-uuid --set=root {ids.esp_uuid}" in early


def test_artifact_kinds() -> None:
    assert pipeline._kind("ci.img.zst") == "disk-image"
    assert pipeline._kind("ci.bmap") == "bmap"
    assert pipeline._kind("vmlinuz") == "kernel"
    assert pipeline._kind("notes.txt") == "file"


def test_disk_name_option_is_validated_naming_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nextends: ci\noutputs:\n  disk:\n    name: 'Bad Name'\n")
    with pytest.raises(DeelitError, match=r"bad.yaml: outputs.disk.name: String should match"):
        load_profile(str(bad))
    assert disk.image_name("ci", load_profile("ci").outputs.disk) == "ci"  # type: ignore[arg-type]


def test_ci_profile_builds_a_disk_with_the_boot_packages() -> None:
    from provisioner.build.bootstrap import bootstrap_packages

    ci = load_profile("ci")
    assert ci.outputs.disk is not None
    assert {"grub-pc-bin", "grub-efi-amd64-signed", "shim-signed", "mokutil",
            "systemd-repart"} <= set(bootstrap_packages(ci))
    base = load_profile("base")
    if base.outputs.disk is None:
        assert "shim-signed" not in bootstrap_packages(base)


def test_root_copy_adds_disk_files_without_touching_the_cached_tree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/fstab").write_text("# UNCONFIGURED FSTAB\n")
    (tree / "etc/hostname").write_text("x\n")
    os.utime(tree / "etc", (1000, 1000))
    log = tmp_path / "log"
    ctx = SimpleNamespace(tree=tree, log=log, source_date_epoch=1700000000,
                          profile=SimpleNamespace(name="ci"))
    ids = disk.DiskIds.derive("x")
    root = disk._root_tree(ctx, tmp_path / "root", ids)  # type: ignore[arg-type]
    assert (tree / "etc/fstab").read_text() == "# UNCONFIGURED FSTAB\n"
    assert not (tree / "etc/repart.d").exists()
    fstab = (root / "etc/fstab").read_text()
    assert f"UUID={ids.root_fs}  /  ext4  defaults,x-systemd.growfs" in fstab
    assert "Type=root" in (root / "etc/repart.d/50-deelit-root.conf").read_text()
    assert (root / "etc/hostname").stat().st_ino == (tree / "etc/hostname").stat().st_ino
    for path in ("etc", "etc/fstab", "etc/repart.d", "etc/repart.d/50-deelit-root.conf"):
        assert (root / path).stat().st_mtime == 1700000000, path


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")
def test_vm_boots_a_disk_image_through_an_overlay(tmp_path: Path) -> None:
    image = tmp_path / "ci.img"
    image.write_bytes(b"\0" * MiB)
    before = image.read_bytes()
    vm = VM(VMSpec(artifact=image, firmware="bios", console_log=tmp_path / "c.log",
                   disk_size=20 << 30))
    try:
        argv = vm.argv()
        assert "-kernel" not in argv
        drive = argv[argv.index("-drive") + 1]
        overlay = Path(drive.split("file=")[1].split(",")[0])
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                                         capture_output=True, text=True, check=True).stdout)
        assert info["virtual-size"] == 20 << 30
        assert info["backing-filename"] == str(image)
        assert "virtio-blk-pci,drive=disk0,bootindex=0" in argv
    finally:
        vm.stop()
    assert image.read_bytes() == before
    small = VM(VMSpec(artifact=image, disk_size=4096, console_log=tmp_path / "c.log"))
    try:
        with pytest.raises(DeelitError, match="smaller than the image"):
            small.argv()
    finally:
        small.stop()
