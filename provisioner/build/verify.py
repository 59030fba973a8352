"""`deelit verify`: the profile's testinfra suites against the built tree and the booted image.

The tree is the finalized one in the build cache that produced the output folder (its key is in
the manifest); the booted image gets a throwaway SSH key as a boot credential, so no key is ever
built into an image for testing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from provisioner.build.cache import Cache
from provisioner.errors import DeelitError
from provisioner.formats import manifest as fm
from provisioner.profile import PROJECT_ROOT, Profile
from provisioner.vm import VM, Firmware, VMSpec

SUITES_DIR = PROJECT_ROOT / "tests" / "roles"
BOOT_TIMEOUT = 900  # TCG boots take minutes on a busy 2-core machine


def suites(profile: Profile) -> list[Path]:
    """tests/roles/test_<role>.py for each role that has one, plus the profile's own tests."""
    found = [SUITES_DIR / f"test_{r.name}.py" for r in profile.roles]
    found = [p for p in found if p.exists()]
    found += [PROJECT_ROOT / t for t in profile.tests]
    if not found:
        raise DeelitError(f"profile '{profile.name}': no testinfra suite for any of its roles")
    return found


def built_tree(out_dir: Path, cache: Cache) -> Path:
    key = fm.read(out_dir / fm.FILENAME).cache_keys.tree
    tree = cache.lookup("tree", key)
    if tree is None:
        raise DeelitError(
            f"{out_dir}: its built tree ({key[:12]}) is no longer in the cache {cache.root}; "
            "rebuild with deelit build"
        )
    return tree


def accepts_boot_key(profile: Profile) -> bool:
    return any(
        r.name == "technician_ssh" and r.vars.get("technician_ssh_accept_credential")
        for r in profile.roles
    )


def run_suites(profile: Profile, hosts: str, extra: list[str]) -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(profile.model_dump(mode="json"), f)
    env_file = f.name
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir",
            str(SUITES_DIR), f"--hosts={hosts}", *extra, *map(str, suites(profile))]
    env = {**__import__("os").environ, "DEELIT_PROFILE_JSON": env_file}
    try:
        return subprocess.run(argv, env=env, check=False).returncode
    finally:
        Path(env_file).unlink(missing_ok=True)


def verify_tree(profile: Profile, out_dir: Path, cache: Cache) -> int:
    return run_suites(profile, str(built_tree(out_dir, cache)), ["--connection=chroot"])


def verify_booted(
    profile: Profile, out_dir: Path, firmware: Firmware, console_log: Path
) -> int:
    if not accepts_boot_key(profile):
        raise DeelitError(
            f"profile '{profile.name}': booted checks need technician_ssh with "
            "technician_ssh_accept_credential: true (as in images/ci.yaml); use --no-boot"
        )
    with tempfile.TemporaryDirectory(prefix="deelit-verify-") as tmp:
        key = Path(tmp) / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deelit-verify",
                        "-f", str(key)], check=True)
        spec = VMSpec(artifact=out_dir, firmware=firmware, console_log=console_log,
                      ssh_pubkey=(key.with_suffix(".pub")).read_text(), smbios_serial="DEELIT-VERIFY-1")
        with VM(spec) as vm:
            try:
                vm.wait_for_ssh(BOOT_TIMEOUT)
            except TimeoutError as exc:
                raise DeelitError(f"{exc}; serial console: {console_log}") from None
            # a generous handshake timeout: TCG guests on a busy host answer slowly
            return run_suites(profile, f"paramiko://root@127.0.0.1:{vm.ssh_port}?timeout=120",
                              [f"--ssh-identity-file={key}"])
