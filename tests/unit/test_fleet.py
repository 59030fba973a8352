"""deelit fleet: the generated play, the recap parser, the example inventory, the command,
and the SSH connection: what ansible-playbook is handed, then a real run against a throwaway
sshd on this machine (a harmless test role, see tests/unit/fleet_roles/)."""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import shlex
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from provisioner import fleet, procs
from provisioner.cli import make_app
from provisioner.errors import DeelitError
from provisioner.profile import PROJECT_ROOT, Profile, RoleRef, load_profile

app = make_app()

RECAP = """
PLAY RECAP *********************************************************************
deelit-ex-000001           : ok=57   changed=2    unreachable=0    failed=0    skipped=9    rescued=0    ignored=0
deelit-ex-000002           : ok=0    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0
"""


def test_play_runs_the_profile_roles_but_base() -> None:
    profile = load_profile("pupil")
    play = yaml.safe_load(fleet.render_playbook(profile, "http://mirror.invalid/debian", None))[0]
    names = [r["role"] for r in play["roles"]]
    assert names == [r.name for r in profile.roles if r.name != "base"]
    assert "support_tools" in names and "firstboot" in names
    assert play["vars"]["deelit_fleet"] is True
    assert play["vars"]["deelit_components"] == profile.components
    assert play["hosts"] == "all"


def test_profile_role_vars_are_passed_and_point_settings_are_not() -> None:
    """Role vars of the profile pass as role params; the point's contact details must stay
    defaults, so inventory group_vars can override them."""
    profile = load_profile("pupil-test")
    play = yaml.safe_load(fleet.render_playbook(profile, "http://mirror.invalid/debian", None))[0]
    by_name = {r["role"]: r.get("vars", {}) for r in play["roles"]}
    assert by_name["technician_ssh"] == {"technician_ssh_accept_credential": True}
    assert not any(k.startswith("support_tools_point") for v in by_name.values() for k in v)


def test_recap_parsing() -> None:
    results = fleet.parse_recap("TASK [x]\nok: [a]\n" + RECAP)
    assert results["deelit-ex-000001"] == fleet.HostResult("deelit-ex-000001", 57, 2, 0, 0)
    assert results["deelit-ex-000001"].success
    assert not results["deelit-ex-000002"].success
    assert fleet.parse_recap("ERROR! no hosts matched") == {}


def test_example_inventory_has_point_details_and_no_personal_data() -> None:
    folder = PROJECT_ROOT / "inventory" / "example"
    hosts = yaml.safe_load((folder / "hosts.yml").read_text())
    assert all(name.startswith("deelit-ex-") for name in hosts["example"]["hosts"])
    group = yaml.safe_load((folder / "group_vars" / "example.yml").read_text())
    assert group["support_tools_point_phone"] and group["support_tools_point_name"]
    defaults = yaml.safe_load((PROJECT_ROOT / "roles/support_tools/defaults/main.yml").read_text())
    unknown = {k for k in group if not k.startswith("ansible_") and k not in defaults
               and not k.startswith("school_apps_")}
    assert unknown == set()
    # example addresses only (RFC 2606 / 5737): no real host, no family
    assert group["support_tools_tunnel_host"].endswith("example.org")
    assert all(h["ansible_host"].startswith("192.0.2.") for h in hosts["example"]["hosts"].values())


def test_missing_inventory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DeelitError, match="no such inventory"):
        fleet.apply(load_profile("pupil"), tmp_path / "nope")


def test_cli_has_fleet_apply() -> None:
    result = CliRunner().invoke(app, ["fleet", "apply", "--help"])
    assert result.exit_code == 0
    assert "--inventory" in result.output and "--limit" in result.output


# --- the SSH connection: what ansible-playbook is handed ----------------------------------

PROBE_ROLES = Path(__file__).resolve().parent / "fleet_roles"


def probe_profile(out: Path) -> Profile:
    return Profile(name="fleet-probe", mirror="http://mirror.invalid/debian",
                   roles=[RoleRef(name="fleet_probe", vars={"fleet_probe_dir": str(out)})])


def ssh_options(env: dict[str, str]) -> dict[str, str]:
    words = shlex.split(env["ANSIBLE_SSH_ARGS"])
    return dict(w.split("=", 1) for prev, w in itertools.pairwise(words) if prev == "-o")


