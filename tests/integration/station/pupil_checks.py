"""What a pupil laptop must show once it booted from its disk, whichever way it was imaged
(the station or the offline stick): the first boot made the accounts from seeded answers,
the child is no administrator, the filter answers a blocked name with its own NXDOMAIN, and
the child's desktop comes up when the child presses Enter at the greeter, and the laptop made
its own support-tunnel key (none came with the image) and shows its public half."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko

from provisioner.lab.qmp import QMP

CHILD, CHILD_LOGIN, PARENT = "Noor", "noor", "ouder"
TUNNEL_KEY = "/etc/deelit/support/id_tunnel"  # pupil-test sets a support tunnel
_TUNNEL_KEYS_SEEN: set[str] = set()
BLOCKED = "dns.google"  # on the filter's own blocklist (a DNS-over-HTTPS endpoint)
# The child's resolver answer, read as the child: 3 is NXDOMAIN (the filter's local zone);
# 2 (SERVFAIL) would only say that the lab has no upstream resolver.
RCODE = ("import socket,struct,sys;"
         "q=struct.pack('>HHHHHH',0x1234,0x0100,1,0,0,0)"
         "+b''.join(bytes([len(p)])+p.encode() for p in sys.argv[1].split('.'))+b'\\0'+struct.pack('>HH',1,1);"
         "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(20);"
         "s.sendto(q,('127.0.0.1',53));print(s.recv(512)[3]&15)")


def image_paths(image_dir: Path) -> str:
    """Every path in the image's root file system, as `unsquashfs -l` lists them."""
    return subprocess.run(["unsquashfs", "-l", str(image_dir / "filesystem.squashfs")], check=True,
                          capture_output=True, text=True).stdout


def credentials(password: str) -> tuple[tuple[str, str], ...]:
    """The first-boot answers, as a point that prepares laptops would hand them over."""
    return (("deelit.firstboot.parent-password", password), ("deelit.firstboot.child-name", CHILD))


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


def connect(port: int, key: Path) -> paramiko.SSHClient:
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a throwaway laptop
    ssh.connect("127.0.0.1", port=port, username="root", key_filename=str(key), timeout=60,
                banner_timeout=120, auth_timeout=120)
    return ssh


def look(ssh: paramiko.SSHClient, qmp_socket: Path, screenshot: Callable[[], object]) -> dict[str, Any]:
    """Everything the checks need, read over SSH as root and as the child."""
    seen: dict[str, Any] = {}
    seen["firstboot"] = run(ssh, "cat /var/lib/deelit/firstboot-done")
    seen["parent_groups"] = run(ssh, f"id -nG {PARENT}")[1].split()
    seen["child_groups"] = run(ssh, f"id -nG {CHILD_LOGIN}")[1].split()
    seen["child_sudo"] = run(ssh, f"runuser -u {CHILD_LOGIN} -- sudo -n -k true")[0]
    seen["sudo_list"] = run(ssh, f"LC_ALL=C sudo -l -U {CHILD_LOGIN}")[1]
    seen["getent_blocked"] = run(ssh, f"runuser -u {CHILD_LOGIN} -- getent ahosts {BLOCKED}")[0]
    seen["rcode_blocked"] = run(ssh, f"runuser -u {CHILD_LOGIN} -- python3 -c "
                                     f"{shlex.quote(RCODE)} {BLOCKED}")[1].strip()
    wait_for(ssh, f"test -s {TUNNEL_KEY}.pub", 600, "the laptop's own tunnel key")
    seen["tunnel_key"] = run(ssh, f"stat -c '%a %U' {TUNNEL_KEY}")[1].strip()
    seen["tunnel_shown"] = run(ssh, "/usr/local/sbin/deelit-support-key")
    seen["tunnel_pub"] = run(ssh, f"cat {TUNNEL_KEY}.pub")[1].strip()
    wait_for(ssh, "pgrep -x lightdm-gtk-greeter || pgrep -f lightdm-gtk-greeter", 1200, "the greeter")
    # The greeter preselects the child, no password: Enter, as a child would, again while
    # nothing happens (under TCG a key before the greeter has focus is lost).
    deadline = time.monotonic() + 1200
    while run(ssh, f"pgrep -u {CHILD_LOGIN} -x xfdesktop")[0] != 0:
        assert time.monotonic() < deadline, "no XFCE desktop for the child after 1200 s"
        time.sleep(20)
        with QMP(qmp_socket) as qmp:
            qmp.key("ret")
        wait_until = time.monotonic() + 100
        while time.monotonic() < wait_until and run(ssh, f"pgrep -u {CHILD_LOGIN} -x xfdesktop")[0]:
            time.sleep(5)
    seen["child_desktop"] = run(ssh, f"pgrep -u {CHILD_LOGIN} -x xfdesktop")[1]
    session_id = wait_for(ssh, f"loginctl list-sessions --no-legend | awk '$3 == "
                               f"\"{CHILD_LOGIN}\" {{print $1}}' | grep .", 300,
                          "the child's login session").split()[0]
    seen["session"] = run(ssh, f"loginctl show-session {session_id} -p Type -p Active -p Name")[1]
    time.sleep(60)  # let TCG draw the desktop before the picture
    screenshot()
    return seen


def check(seen: dict[str, Any], image_dir: Path) -> None:
    code, done = seen["firstboot"]
    assert code == 0 and done.strip(), "the first boot did not finish"
    assert "sudo" in seen["parent_groups"]
    assert not {"sudo", "adm", "root"} & set(seen["child_groups"])
    assert seen["child_sudo"] != 0 and "not allowed to run sudo" in str(seen["sudo_list"])
    assert seen["getent_blocked"] != 0 and seen["rcode_blocked"] == "3", seen
    assert {f"Name={CHILD_LOGIN}", "Type=x11", "Active=yes"} <= set(str(seen["session"]).split())
    assert seen["child_desktop"]
    # issue 19: no tunnel key in the image (so every laptop's is its own), made at first
    # boot, readable by the tunnel's account only, shown as text and QR for the technician
    assert TUNNEL_KEY.removeprefix("/") not in image_paths(image_dir)
    assert seen["tunnel_key"] == "600 deelit-support", seen["tunnel_key"]
    code, shown = seen["tunnel_shown"]
    assert code == 0 and seen["tunnel_pub"].startswith("ssh-ed25519 ") and seen["tunnel_pub"] in shown
    assert "\u2588" in shown, "no QR code shown beside the key"
    # laptops imaged in the same test run (station and stick) never share a key
    material = seen["tunnel_pub"].split()[1]
    assert material not in _TUNNEL_KEYS_SEEN, "two laptops of one image made the same tunnel key"
    _TUNNEL_KEYS_SEEN.add(material)
