"""The `ci` disk image end to end: layout and boot files, one boot per firmware, growth onto a
20 GiB disk, a bmaptool copy that boots (and takes `deelit fleet apply`), reproducibility, and a
failed build leaving nothing.

Real mmdebstrap/Ansible (cached in ~/.cache/deelit), real GRUB, shim, OVMF, QEMU (TCG) and
bmaptool. Three boots in all, each several minutes under TCG on a busy 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml

from provisioner.build import pipeline, verify
from provisioner.build.artifacts import boot_password, disk
from provisioner.build.cache import Cache
from provisioner.build.context import BuildContext
from provisioner.build.runner import StepFailed
from provisioner.formats import bmap
from provisioner.formats import manifest as fm
from provisioner.lab.qmp import QMP
from provisioner.profile import PROJECT_ROOT, DiskOutput, Profile, load_profile
from provisioner.vm import VM, Firmware, VMSpec

pytestmark = [pytest.mark.slow, pytest.mark.root]

MiB = disk.MiB
GiB = 1024 * MiB
SSH_TIMEOUT = 900  # TCG on a busy 2-core machine: minutes
LOGIN_TIMEOUT = 600
GRUB_SAYS = "deelit: loading Linux from UUID="


def deelit(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli", *args], capture_output=True,
                          text=True, check=False, cwd=PROJECT_ROOT)
    if proc.returncode != 0:
        pytest.fail(f"deelit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def ci_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("ci-disk") / "out"
    deelit("build", "ci", "--out", str(out))
    # Later in-process builds must find this build's tree even if a commit lands meanwhile
    # (SOURCE_DATE_EPOCH defaults to the last commit, and it is part of the tree's key).
    sde = fm.read(out / fm.FILENAME).source_date_epoch
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SOURCE_DATE_EPOCH", str(sde))
        yield out


@pytest.fixture(scope="module")
def raw_image(ci_out: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("raw") / "ci.img"
    subprocess.run(["zstd", "-q", "-d", "--sparse", str(ci_out / "ci.img.zst"), "-o", str(raw)],
                   check=True)
    return raw


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deelit-disk-test",
                    "-f", str(key)], check=True)
    return key


def tree_of(ci_out: Path) -> Path:
    tree = verify.built_tree(ci_out, Cache())
    assert (tree / "usr/lib/shim/shimx64.efi.signed").exists()
    return tree


def partition(raw: Path, part: disk.Partition, dest: Path) -> Path:
    subprocess.run(["dd", f"if={raw}", f"of={dest}", "bs=1M", f"skip={part.start // MiB}",
                    f"count={part.size // MiB}", "conv=sparse", "status=none"], check=True)
    return dest


def layout_of(raw: Path) -> disk.Layout:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    parts = [disk.Partition(p["name"], p["type"].upper(), p["uuid"].lower(), p["start"] * 512,
                            p["size"] * 512) for p in table["partitions"]]
    assert len(parts) == 3, table
    return disk.Layout(raw.stat().st_size, table["id"].lower(), *parts)


# --- the artifact itself ------------------------------------------------------------------


def test_artifacts_are_listed_and_the_bmap_matches(ci_out: Path, raw_image: Path) -> None:
    manifest = fm.read(ci_out / fm.FILENAME)
    kinds = {a.name: a.kind for a in manifest.artifacts}
    assert kinds["ci.img.zst"] == "disk-image" and kinds["ci.bmap"] == "bmap"
    sums = (ci_out / "SHA256SUMS").read_text()
    assert "  ci.img.zst\n" in sums and "  ci.bmap\n" in sums
    subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=ci_out, check=True)
    block_map = bmap.load(ci_out / "ci.bmap")
    assert block_map.image_size == raw_image.stat().st_size == 2 * GiB  # images/ci.yaml
    assert block_map.has_checksums()
    assert block_map.mapped_bytes < block_map.image_size // 2  # the image stays sparse


def test_layout_and_boot_files(ci_out: Path, raw_image: Path, tmp_path: Path) -> None:
    tree = tree_of(ci_out)
    layout = layout_of(raw_image)
    assert [p.type_guid for p in layout.partitions] == [
        disk.TYPE_BIOS_BOOT, disk.TYPE_ESP, disk.TYPE_ROOT_X86_64]
    mbr = _head(raw_image, 512)
    assert mbr[510:] == b"\x55\xaa" and b"GRUB" in mbr  # GRUB's boot.img, with the GPT's PMBR
    core = _head(raw_image, 512, layout.bios.start)
    assert core.strip(b"\0"), "no core.img in the BIOS boot partition"

    esp = partition(raw_image, layout.esp, tmp_path / "esp.img")
    blkid = subprocess.run(["blkid", "-o", "export", str(esp)], capture_output=True, text=True,
                           check=True).stdout
    ids = disk.DiskIds.derive(f"ci:{fm.read(ci_out / fm.FILENAME).cache_keys.tree}")
    assert "TYPE=vfat" in blkid and f"UUID={ids.esp_uuid}" in blkid  # what BIOS GRUB searches
    for src, dsts in disk.EFI_FILES.items():
        for dst in dsts:
            copy = tmp_path / dst.replace("/", "_")
            subprocess.run(["mcopy", "-n", "-i", str(esp), f"::{dst}", str(copy)], check=True,
                           env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
            assert copy.read_bytes() == (tree / src).read_bytes(), dst
    cfg = subprocess.run(["mtype", "-i", str(esp), "::EFI/debian/grub.cfg"], capture_output=True,
                         text=True, check=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}).stdout
    assert f"root=UUID={ids.root_fs}" in cfg and "terminal_output console serial" in cfg

    root = partition(raw_image, layout.root, tmp_path / "root.img")
    subprocess.run(["e2fsck", "-fn", str(root)], capture_output=True, check=True)
    fstab = subprocess.run(["debugfs", "-R", "cat /etc/fstab", str(root)], capture_output=True,
                           text=True, check=True).stdout
    assert f"UUID={ids.root_fs}  /  ext4  defaults,x-systemd.growfs" in fstab
    vmlinuz = subprocess.run(["debugfs", "-R", "stat /vmlinuz", str(root)], capture_output=True,
                             text=True, check=True).stdout
    assert "Type: symlink" in vmlinuz
    # the cached tree is untouched by the disk-only files
    assert "x-systemd.growfs" not in (tree / "etc/fstab").read_text()
    assert not (tree / "etc/repart.d").exists()


def _head(path: Path, length: int, offset: int = 0) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


# --- booting ------------------------------------------------------------------------------


@contextmanager
def booted(image: Path, firmware: Firmware, console: Path, key: Path,
           disk_size: int | None = None) -> Iterator[tuple[VM, Any]]:
    spec = VMSpec(artifact=image, firmware=firmware, console_log=console, disk_size=disk_size,
                  ssh_pubkey=key.with_suffix(".pub").read_text(), smbios_serial="DEELIT-DISK-1")
    with VM(spec) as vm:
        try:
            vm.wait_for_ssh(SSH_TIMEOUT)
            vm.wait_for_console("login:", LOGIN_TIMEOUT)
        except TimeoutError as exc:
            pytest.fail(f"{firmware}: {exc}\nconsole tail:\n{vm.console()[-3000:]}")
        host = testinfra.get_host(f"paramiko://root@127.0.0.1:{vm.ssh_port}",
                                  ssh_identity_file=str(key))
        yield vm, host


def check_common(vm: VM, host: Any, key: Path) -> None:
    """GRUB and the kernel on the serial port; the role suites pass on the booted disk."""
    console = vm.console()
    assert GRUB_SAYS in console, "GRUB printed nothing on ttyS0"
    assert "Linux version" in console, "the kernel printed nothing on ttyS0"
    assert host.check_output("findmnt -no FSTYPE /") == "ext4"
    assert host.check_output("findmnt -no SOURCE /") == "/dev/vda3"
    code = verify.run_suites(load_profile("ci"), f"paramiko://root@127.0.0.1:{vm.ssh_port}",
                             [f"--ssh-identity-file={key}"])
    assert code == 0, "the ci role suites failed on the booted disk image"


def check_fleet_apply(vm: VM, host: Any, key: Path, tmp_path: Path) -> None:
    """`deelit fleet apply --profile ci`: the point's technician key lands and opens the laptop;
    a second run changes nothing; --limit leaves the other (unreachable) laptop alone."""
    point_key = tmp_path / "point_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deelit-point-key",
                    "-f", str(point_key)], check=True)
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"testpoint": {"hosts": {
        "ci-vm": {"ansible_host": "127.0.0.1", "ansible_port": vm.ssh_port},
        "switched-off": {"ansible_host": "127.0.0.1", "ansible_port": 9},  # nothing listens
    }}}))
    (inventory / "group_vars" / "testpoint.yml").write_text(yaml.safe_dump({
        "ansible_user": "root", "ansible_ssh_private_key_file": str(key),
        "technician_ssh_keys": [point_key.with_suffix(".pub").read_text().strip()]}))
    argv = ("fleet", "apply", "--profile", "ci", "--inventory", str(inventory), "--limit", "ci-vm",
            "--no-host-key-check")
    first = deelit(*argv).stdout
    assert re.search(r"ci-vm\s+ok\s+changed=[1-9]", first), first
    assert "switched-off" not in first
    assert "deelit-point-key" in host.file("/root/.ssh/authorized_keys").content_string
    with_point_key = testinfra.get_host(f"paramiko://root@127.0.0.1:{vm.ssh_port}",
                                        ssh_identity_file=str(point_key))
    assert with_point_key.check_output("id -u") == "0"
    second = deelit(*argv).stdout
    assert re.search(r"ci-vm\s+ok\s+changed=0\b", second), second


def test_bmaptool_copy_boots_under_seabios(ci_out: Path, raw_image: Path, ssh_key: Path,
                                           tmp_path: Path) -> None:
    target = tmp_path / "stick.raw"
    subprocess.run(["bmaptool", "copy", "--bmap", str(ci_out / "ci.bmap"),
                    str(ci_out / "ci.img.zst"), str(target)], check=True, capture_output=True)
    assert subprocess.run(["cmp", str(raw_image), str(target)]).returncode == 0
    with booted(target, "bios", tmp_path / "console.log", ssh_key) as (vm, host):
        assert not host.file("/sys/firmware/efi").exists  # really the legacy BIOS path
        check_common(vm, host, ssh_key)
        check_fleet_apply(vm, host, ssh_key, tmp_path)


def test_uefi_boot_grows_the_root_over_a_20gib_disk(ci_out: Path, ssh_key: Path,
                                                    tmp_path: Path) -> None:
    with booted(ci_out / "ci.img.zst", "uefi", tmp_path / "console.log", ssh_key,
                disk_size=20 * GiB) as (vm, host):
        assert host.file("/sys/firmware/efi").is_directory
        assert "SecureBoot disabled" in host.run("mokutil --sb-state").stdout
        check_common(vm, host, ssh_key)  # waits for the boot to finish: growth is done by then
        assert int(host.check_output("lsblk -bdno SIZE /dev/vda")) == 20 * GiB
        part = int(host.check_output("lsblk -bdno SIZE /dev/vda3"))
        assert part >= 20 * GiB - 70 * MiB, part
        fs = int(host.check_output("df -B1 --output=size / | tail -1"))
        assert fs >= 19 * GiB, f"root filesystem is {fs} bytes on a 20 GiB disk"
        for unit in ("systemd-repart.service", "systemd-growfs-root.service"):
            assert host.check_output(f"systemctl show -P Result {unit}") == "success", unit


def test_secure_boot_enforced(ci_out: Path, ssh_key: Path, tmp_path: Path) -> None:
    with booted(ci_out / "ci.img.zst", "uefi-secureboot", tmp_path / "console.log",
                ssh_key) as (vm, host):
        assert host.check_output("mokutil --sb-state") == "SecureBoot enabled"
        assert "secureboot: Secure boot enabled" in vm.console()
        # Debian's kernel locks itself down under Secure Boot: "none [integrity] confidentiality"
        assert "[integrity]" in host.file("/sys/kernel/security/lockdown").content_string
        check_common(vm, host, ssh_key)


# --- reproducibility and failures ----------------------------------------------------------


def with_disk(profile: Profile, **changes: Any) -> Profile:
    assert profile.outputs.disk is not None
    new_disk = DiskOutput(**{**profile.outputs.disk.model_dump(), **changes})
    return profile.model_copy(update={"outputs": profile.outputs.model_copy(update={"disk": new_disk})})


def test_output_holds_the_boot_password_for_root_only(ci_out: Path) -> None:
    """The GRUB password the build made: beside the artifacts, root only, in no listing."""
    kept = ci_out / boot_password.OUT_NAME
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and kept.stat().st_uid == 0
    password = _boot_password(ci_out)
    manifest = (ci_out / fm.FILENAME).read_text()
    assert boot_password.OUT_NAME not in manifest and password not in manifest
    assert boot_password.OUT_NAME not in (ci_out / "SHA256SUMS").read_text()


def _boot_password(out: Path) -> str:
    made = boot_password.read_note(out / boot_password.OUT_NAME).password
    assert made is not None
    return made


def _type(qmp: QMP, text: str) -> None:
    for char in text:
        qmp.key(char)
        time.sleep(0.05)
    qmp.key("ret")


def _edit_at_the_menu(vm: VM, qmp: QMP, timeout: float) -> None:
    """`e` until GRUB asks for a user (its menu waits 1 s), then clear the stray `e`s."""
    seen = vm.console().count("Enter username:")
    deadline = time.monotonic() + timeout
    while vm.console().count("Enter username:") == seen:
        assert time.monotonic() < deadline, f"no GRUB user prompt:\n{vm.console()[-2000:]}"
        assert vm.console().count(GRUB_SAYS) == 0, "GRUB booted the entry before `e` reached it"
        qmp.key("e")
        time.sleep(0.3)
    time.sleep(1)
    for _ in range(8):
        qmp.key("backspace")


@pytest.mark.parametrize("firmware", ["bios", "uefi-secureboot"])
def test_boot_menu_edit_needs_the_password(ci_out: Path, tmp_path: Path, firmware: Firmware) -> None:
    """At the GRUB menu, as a child at the keyboard would: `e` asks for a user and refuses a
    wrong password (no editor, so no init=/bin/bash); the build's password opens the editor.
    GRUB reads keys from the keyboard and the serial port alike: QMP presses real keys."""
    password = _boot_password(ci_out)
    console, socket_path = tmp_path / "console.log", tmp_path / "qmp.sock"
    spec = VMSpec(artifact=ci_out / "ci.img.zst", firmware=firmware, console_log=console,
                  extra_qemu=["-qmp", f"unix:{socket_path},server=on,wait=off"])
    with VM(spec) as vm, QMP(socket_path) as qmp:
        _edit_at_the_menu(vm, qmp, 600)
        _type(qmp, boot_password.USER)
        vm.wait_for_console("Enter password:", 60)
        _type(qmp, "bcdefbcdef")
        vm.wait_for_console("access denied", 120)
        assert "Emacs-like screen editing" not in vm.console()
        _edit_at_the_menu(vm, qmp, 120)  # back at the menu, its 1 s running again
        _type(qmp, boot_password.USER)
        deadline = time.monotonic() + 60
        while vm.console().count("Enter password:") < 2:
            assert time.monotonic() < deadline, f"no second password prompt:\n{vm.console()[-2000:]}"
            time.sleep(0.5)
        _type(qmp, password)
        vm.wait_for_console("Emacs-like screen editing", 120)  # the entry's text, to edit


def test_second_build_from_the_same_cache_is_identical(ci_out: Path, raw_image: Path,
                                                       tmp_path: Path) -> None:
    """Another compression level: a new artifacts key, so the disk is written again from the
    same cached tree; the packages and the raw disk must be the same, bit for bit."""
    cache = Cache()
    ctx = pipeline.prepare(with_disk(load_profile("ci"), compression_level=4), tmp_path / "out",
                           cache)
    cache.evict("artifacts", ctx.keys.artifacts)  # an earlier run on this machine may have left it
    tree = cache.lookup("tree", ctx.keys.tree)
    assert tree is not None
    # Access times are not content: the host moves them (relatime) whenever anything reads the
    # tree. Put some before SOURCE_DATE_EPOCH, as in a fresh bootstrap, the rest after it.
    links = sorted((tree / "etc/alternatives").iterdir())
    for n, path in enumerate(links):
        mtime = path.lstat().st_mtime_ns
        atime = mtime - 86_400 * 10**9 if n % 2 else time.time_ns()
        os.utime(path, ns=(atime, mtime), follow_symlinks=False)
    ran: dict[str, bool] = {}
    pipeline.run(ctx, lambda name, _s, cached: ran.__setitem__(name, cached))
    assert ran["configure"] and not ran["artifacts"]
    first = fm.read(ci_out / fm.FILENAME)
    second = fm.read(tmp_path / "out" / fm.FILENAME)
    assert second.packages == first.packages
    again = tmp_path / "again.img"
    subprocess.run(["zstd", "-q", "-d", "--sparse", str(tmp_path / "out" / "ci.img.zst"), "-o",
                    str(again)], check=True)
    root = layout_of(again).root
    for path in links[:4]:
        inode = subprocess.run(["debugfs", "-R", f"stat /{path.relative_to(tree)}",
                                f"{again}?offset={root.start}"], capture_output=True, text=True,
                               check=True).stdout
        assert f"atime: {second.source_date_epoch:#010x}:" in inode, inode
    assert subprocess.run(["cmp", str(raw_image), str(again)]).returncode == 0
    assert (tmp_path / "out" / "ci.bmap").read_bytes() == (ci_out / "ci.bmap").read_bytes()


def _attached() -> tuple[str, list[str]]:
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(Cache().root) in line]
    return loops, mounts


@pytest.mark.parametrize(("size", "break_grub", "message"), [
    ("256MiB", False, "raise outputs.disk.size in the profile 'ci'"),
    ("3GiB", True, "grub-mkimage"),  # a real GRUB failure: a module that does not exist
])
def test_failed_disk_step_leaves_nothing_behind(
    size: str, break_grub: bool, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    ci_out: Path,
) -> None:
    if break_grub:
        monkeypatch.setattr(disk, "BIOS_MODULES", [*disk.BIOS_MODULES, "no_such_module"])
    before = _attached()
    cache = Cache()
    ctx = pipeline.prepare(with_disk(load_profile("ci"), size=size), tmp_path / "out", cache)
    assert ctx.tree is not None, "the ci tree should be cached by the ci_out build"
    with pytest.raises(StepFailed) as info:
        pipeline.run(ctx)
    assert "step 'artifacts' failed" in str(info.value) and message in str(info.value)
    assert not (tmp_path / "out").exists()
    assert not ctx.work.exists()
    assert cache.lookup("artifacts", ctx.keys.artifacts) is None
    assert _attached() == before


# --- the build's secrets: a point's GRUB hash reaches only the boot loader, a made password
# only its root-only note (outputs, images unpacked, the build log, the cache's listings) ---


def _build(profile: Profile, out: Path) -> BuildContext:
    cache = Cache()
    ctx = pipeline.prepare(profile, out, cache)
    pipeline.run(ctx, lambda *_: None)
    return ctx


def _places_holding(secret: str, ctx: BuildContext) -> list[Path]:
    """Every file of the output folder, the build's log and the cache's own listings (indexes,
    metadata, logs) whose bytes hold the secret. Compressed artifacts are searched unpacked."""
    files = [*ctx.out_dir.iterdir(), ctx.log, *ctx.cache.root.glob("*/*.json"),
             *ctx.cache.root.glob("logs/*"), *ctx.cache.root.glob(f"artifacts/*/{pipeline.INDEX}")]
    found = []
    for path in files:
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name.endswith(".zst"):
            data = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
        if secret.encode() in data:
            found.append(path)
    return found


def test_a_points_boot_password_hash_reaches_only_the_boot_loader(tmp_path: Path) -> None:
    secret_hash = boot_password.grub_hash("made-up point password")
    hash_file = tmp_path / "point.grub-hash"
    hash_file.write_text(secret_hash + "\n")
    hash_file.chmod(0o600)
    ctx = _build(with_disk(load_profile("ci"), boot_password_hash_file=str(hash_file)), tmp_path / "out")
    image = ctx.out_dir / "ci.img.zst"
    # GRUB needs it in its configuration on the ESP; nothing else may hold it
    assert _places_holding(secret_hash, ctx) == [image]
    assert not (ctx.out_dir / boot_password.OUT_NAME).exists()  # the point keeps its password
    assert str(hash_file) in (ctx.out_dir / "manifest.json").read_text()  # the file's name only


def test_a_made_boot_password_is_kept_root_only(tmp_path: Path) -> None:
    ctx = _build(load_profile("ci"), tmp_path / "out")
    assert ctx.boot_password is not None and ctx.boot_password.password is not None
    kept = ctx.out_dir / boot_password.OUT_NAME
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert _places_holding(ctx.boot_password.password, ctx) == [kept]
    # its hash is in the image's GRUB configuration, and in that same root-only note
    assert sorted(_places_holding(ctx.boot_password.hash, ctx)) == sorted(
        [kept, ctx.out_dir / "ci.img.zst"])
    secrets = ctx.cache.root / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert ctx.boot_password.password in (secrets / "ci.boot-password").read_text()
