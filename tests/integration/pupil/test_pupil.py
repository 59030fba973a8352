"""The pupil image end to end: build, tree suites, then one boot in QEMU (TCG, 2 GiB, SeaBIOS)
with the first-boot answers seeded as systemd credentials (SMBIOS type 11): greeter, parent
and child accounts, sudo, the child's session, remote help consent, deelit-diag, and
`deelit fleet apply` over SSH (OpenSSH, one connection per laptop) twice.

Builds `pupil-test` (pupil + technician_ssh accepting a key from a boot credential): many
minutes cold, root, QEMU, network to the host's Debian mirror (the fleet run updates apt
lists inside the guest). Screenshots and measured figures go to $DEELIT_TEST_ARTIFACTS
(default: a pytest temporary folder).
"""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml
from PIL import Image

from provisioner.build import verify as verifier
from provisioner.formats import manifest as fm
from provisioner.profile import load_profile
from provisioner.vm import VM, VMSpec, smbios_value

from .helpers import deelit, deelit_logged, record
from .qmp import QMP, changed_share, distinct_colours, share

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.heavy_vm]

BOOT_TIMEOUT = 2400  # a desktop under TCG on a busy 2-core machine
CHILD = "Emma"  # a test name; the login becomes "emma"
CHILD_LOGIN = "emma"
PARENT = "ouder"