@pytest.mark.parametrize("host_key_check", [True, False])
def test_playbook_runs_over_ssh_with_control_masters_in_a_private_folder(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, host_key_check: bool) -> None:
    seen: dict[str, Any] = {}

    class FakePlaybook:
        def __init__(self, argv: list[str], **kwargs: Any) -> None:
            env = kwargs["env"]
            folder = Path(ssh_options(env)["ControlPath"]).parent
            seen.update(argv=argv, env=env, folder=folder, mode=stat.S_IMODE(folder.stat().st_mode))
            self.stdout = io.StringIO(RECAP)

        def wait(self) -> int:
            return 0

        def poll(self) -> int:
            return 0

    monkeypatch.setattr(fleet.subprocess, "Popen", FakePlaybook)
    (tmp_path / "inventory").mkdir()
    monkeypatch.chdir(tmp_path)
    fleet.apply(probe_profile(tmp_path), Path("inventory"), host_key_check=host_key_check,
                roles_dir=PROBE_ROLES)

    argv, env, folder = seen["argv"], seen["env"], seen["folder"]
    assert argv[argv.index("-c") + 1] == "ansible.builtin.ssh"
    assert argv[argv.index("-i") + 1] == str(tmp_path / "inventory")  # ansible runs elsewhere
    assert env["ANSIBLE_PIPELINING"] == "True"
    options = ssh_options(env)
    assert options["ControlMaster"] == "auto" and options["ControlPersist"] == fleet.CONTROL_PERSIST
    assert options["ControlPath"] == f"{folder}/%C"
    assert seen["mode"] == 0o700
    # ssh binds <ControlPath>.<16 random> first: the socket path must fit sun_path (108)
    assert len(str(folder)) + len("/") + 40 + len(".") + 16 < 108
    assert env["ANSIBLE_SSH_CONTROL_PATH_DIR"] == str(folder)
    assert not folder.exists() and not folder.parent.exists()
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == str(host_key_check)
    assert ("UserKnownHostsFile" in options) is (not host_key_check)
    if not host_key_check:
        assert options["UserKnownHostsFile"] == "/dev/null"


def test_run_folder_stays_short_under_a_long_tmpdir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet.tempfile, "tempdir", "/tmp/" + "x" * 80)
    assert fleet._short_tmp() == "/tmp"


# --- the SSH connection for real: a throwaway sshd on 127.0.0.1 -----------------------------

SSHD = Path("/usr/sbin/sshd")


@dataclass
class Sshd:
    port: int
    client_key: Path
    host_key: Path
    log: Path

    def log_count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log.read_text(), re.MULTILINE))

    def clients(self) -> dict[int, str]:
        """The local processes with a connection to this sshd, and their command lines."""
        out = subprocess.run(["ss", "-tnpH", "state", "established", "dport", "=", f":{self.port}"],
                             capture_output=True, text=True, check=True).stdout
        found = {}
        for pid in {int(p) for p in re.findall(r"pid=(\d+)", out)}:
            with contextlib.suppress(OSError):  # gone meanwhile
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deelit-fleet-test",
                    "-f", str(path)], check=True)
    return path


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """OpenSSH's sshd in the foreground on 127.0.0.1, with its own host key, one authorized
    key, no PAM, public keys only, root only; stopped (its whole group) at the end."""
    if not SSHD.exists() or shutil.which("ss") is None:
        pytest.skip("needs Debian's openssh-server and iproute2 (host-packages.txt)")
    folder = tmp_path / "sshd"
    folder.mkdir()
    host_key, client_key = keygen(folder / "host_key"), keygen(folder / "client_key")
    (folder / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    port = free_port()
    (folder / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile none
AuthorizedKeysFile {folder}/authorized_keys
StrictModes no
AllowUsers root
PermitRootLogin prohibit-password
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
    log = folder / "sshd.log"
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation: what ssh.service makes
    proc = subprocess.Popen([str(SSHD), "-D", "-f", str(folder / "sshd_config"), "-E", str(log)],
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited {proc.returncode}: {log.read_text() if log.exists() else ''}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("sshd did not listen within 20 s")
                time.sleep(0.1)
        yield Sshd(port, client_key, host_key, log)
    finally:
        procs.stop(proc, group=True)


def probe_inventory(tmp_path: Path, sshd: Sshd, **host_vars: Any) -> Path:
    """One laptop, this machine, reached as the point's inventories reach theirs: address,
    port, user and key from the inventory."""
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True, exist_ok=True)
    remote_tmp = tmp_path / "remote-tmp"  # not root's ~/.ansible/tmp
    remote_tmp.mkdir(mode=0o700, exist_ok=True)
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"testpoint": {"hosts": {"probe-host": {
        "ansible_host": "127.0.0.1", "ansible_port": sshd.port, "ansible_remote_tmp": str(remote_tmp),
        **host_vars}}}}))
    (inventory / "group_vars" / "testpoint.yml").write_text(yaml.safe_dump({
        "ansible_user": "root", "ansible_ssh_private_key_file": str(sshd.client_key)}))
    return inventory


