"""`deelit verify`: the artifacts of a build folder, checked where they are.

A build folder (out/NAME, or a copy downloaded from a CI job) is checked in three phases:
its files against its manifest (sizes and SHA-256), the profile's testinfra suites against
the root tree unpacked from its own `filesystem.squashfs`, then the same suites on the
booted image: the disk image when the build has one (what laptops get), else the netboot
files. The profile comes from the manifest (`profile.resolved`), so no cache and no images/
folder of the build machine is needed; the suites come from this checkout's tests/roles.

The booted image is the shipped one, unchanged: a throwaway SSH key goes in as the system
credential deelit.verify.ssh-key, which the image's deelit-verify-access.service (roles/base)
accepts in a VM only, from /run only; no key is ever built into an image for testing.
Exit status: 0 every check passed, 1 a check failed, 2 the input is unusable (missing or
changed files, a profile with no suites, a boot that never answered).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from provisioner.build.cache import Cache
from provisioner.errors import DeelitError
from provisioner.formats import manifest as fm
from provisioner.profile import PROJECT_ROOT, Profile
from provisioner.vm import VM, Firmware, GuestPanic, VMSpec, smbios_value

SUITES_DIR = PROJECT_ROOT / "tests" / "roles"
BOOT_TIMEOUT = 900  # TCG boots take minutes on a busy 2-core machine
SQUASHFS = "filesystem.squashfs"
# The first boot's answers, handed over as a point that prepares laptops does (roles/
# firstboot): the boot finishes without a person at the dialog. A throwaway password, and a
# word, not a name. Images without the firstboot role ignore them.
FIRSTBOOT_CHILD = "Leerling"


class Unusable(DeelitError):
    """The input cannot be checked at all: exit status 2, not 1."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


@dataclass
class Build:
    folder: Path
    manifest: fm.Manifest
    profile: Profile


def suites(profile: Profile) -> list[Path]:
    """tests/roles/test_<role>.py for each role that has one, plus the profile's own tests."""
    found = [SUITES_DIR / f"test_{r.name}.py" for r in profile.roles]
    found = [p for p in found if p.exists()]
    found += [PROJECT_ROOT / t for t in profile.tests]
    if not found:
        raise Unusable(f"profile '{profile.name}': no testinfra suite for any of its roles")
    return found


def built_tree(out_dir: Path, cache: Cache) -> Path:
    """The finalized tree in the build cache that produced out_dir (tests use it: no unpack)."""
    key = fm.read(out_dir / fm.FILENAME).cache_keys.tree
    tree = cache.lookup("tree", key)
    if tree is None:
        raise DeelitError(
            f"{out_dir}: its built tree ({key[:12]}) is no longer in the cache {cache.root}; "
            "rebuild with deelit build"
        )
    return tree


def load_build(folder: Path) -> Build:
    """The build folder's manifest and the profile it was built from; every artifact it lists
    is there with its recorded size and SHA-256."""
    if not (folder / fm.FILENAME).is_file():
        raise Unusable(f"{folder}: no {fm.FILENAME}; give a build folder (deelit build "
                       "writes out/PROFILE), or a whole copy of one")
    try:
        manifest = fm.read(folder / fm.FILENAME)
        fm.check_files(manifest, folder, [a.name for a in manifest.artifacts])
    except DeelitError as exc:
        raise Unusable(str(exc)) from None
    try:
        profile = Profile.model_validate(manifest.profile.resolved)
    except ValidationError as exc:
        raise Unusable(f"{folder / fm.FILENAME}: profile.resolved is not a profile this deelit "
                       f"knows ({exc.errors()[0]['msg']}); verify with the deelit that built it"
                       ) from None
    return Build(folder, manifest, profile)


