"""The family laptop end to end through the station: a virtual laptop PXE-boots beside a
router, is wiped and gets the pupil image's disk (`pupil-test`: pupil plus an SSH key taken
from a boot credential, so the test can look inside), reboots from its disk, and its first
boot makes the parent and child accounts from seeded answers (systemd credentials, as a
point that prepares laptops would hand them). Then, as the child: the desktop comes up when
the child presses Enter at the greeter, a blocked name does not resolve (the filter's own
NXDOMAIN, not a missing upstream) and `sudo` is refused; the registry says `ready` with the
pupil build. BIOS runs in `make test` by default, UEFI is `heavy_vm` (see the README).
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from provisioner.formats import manifest as fm
from provisioner.lab import session, watch

from . import pupil_checks as pupil

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(3600)]

INSTALL_TIMEOUT = 1800  # ~3x a quiet machine's figure: a hang fails within CI's time


# BIOS in `make test` by default; UEFI (808 s more) is `heavy_vm`: see the README's "Tests".
@pytest.mark.parametrize("firmware", ["bios", pytest.param("uefi", marks=pytest.mark.heavy_vm)])
def test_pupil_laptop_through_the_station(firmware: str, tmp_path: Path, pupil_test_out: Path,
                                          installer_out: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deelit-e2e", "-f", str(key)],
                   check=True)
    spec = watch.LaptopSpec("DL-E2E-PUPIL-4H7", "52:54:00:de:e1:07", firmware,  # type: ignore[arg-type]
                            credentials=pupil.credentials(secrets.token_urlsafe(12)))
    seen: dict[str, object] = {}

    def after(sess: session.Session, results: list[watch.Result]) -> None:
        """While the café still runs: log in over the relay, look as the child."""
        laptop = sess.laptops[0]
        ssh = pupil.connect(sess.ssh_port(sess.trackers[0], 1800), key)
        try:
            seen.update(pupil.look(ssh, laptop.qmp_socket,
                                   lambda: laptop.screenshot(tmp_path / "logs" / "child-desktop.png")))
        finally:
            ssh.close()

    # a batch armed when the station starts: the laptop goes through without a click
    [result] = session.run([spec], pupil_test_out, installer_out, view=session.PrintView(),
                           logs=tmp_path / "logs", ssh_pubkey=key.with_suffix(".pub").read_text(),
                           timeout=INSTALL_TIMEOUT, after=after,
                           station_args=["--approve-for", "2h"], approve=False)
    assert result.waited_s is None and result.approved_s is None

    build_id = fm.read(pupil_test_out / fm.FILENAME).build_id
    dev = result.device
    assert dev.status == "ready" and dev.serial == spec.serial
    assert next(e for e in dev.events if e.type == "imaged").build_id == build_id
    assert [e.type for e in dev.events].count("wiped") == 1
    assert result.dialog_s is None  # the answers were seeded: no dialog was waited for
    pupil.check(seen, pupil_test_out)
    print(f"pupil via the station ({firmware}): registered {result.registered_s:.0f} s, ready "
          f"{result.ready_s:.0f} s, disk boot {result.disk_boot_s:.0f} s")