def known_hosts_text() -> str:
    path = Path.home() / ".ssh" / "known_hosts"
    return path.read_text() if path.exists() else ""


@pytest.mark.root
def test_real_ssh_one_connection_per_laptop_and_no_master_left(sshd: Sshd, tmp_path: Path) -> None:
    """Two runs of the harmless probe role through apply() against this machine's throwaway
    sshd: each run logs in once, every task is one session on that connection (pipelining),
    and when apply() returns, the master is gone (it said goodbye: not killed by the sshd
    stopping), and so is its socket folder; root's known_hosts did not learn the key."""
    out = tmp_path / "out"
    out.mkdir()
    inventory = probe_inventory(tmp_path, sshd)
    profile = probe_profile(out)
    known_before = known_hosts_text()
    clients: dict[int, str] = {}
    folder_modes: dict[Path, int] = {}

    def watch(line: str) -> None:
        for pid, cmdline in sshd.clients().items():
            clients[pid] = cmdline
            if m := re.fullmatch(r"ssh: (\S+) \[mux\]\s*", cmdline):
                folder = Path(m[1]).parent
                folder_modes[folder] = stat.S_IMODE(folder.stat().st_mode)

    for run, changed in ((1, 1), (2, 0)):
        results = fleet.apply(profile, inventory, host_key_check=False, roles_dir=PROBE_ROLES,
                              on_line=watch)
        assert results == {"probe-host": fleet.HostResult("probe-host", 5, changed, 0, 0)}, run
        assert sshd.clients() == {}, "an ssh process is still connected after apply()"
        assert sshd.log_count(r"^Accepted publickey for root ") == run
        # setup, lineinfile, slurp, command: four modules, four sessions, no file transfer
        assert sshd.log_count(r"^Starting session: command for root ") == 4 * run
        assert sshd.log_count(r"^Received disconnect from .*disconnected by user") == run

    assert (out / "probe.txt").read_text() == "profile=fleet-probe fleet=True\n"
    assert folder_modes, f"no control master seen during the runs: {clients}"
    assert set(folder_modes.values()) == {0o700}
    assert len(folder_modes) == 2  # one folder per run
    for folder in folder_modes:
        assert not folder.exists() and not folder.parent.exists()
    assert not any(Path(f"/proc/{pid}").exists() and fleet._running(pid) for pid in clients)
    assert f"[127.0.0.1]:{sshd.port}" not in known_hosts_text()
    assert known_hosts_text() == known_before


@pytest.mark.root
def test_real_ssh_host_key_checking_uses_the_inventory_known_hosts(sshd: Sshd, tmp_path: Path) -> None:
    """--host-key-check (the default): a host whose key the known_hosts file has is reached;
    one it lacks is unreachable. The inventory's own ssh options (here UserKnownHostsFile)
    reach ssh."""
    out = tmp_path / "out"
    out.mkdir()
    known = tmp_path / "known_hosts"
    host_key = sshd.host_key.with_suffix(".pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{sshd.port} {host_key[0]} {host_key[1]}\n")
    options = f"-o UserKnownHostsFile={known} -o GlobalKnownHostsFile=/dev/null"
    inventory = probe_inventory(tmp_path, sshd, ansible_ssh_common_args=options)
    results = fleet.apply(probe_profile(out), inventory, roles_dir=PROBE_ROLES)
    assert results["probe-host"].success, results

    known.write_text("")
    results = fleet.apply(probe_profile(out), inventory, roles_dir=PROBE_ROLES)
    assert results["probe-host"].unreachable == 1, results
    assert known.read_text() == ""  # nothing learnt with checking on
    assert sshd.clients() == {}