@dataclass
class Guest:
    vm: VM
    ssh: paramiko.SSHClient
    qmp: QMP
    key: Path
    password: str
    artifacts: Path
    started: float
    facts: dict[str, Any] = field(default_factory=dict)

    def run(self, command: str, timeout: float = 300) -> tuple[int, str]:
        _, stdout, stderr = self.ssh.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace") + stderr.read().decode(errors="replace")
        return stdout.channel.recv_exit_status(), out

    def check(self, command: str, timeout: float = 300) -> str:
        code, out = self.run(command, timeout)
        assert code == 0, f"{command!r} exited {code}:\n{out}"
        return out

    def wait_for(self, command: str, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            code, out = self.run(command)
            if code == 0:
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not after {timeout:.0f} s ({command!r}: {out.strip()[-300:]})")
            time.sleep(5)

    def screen_until(self, name: str, done: Callable[[Image.Image], bool], timeout: float,
                     failing: str, every: float = 5) -> Image.Image:
        """Screenshots (kept as `name`) until `done` accepts one; TCG draws slowly."""
        deadline = time.monotonic() + timeout
        while not done(shot := self.qmp.screenshot(self.artifacts / name)):
            assert time.monotonic() < deadline, f"{name}: {failing} for {timeout:.0f} s"
            time.sleep(every)
        return shot

    def drawn(self, name: str, timeout: float) -> None:
        """Until the screen shows more than a blank colour."""
        self.screen_until(name, lambda s: distinct_colours(s) > 20, timeout,
                          "the screen stayed blank", every=10)

    def settled(self, name: str, timeout: float = 600) -> Image.Image:
        """The screen once it stops changing. Shift first: X blanks an idle screen after
        10 minutes, and a child at the laptop would have moved the mouse anyway."""
        self.qmp.key("shift")
        previous = [self.qmp.screenshot(self.artifacts / name)]

        def unchanged(shot: Image.Image) -> bool:
            same = changed_share(previous[0], shot) < 0.005
            previous[0] = shot
            return same

        time.sleep(10)
        return self.screen_until(name, unchanged, timeout, "the screen kept changing", every=10)

    def dialog_shown(self, desktop: Image.Image, name: str, timeout: float) -> None:
        """Until a window is drawn over `desktop`: under TCG a GTK dialog maps many seconds
        after its process starts, and a key sent before then goes elsewhere."""
        self.screen_until(name, lambda s: changed_share(desktop, s) >= 0.02, timeout,
                          "no dialog drawn")
        time.sleep(5)  # drawn is not yet focused

    def as_child(self, command: str) -> str:
        """A command as the child, inside its graphical session's environment once
        test_child_session_starts has found it (run alone, `-k fleet`, without it)."""
        env = self.facts.get("child_env", "")
        return f"su {CHILD_LOGIN} -c {shlex.quote(f'env {env} {command}')}"


def credential(name: str, value: str) -> list[str]:
    return ["-smbios", f"type=11,value={smbios_value(f'io.systemd.credential:{name}={value}')}"]


@pytest.fixture(scope="module")
def guest(build: Path, artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    tmp = tmp_path_factory.mktemp("pupil-vm")
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deelit-test", "-f", str(key)],
                   check=True)
    password = secrets.token_urlsafe(12)  # this test's only; the image holds none
    qmp_socket = tmp / "qmp.sock"
    spec = VMSpec(
        artifact=build, media="local", memory_mib=2048, console_log=artifacts / "console.log",
        ssh_pubkey=key.with_suffix(".pub").read_text(), smbios_serial="DEELIT-PUPIL-1",
        extra_qemu=["-qmp", f"unix:{qmp_socket},server=on,wait=off",
                    *credential("deelit.firstboot.parent-password", password),
                    *credential("deelit.firstboot.child-name", CHILD)],
    )
    started = time.monotonic()
    with VM(spec) as vm:
        vm.wait_for_ssh(BOOT_TIMEOUT)
        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a throwaway guest
        ssh.connect("127.0.0.1", port=vm.ssh_port, username="root", key_filename=str(key),
                    timeout=60, banner_timeout=120, auth_timeout=120)
        qmp = QMP(qmp_socket)
        record(artifacts, ssh_seconds=round(time.monotonic() - started))
        try:
            yield Guest(vm, ssh, qmp, key, password, artifacts, started)
        finally:
            qmp.close()
            ssh.close()


# --- the built tree --------------------------------------------------------------------------


def test_tree_suites_pass(build: Path, built_profile: Path) -> None:
    """Every role's testinfra suite on the built tree (packages, locale, keyboard, shadow…)."""
    proc = deelit("verify", str(built_profile), "--out", str(build), "--no-boot", check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\d+ passed", proc.stdout) and " failed" not in proc.stdout


def test_image_and_installed_size(build: Path, artifacts: Path) -> None:
    manifest = fm.read(build / fm.FILENAME)
    sizes = {a.name: a.size for a in manifest.artifacts}
    tree = verifier.built_tree(build, verifier.Cache())
    installed = int(subprocess.run(["du", "-sxb", str(tree)], capture_output=True, text=True,
                                   check=True).stdout.split()[0])
    record(artifacts, squashfs_bytes=sizes["filesystem.squashfs"], initrd_bytes=sizes["initrd.img"],
           installed_bytes=installed, packages=len(manifest.packages))
    assert sizes["filesystem.squashfs"] < installed


# --- the booted laptop -----------------------------------------------------------------------


def test_reaches_the_graphical_greeter(guest: Guest) -> None:
    guest.wait_for("pgrep -u lightdm -f lightdm-gtk-greeter", 1200, "the LightDM greeter")
    record(guest.artifacts, greeter_seconds=round(time.monotonic() - guest.started))
    assert guest.check("systemctl is-active lightdm").strip() == "active"
    guest.drawn("greeter.png", 600)
    # the branding role's background (roles/branding/files/greeter.svg): DEEL IT's teal to
    # navy around the login box, where Debian's own would be
    shot = guest.qmp.screenshot(guest.artifacts / "greeter-branding.png")
    teal = share(shot, lambda r, g, b: r < 60 and 30 < g < 130 and 60 < b < 140 and g > r + 20)
    record(guest.artifacts, greeter_teal_share=round(teal, 3))
    assert teal > 0.4, f"greeter background: {teal:.0%} DEEL IT teal"
    # the greeter speaks Dutch and runs with Belgian AZERTY
    env = guest.check("cat /proc/$(pgrep -u lightdm -f lightdm-gtk-greeter | head -1)/environ | tr '\\0' '\\n'")
    assert "LANG=nl_BE.UTF-8" in env
    xkb = guest.check("DISPLAY=:0 XAUTHORITY=/var/run/lightdm/root/:0 setxkbmap -query")
    assert re.search(r"layout:\s+be\b", xkb), xkb


def test_first_boot_seed_made_the_accounts_once(guest: Guest) -> None:
    assert guest.check("cat /var/lib/deelit/firstboot-done").strip()
    parent = guest.check(f"id -nG {PARENT}").split()
    child = guest.check(f"id -nG {CHILD_LOGIN}").split()
    assert "sudo" in parent
    assert not {"sudo", "adm", "root", "lpadmin"} & set(child)
    assert "nopasswdlogin" in child
    assert guest.check(f"getent passwd {CHILD_LOGIN} | cut -d: -f5").strip() == CHILD
    shadow = dict(line.split(":")[:2] for line in guest.check("cat /etc/shadow").splitlines())
    assert shadow[PARENT].startswith("$y$")  # yescrypt, chosen at first boot
    assert shadow[CHILD_LOGIN].startswith("!") and shadow["root"].startswith("!")
    assert [u for u, pw in shadow.items() if not pw.startswith(("!", "*"))] == [PARENT]
    # never again: the unit's condition now fails, and nothing logged the answers
    guest.check("systemctl restart deelit-firstboot")  # as on every later boot
    assert guest.check("systemctl show -p ConditionResult deelit-firstboot").strip() == "ConditionResult=no"
    assert guest.run("getent passwd emma2")[0] != 0
    journal = guest.check("journalctl -b --no-pager -o cat")
    assert guest.password not in journal


def test_child_made_at_first_boot_gets_the_screen_time(guest: Guest) -> None:
    """images/pupil-test.yaml sets limits with no fixed account: the first-boot hook applies
    them to the login the parent's answer made."""
    conf = f"/var/lib/timekpr/config/timekpr.{CHILD_LOGIN}.conf"
    assert guest.check(f"stat -c '%U %a' {conf}").strip() == "root 600"
    text = guest.check(f"cat {conf}")
    assert f"[{CHILD_LOGIN}]" in text and "@CHILD@" not in text
    assert "ALLOWED_WEEKDAYS = 1;2;3;4;5;6" in text  # sunday: minutes 0
    assert "LIMITS_PER_WEEKDAYS = 5400;86400;86400;86400;86400;86400" in text
    assert guest.check("systemctl is-active timekpr").strip() == "active"


def test_parent_can_sudo_child_cannot(guest: Guest) -> None:
    pw = shlex.quote(guest.password)
    ok = guest.run(f"su {PARENT} -c \"printf '%s\\n' {pw} | sudo -S -k -p '' id -u\"")
    assert ok == (0, "0\n"), ok  # nothing else either: no "unable to resolve host" warning
    wrong = guest.run(f"su {PARENT} -c \"printf 'wrong\\n' | sudo -S -k -p '' id -u\"")
    assert wrong[0] != 0
    child = guest.run(f"su {CHILD_LOGIN} -c 'sudo -n -k id -u'")
    assert child[0] != 0
    assert "not allowed to run sudo" in guest.check(f"LC_ALL=C sudo -l -U {CHILD_LOGIN}")


def test_child_session_starts(guest: Guest) -> None:
    """The child picks its name (no password) and presses Enter at the greeter, as a child
    would: LightDM's own PAM stack lets it in. (LightDM's D-Bus SwitchToUser, tried first,
    took the new login for an existing session and stopped the seat.)"""
    greeter = guest.check("tail -n 40 /var/log/lightdm/seat0-greeter.log")
    assert guest.run(f"getent passwd {CHILD_LOGIN}")[0] == 0, greeter
    guest.qmp.key("ret")  # the greeter preselects the child: the parent is the second entry
    session = guest.wait_for(
        f"loginctl list-sessions --no-legend | awk '$3 == \"{CHILD_LOGIN}\" {{print $1}}' | grep .",
        900, "a login session for the child").split()[0]
    props = guest.check(f"loginctl show-session {session} -p Type -p Class -p Active -p Display")
    assert {"Type=x11", "Class=user", "Active=yes"} <= set(props.split())
    guest.wait_for(f"pgrep -u {CHILD_LOGIN} -x xfdesktop", 900, "the child's XFCE desktop")
    time.sleep(60)  # settle, as a family would see it
    pid = guest.check(f"pgrep -u {CHILD_LOGIN} -x xfce4-session").split()[0]
    environ = guest.check(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    keep = [ln for ln in environ.splitlines()
            if ln.split("=", 1)[0] in ("DISPLAY", "XAUTHORITY", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR")]
    guest.facts["child_env"] = " ".join(shlex.quote(v) for v in keep)
    meminfo = dict(ln.split(":", 1) for ln in guest.check("cat /proc/meminfo").splitlines())
    free_mib = {k: int(meminfo[k].split()[0]) // 1024 for k in ("MemTotal", "MemFree", "MemAvailable")}
    record(guest.artifacts, child_session_seconds=round(time.monotonic() - guest.started),
           after_child_login_mib=free_mib, free_m=guest.check("free -m"))
    guest.drawn("child-desktop.png", 600)
    # the welcome page opened by itself at this first login, and only once
    guest.wait_for(f"pgrep -u {CHILD_LOGIN} -af 'welkom.html' | grep -v pgrep", 600, "the welcome page")
    assert guest.check(f"cat /home/{CHILD_LOGIN}/.config/deelit/welkom-gezien").strip()
    # the child closes it (under TCG its window may still be on its way)
    guest.run(f"pkill -u {CHILD_LOGIN} -f firefox")
    guest.wait_for(f"! pgrep -u {CHILD_LOGIN} -f firefox", 120, "the welcome page to close")
    # the school apps and help launchers reached the child's Dutch desktop folder
    desktop = guest.check(f"ls /home/{CHILD_LOGIN}/Bureaublad")
    assert {"deelit-web-scratch.desktop", "deelit-hulp-nodig.desktop"} <= set(desktop.split())


def listening_5900(guest: Guest) -> list[str]:
    return [ln for ln in guest.check("ss -Hltn").splitlines() if re.search(r":5900\s", ln)]


def test_remote_help_shares_only_after_consent(guest: Guest) -> None:
    start = guest.as_child("setsid /usr/local/bin/deelit-hulp-op-afstand >/dev/null 2>&1 < /dev/null &")
    # asked, then refused: nothing ever listens
    desktop = guest.settled("remote-help-before.png")
    guest.check(start)
    guest.wait_for(f"pgrep -u {CHILD_LOGIN} -x zenity", 300, "the consent question")
    guest.dialog_shown(desktop, "remote-help-question.png", 300)
    assert listening_5900(guest) == []
    guest.qmp.key("esc")
    guest.wait_for(f"! pgrep -u {CHILD_LOGIN} -f deelit-hulp-op-afstand", 120, "the refused helper to end")
    assert listening_5900(guest) == []
    # asked, then accepted (Enter on the default button): shared on loopback only
    desktop = guest.settled("remote-help-before-2.png")
    guest.check(start)
    guest.wait_for(f"pgrep -u {CHILD_LOGIN} -x zenity", 300, "the consent question")
    guest.dialog_shown(desktop, "remote-help-question-2.png", 300)
    guest.qmp.key("ret")
    guest.wait_for("ss -Hltn | grep -q ':5900 '", 180, "the shared screen after consent")
    time.sleep(10)
    guest.qmp.screenshot(guest.artifacts / "remote-help-sharing.png")
    local = [ln.split()[3] for ln in listening_5900(guest)]  # State Recv-Q Send-Q Local Peer
    assert local and all(a.startswith(("127.0.0.1:", "[::1]:")) for a in local), local
    guest.run(f"pkill -u {CHILD_LOGIN} -f deelit-hulp-op-afstand; pkill -u {CHILD_LOGIN} -x x11vnc; "
              f"pkill -u {CHILD_LOGIN} -x zenity")


def test_diag_bundle_has_no_user_data(guest: Guest) -> None:
    marker = f"PRIVE-{secrets.token_hex(6)}"
    home = f"/home/{CHILD_LOGIN}"
    guest.check(f"mkdir -p {home}/Documenten {home}/.mozilla/firefox/abc.default-esr && "
                f"echo {marker} > {home}/Documenten/huiswerk.txt && "
                f"echo {marker} > {home}/.mozilla/firefox/abc.default-esr/places.sqlite && "
                f"logger -p user.warning -t test 'user {CHILD_LOGIN} ({CHILD}) did something'")
    bundle = guest.check("deelit-diag -o /var/tmp/diag-test").strip().splitlines()[-1]
    listing = guest.check(f"tar -tzf {bundle}")
    for part in ("dmidecode.txt", "hardware.txt", "disks.txt", "power.txt", "logs.txt", "smart/"):
        assert part in listing, part
    content = guest.check(f"rm -rf /tmp/d && mkdir /tmp/d && tar -xzf {bundle} -C /tmp/d && "
                          "cat /tmp/d/*/*.txt /tmp/d/*/smart/*")
    assert marker not in content
    assert not re.search(rf"\b({CHILD_LOGIN}|{CHILD}|{PARENT})\b", content, re.IGNORECASE)
    assert "gebruiker1001" in content  # the child's name was there, and was replaced
    assert guest.check(f"stat -c %a {bundle}").strip() == "600"


def test_booted_role_suites(guest: Guest, built_profile: Path) -> None:
    """The roles' testinfra suites over SSH on the running laptop. `base` is left out: after
    first boot the parent has a password, by design, which its image check forbids."""
    profile = load_profile(str(built_profile))
    profile = profile.model_copy(update={"roles": [r for r in profile.roles if r.name != "base"]})
    code = verifier.run_suites(profile, f"paramiko://root@127.0.0.1:{guest.vm.ssh_port}",
                               [f"--ssh-identity-file={guest.key}"])
    assert code == 0


def fleet_apply(inventory: Path, profile: Path, log: Path) -> tuple[int, str]:
    return deelit_logged("fleet", "apply", "--inventory", str(inventory), "--profile", str(profile),
                         "--no-host-key-check", "--verbose", log=log, timeout=2700)


# Under TCG over ssh (97 tasks, 5 Dec 2026): first run 419 s, second (nothing to change) 425 s;
# paramiko took ~20 min. 6 Dec, with ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks: 465 s
# and 439 s (looped file/copy/template items, ~2-2.5 s a module run); with deelit.laptop.files
# writing each group of files in one module run (66 tasks): 172 s and 172 s.
@pytest.mark.timeout(6000)
def test_fleet_apply_changes_the_phone_then_nothing(guest: Guest, built_profile: Path, tmp_path: Path) -> None:
    phone = f"09 {secrets.randbelow(900) + 100} 12 34"
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"testpoint": {"hosts": {"pupil-vm": {
        "ansible_host": "127.0.0.1", "ansible_port": guest.vm.ssh_port, "ansible_user": "root",
        "ansible_ssh_private_key_file": str(guest.key)}}}}))
    (inventory / "group_vars" / "testpoint.yml").write_text(yaml.safe_dump({
        "support_tools_point_name": "DEEL IT Testpunt", "support_tools_point_phone": phone}))
    assert phone not in guest.check("cat /etc/deelit/point.conf")
    # the roles' apt tasks refresh the lists: the guest must reach the image's own mirror
    code, out = guest.run("apt-get -q update 2>&1 | tail -n 20; cat /etc/resolv.conf; "
                          "for h in $(sed -n 's|^URIs: *[a-z]*://\\([^/]*\\).*|\\1|p' "
                          "/etc/apt/sources.list.d/*.sources | sort -u); do { getent ahosts $h || "
                          "echo \"$h: not resolved\"; } | head -n 2; done")
    assert not re.search(r"^(Err|W):", out, re.MULTILINE), f"apt in the guest cannot update:\n{out}"

    started = time.monotonic()
    code, out = fleet_apply(inventory, built_profile, guest.artifacts / "fleet-1.log")
    record(guest.artifacts, fleet_first_seconds=round(time.monotonic() - started))
    assert code == 0, out[-6000:]
    changed = int(re.search(r"pupil-vm\s+ok\s+changed=(\d+)", out).group(1))  # type: ignore[union-attr]
    assert changed > 0, out
    assert f"POINT_PHONE='{phone}'" in guest.check("cat /etc/deelit/point.conf")
    assert f"bel {phone}" in guest.check("cat /usr/share/applications/deelit-hulp-nodig.desktop")
    # what the child sees when clicking "Hulp nodig?" now
    dialog = guest.as_child("timeout 20 sh -x /usr/local/bin/deelit-hulp-nodig 2>&1 || true")
    assert phone in guest.check(dialog)

    started = time.monotonic()
    code, out = fleet_apply(inventory, built_profile, guest.artifacts / "fleet-2.log")
    record(guest.artifacts, fleet_second_seconds=round(time.monotonic() - started))
    assert code == 0, out[-3000:]
    assert re.search(r"pupil-vm\s+ok\s+changed=0\b", out), out