@contextmanager
def unpacked_tree(build: Build) -> Iterator[Path]:
    """The root tree from the build's own squashfs, unpacked as root (owners, modes and
    capabilities as the laptop gets them), removed afterwards."""
    squashfs = build.folder / SQUASHFS
    if not squashfs.is_file():
        raise Unusable(f"{squashfs}: missing; every deelit build has one (copy the whole folder)")
    if os.geteuid() != 0:
        raise Unusable("the tree checks unpack the image with its owners and chroot into it: "
                       "run deelit verify as root (sudo)")
    work = Path(tempfile.mkdtemp(prefix="deelit-verify-tree-"))
    try:
        proc = subprocess.run(["unsquashfs", "-quiet", "-no-progress", "-d", str(work / "root"),
                               str(squashfs)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise Unusable(f"{squashfs}: unsquashfs failed: {proc.stderr.strip()[-300:]}")
        yield work / "root"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def accepts_boot_key(profile: Profile) -> bool:
    return any(
        r.name == "technician_ssh" and r.vars.get("technician_ssh_accept_credential")
        for r in profile.roles
    )


def has_verify_access(profile: Profile) -> bool:
    """roles/base's deelit-verify-access.service: on unless the profile turned it off."""
    return any(r.name == "base" and r.vars.get("base_verify_access", True) is not False
               for r in profile.roles)


def run_suites(profile: Profile, hosts: str, extra: list[str], *,
               junit: Path | None = None, suite_name: str = "deelit-verify") -> int:
    """pytest over the profile's suites; its exit status (0 passed, 1 failed, else unusable)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(profile.model_dump(mode="json"), f)
    env_file = f.name
    report = [f"--junit-xml={junit}", "-o", f"junit_suite_name={suite_name}"] if junit else []
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir",
            str(SUITES_DIR), f"--hosts={hosts}", *report, *extra, *map(str, suites(profile))]
    env = {**os.environ, "DEELIT_PROFILE_JSON": env_file}
    try:
        return subprocess.run(argv, env=env, check=False).returncode
    finally:
        Path(env_file).unlink(missing_ok=True)


def verify_tree(build: Build, extra: list[str], junit: Path | None = None) -> int:
    with unpacked_tree(build) as tree:
        return run_suites(build.profile, str(tree), ["--connection=chroot", *extra],
                          junit=junit, suite_name="tree")


def boot_artifact(build: Build) -> Path:
    """What laptops get: the disk image when the build has one, else the netboot folder."""
    disks = [a.name for a in build.manifest.artifacts if a.name.endswith(".img.zst")]
    return build.folder / disks[0] if disks else build.folder


def verify_booted(build: Build, firmware: Firmware, console_log: Path, extra: list[str],
                  junit: Path | None = None) -> int:
    profile = build.profile
    if has_verify_access(profile):
        access: Literal["technician", "verify"] = "verify"  # the shipped image, as it is
    elif accepts_boot_key(profile):
        access = "technician"
    else:
        raise Unusable(
            f"profile '{profile.name}': base_verify_access is off and technician_ssh accepts "
            "no key as a boot credential: nothing lets the check in; use --no-boot")
    with tempfile.TemporaryDirectory(prefix="deelit-verify-") as tmp:
        key = Path(tmp) / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deelit-verify",
                        "-f", str(key)], check=True)
        answers = (("deelit.firstboot.parent-password", secrets.token_urlsafe(12)),
                   ("deelit.firstboot.child-name", FIRSTBOOT_CHILD))
        spec = VMSpec(artifact=boot_artifact(build), firmware=firmware, console_log=console_log,
                      ssh_pubkey=(key.with_suffix(".pub")).read_text(), ssh_access=access,
                      smbios_serial="DEELIT-VERIFY-1",
                      extra_qemu=[arg for name, value in answers for arg in (
                          "-smbios",
                          f"type=11,value={smbios_value(f'io.systemd.credential:{name}={value}')}")])
        with VM(spec) as vm:  # it boots once more by itself after TCG's int3 fault
            try:
                vm.wait_for_ssh(BOOT_TIMEOUT)
            except GuestPanic as exc:
                raise Unusable(str(exc)) from None
            except TimeoutError as exc:
                raise Unusable(f"{exc}; serial console: {console_log}") from None
            # a generous handshake timeout: TCG guests on a busy host answer slowly
            return run_suites(profile, f"paramiko://root@127.0.0.1:{vm.ssh_port}?timeout=120",
                              [f"--ssh-identity-file={key}", *extra], junit=junit,
                              suite_name=f"booted-{firmware}")
