"""The family laptop end to end through the station: a virtual laptop PXE-boots beside a
router, is wiped and gets the pupil image's disk (`pupil-test`: pupil plus an SSH key taken
from a boot credential, so the test can look inside), reboots from its disk, and its first
boot makes the parent and child accounts from seeded answers (systemd credentials, as a
point that prepares laptops would hand them). Then, as the child: the desktop comes up when
the child presses Enter at the greeter, a blocked name does not resolve (the filter's own
NXDOMAIN, not a missing upstream) and `sudo` is refused; the registry says `ready` with the
pupil build. `heavy_vm`: many TCG minutes (see the README).
"""

from __future__ import annotations

import secrets
import shlex
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from provisioner.formats import manifest as fm
from provisioner.lab import session, watch
from provisioner.lab.qmp import QMP

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.heavy_vm, pytest.mark.timeout(7200)]

CHILD, CHILD_LOGIN, PARENT = "Noor", "noor", "ouder"
BLOCKED = "dns.google"  # on the filter's own blocklist (a DNS-over-HTTPS endpoint)
INSTALL_TIMEOUT = 4800
# The child's resolver answer, read as the child: 3 is NXDOMAIN (the filter's local zone);
# 2 (SERVFAIL) would only say that the lab has no upstream resolver.
RCODE = ("import socket,struct,sys;"
         "q=struct.pack('>HHHHHH',0x1234,0x0100,1,0,0,0)"
         "+b''.join(bytes([len(p)])+p.encode() for p in sys.argv[1].split('.'))+b'\\0'+struct.pack('>HH',1,1);"
         "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(20);"
         "s.sendto(q,('127.0.0.1',53));print(s.recv(512)[3]&15)")


def run(ssh: paramiko.SSHClient, command: str, timeout: float = 300) -> tuple[int, str]:
    _, stdout, stderr = ssh.exec_command(command, timeout=timeout)
    out = stdout.read().decode(errors="replace") + stderr.read().decode(errors="replace")
    return stdout.channel.recv_exit_status(), out


def wait_for(ssh: paramiko.SSHClient, command: str, timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    while True:
        code, out = run(ssh, command)
        if code == 0:
            return out
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f} s ({out.strip()[-300:]})"
        time.sleep(5)


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_pupil_laptop_through_the_station(firmware: str, tmp_path: Path, pupil_test_out: Path,
                                          installer_out: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deelit-e2e", "-f", str(key)],
                   check=True)
    password = secrets.token_urlsafe(12)
    spec = watch.LaptopSpec("DL-E2E-PUPIL-4H7", "52:54:00:de:e1:07", firmware,  # type: ignore[arg-type]
                            credentials=(("deelit.firstboot.parent-password", password),
                                         ("deelit.firstboot.child-name", CHILD)))
    seen: dict[str, object] = {}

    def after(sess: session.Session, results: list[watch.Result]) -> None:
        """While the café still runs: log in over the relay, look as the child."""
        laptop = sess.laptops[0]
        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a throwaway laptop
        ssh.connect("127.0.0.1", port=sess.ssh_port(sess.trackers[0], 1800), username="root",
                    key_filename=str(key), timeout=60, banner_timeout=120, auth_timeout=120)
        try:
            seen["firstboot"] = run(ssh, "cat /var/lib/deelit/firstboot-done")
            seen["parent_groups"] = run(ssh, f"id -nG {PARENT}")[1].split()
            seen["child_groups"] = run(ssh, f"id -nG {CHILD_LOGIN}")[1].split()
            seen["child_sudo"] = run(ssh, f"runuser -u {CHILD_LOGIN} -- sudo -n -k true")[0]
            seen["sudo_list"] = run(ssh, f"LC_ALL=C sudo -l -U {CHILD_LOGIN}")[1]
            seen["getent_blocked"] = run(ssh, f"runuser -u {CHILD_LOGIN} -- getent ahosts {BLOCKED}")[0]
            seen["rcode_blocked"] = run(ssh, f"runuser -u {CHILD_LOGIN} -- python3 -c "
                                             f"{shlex.quote(RCODE)} {BLOCKED}")[1].strip()
            wait_for(ssh, "pgrep -x lightdm-gtk-greeter || pgrep -f lightdm-gtk-greeter", 1200,
                     "the greeter")
            # The greeter preselects the child, no password: Enter, as a child would, again
            # while nothing happens (under TCG a key before the greeter has focus is lost).
            deadline = time.monotonic() + 1200
            while run(ssh, f"pgrep -u {CHILD_LOGIN} -x xfdesktop")[0] != 0:
                assert time.monotonic() < deadline, "no XFCE desktop for the child after 1200 s"
                time.sleep(20)
                with QMP(laptop.qmp_socket) as qmp:
                    qmp.key("ret")
                wait_until = time.monotonic() + 100
                while time.monotonic() < wait_until and run(ssh, f"pgrep -u {CHILD_LOGIN} -x xfdesktop")[0]:
                    time.sleep(5)
            seen["child_desktop"] = run(ssh, f"pgrep -u {CHILD_LOGIN} -x xfdesktop")[1]
            session_id = wait_for(ssh, f"loginctl list-sessions --no-legend | awk '$3 == "
                                       f"\"{CHILD_LOGIN}\" {{print $1}}' | grep .", 300,
                                  "the child's login session").split()[0]
            seen["session"] = run(ssh, f"loginctl show-session {session_id} -p Type -p Active "
                                       "-p Name")[1]
            time.sleep(60)  # let TCG draw the desktop before the picture
            laptop.screenshot(tmp_path / "logs" / "child-desktop.png")
        finally:
            ssh.close()

    [result] = session.run([spec], pupil_test_out, installer_out, view=session.PrintView(),
                           logs=tmp_path / "logs", ssh_pubkey=key.with_suffix(".pub").read_text(),
                           timeout=INSTALL_TIMEOUT, after=after)

    build_id = fm.read(pupil_test_out / fm.FILENAME).build_id
    dev = result.device
    assert dev.status == "ready" and dev.serial == spec.serial
    assert next(e for e in dev.events if e.type == "imaged").build_id == build_id
    assert [e.type for e in dev.events].count("wiped") == 1
    assert result.dialog_s is None  # the answers were seeded: no dialog was waited for
    code, done = seen["firstboot"]  # type: ignore[misc]
    assert code == 0 and done.strip(), "the first boot did not finish"
    assert "sudo" in seen["parent_groups"]  # type: ignore[operator]
    assert not {"sudo", "adm", "root"} & set(seen["child_groups"])  # type: ignore[arg-type]
    assert seen["child_sudo"] != 0 and "not allowed to run sudo" in str(seen["sudo_list"])
    assert seen["getent_blocked"] != 0 and seen["rcode_blocked"] == "3", seen
    assert {f"Name={CHILD_LOGIN}", "Type=x11", "Active=yes"} <= set(str(seen["session"]).split())
    assert seen["child_desktop"]
    print(f"pupil via the station ({firmware}): registered {result.registered_s:.0f} s, ready "
          f"{result.ready_s:.0f} s, disk boot {result.disk_boot_s:.0f} s")
