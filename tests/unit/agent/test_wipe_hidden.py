"""Erasing what hides, and believing a firmware erase only on the drive's word (issue 20).

The wipe runs for real on a file posing as the disk (the overwrite, the sampled read-backs, the
certificate); only the tools are faked, beneath `sysrun.run` (its `subprocess.run` and `which`),
so `run`'s own exit-status check is part of every test. A fake tool may also act on the file,
as the drive would (a security erase zeroes it).

There are no captured hdparm or nvme sanitize-log outputs in /work/shared/fixtures/hardware/
(only smartctl, dmidecode and battery reports), so the outputs below are written in the exact
layout the tools print, from their source: hdparm 9.65 (hdparm.c: " max sectors   = %llu/%llu"
then ", HPA is enabled|disabled" or "(%llu?), HPA setting seems invalid"; " setting max visible
sectors to %llu (%s)"; perror " SET_MAX_ADDRESS(_EXT) failed"; identify.c: the "Security: "
section one flag a line with a "not" column, "\\tReal max sectors: %llu" of --dco-identify) and
nvme-cli 2.x (`json_sanitize_log`: the log under the controller's name, `sstat.status` the
string "(N) <text>"). The Security sections match public `hdparm -I` captures line for line.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from provisioner.agent import sysrun
from provisioner.agent import wipe as wiping
from provisioner.agent.blockdev import DiskIdentity, Safety
from provisioner.agent.certificate import Certificate
from provisioner.agent.wipe_plan import Plan, sanitize_record
from provisioner.errors import DeelitError

SECTOR = 512
NATIVE = 16384  # 8 MiB: the drive's native max
VISIBLE = 12288  # 6 MiB: what an HPA leaves visible
FACTORY = 20480  # 10 MiB: the size before a DCO cut the drive down
PATTERN = (b"DEEL-IT family photo \x00\x01\x02\x03 " * 20)[:SECTOR]

Reply = tuple[int, str, str]  # exit status, stdout, stderr


class Tools:
    """The system's tools, by argv prefix: the newest matching handler answers."""

    def __init__(self) -> None:
        self.handlers: list[tuple[list[str], Callable[[list[str]], Reply]]] = []
        self.calls: list[list[str]] = []

    def on(self, *prefix: str, out: str = "", err: str = "", rc: int = 0,
           do: Callable[[list[str]], Reply] | None = None) -> None:
        self.handlers.append((list(prefix), do or (lambda argv: (rc, out, err))))

    def ran(self, *prefix: str) -> list[list[str]]:
        return [c for c in self.calls if c[: len(prefix)] == list(prefix)]

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        for prefix, handler in reversed(self.handlers):
            if argv[: len(prefix)] == prefix:
                rc, out, err = handler(list(argv))
                return subprocess.CompletedProcess(argv, rc, out, err)
        raise AssertionError(f"unexpected command {argv}")


@pytest.fixture
def tools(monkeypatch: pytest.MonkeyPatch) -> Tools:
    fake = Tools()
    fake.on("hdparm", "-V", out="hdparm v9.65\n")
    fake.on("nvme", "version", out="nvme version 2.13 (git 2.13)\nlibnvme version 1.13\n")
    fake.on("blockdev", "--rereadpt")
    monkeypatch.setattr(sysrun, "subprocess",
                        SimpleNamespace(run=fake, TimeoutExpired=subprocess.TimeoutExpired))
    monkeypatch.setattr(sysrun, "shutil", SimpleNamespace(which=lambda tool: f"/usr/sbin/{tool}"))
    return fake


@dataclasses.dataclass
class Kernel:
    """The kernel's view of the disk: its size follows a restored HPA only after a rescan."""

    ident: DiskIdentity
    sysfs: Path
    native_bytes: int = 0

    def identify(self, device: str, safety: Safety | None = None) -> DiskIdentity:
        rescan = self.sysfs / "block" / self.ident.name / "device" / "rescan"
        if self.native_bytes and rescan.exists() and rescan.read_text() == "1":
            self.ident.size_bytes = self.native_bytes
        return dataclasses.replace(self.ident)


def disk_file(tmp_path: Path, sectors: int) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(PATTERN * sectors)
    return path


def pattern_at(path: Path, start: int, end: int) -> int:
    return path.read_bytes()[start * SECTOR : end * SECTOR].count(PATTERN)


def install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ident: DiskIdentity,
            *, kernel_follows: bool = True, native: int = NATIVE) -> Kernel:
    sysfs = tmp_path / "sys"
    if kernel_follows:  # a drive whose kernel picks up a new size on a SCSI rescan
        (sysfs / "block" / ident.name / "device").mkdir(parents=True)
        (sysfs / "block" / ident.name / "device" / "rescan").write_text("")
    kernel = Kernel(ident, sysfs, native * SECTOR)
    monkeypatch.setattr(wiping, "identify", kernel.identify)
    monkeypatch.setattr(wiping, "refuse_if_in_use", lambda ident, safety=None: None)
    return kernel


def request(kernel: Kernel, tmp_path: Path, method: str = "auto") -> wiping.WipeRequest:
    return wiping.WipeRequest(
        device=kernel.ident.path, method=method, confirm=wiping.confirmation_token(kernel.ident),
        cert_dir=tmp_path / "certs", organisation="DEEL IT Gent", technician_id="tech-07")


def run_wipe(kernel: Kernel, tmp_path: Path, method: str = "auto") -> wiping.WipeResult:
    return wiping.wipe(request(kernel, tmp_path, method), safety=Safety(sysfs=kernel.sysfs))


def certificate(result: wiping.WipeResult) -> dict[str, Any]:
    assert result.certificate
    data: dict[str, Any] = json.loads(Path(result.certificate).read_text())
    Certificate.model_validate(data)
    return data


# ---------------------------------------------------------------------- hdparm, as it prints


def hdparm_n(dev: str, visible: int, native: int, *, setting: int | None = None) -> str:
    lines = ["", f"{dev}:"]
    if setting is not None:
        lines.append(f" setting max visible sectors to {setting} (permanent)")
    state = "enabled" if visible < native else "disabled"
    lines.append(f" max sectors   = {visible}/{native}, HPA is {state}")
    return "\n".join(lines) + "\n"


SECURITY_FLAGS = ("supported", "enabled", "locked", "frozen", "expired: security count",
                  "supported: enhanced erase")


def hdparm_i(dev: str, sectors: int, *, dco: bool = True, enabled: bool = False,
             locked: bool = False, frozen: bool = False, supported: bool = True,
             enhanced: bool = True) -> str:
    """`hdparm -I` of a 2.5" laptop HDD, cut to the parts the wipe reads (same layout)."""
    on = {"supported": supported, "enabled": enabled, "locked": locked, "frozen": frozen,
          "expired: security count": False, "supported: enhanced erase": enhanced}
    flags = "".join(f"\t{'' if on[f] else 'not'}\t{f}\n" for f in SECURITY_FLAGS)
    level = "\tSecurity level high\n" if enabled else ""
    dco_line = "\t   *\tDevice Configuration Overlay feature set\n" if dco else ""
    return (
        f"\n{dev}:\n\nATA device, with non-removable media\n"
        "\tModel Number:       ST500LM021-1KJ152\n"
        "\tSerial Number:      W62GTJ8X\n"
        "\tFirmware Revision:  0002LIM1\n"
        "\tTransport:          Serial, ATA8-AST, SATA 1.0a, SATA II Extensions, SATA Rev 2.5,"
        " SATA Rev 2.6, SATA Rev 3.0\n"
        "Configuration:\n"
        f"\tLBA    user addressable sectors:   {min(sectors, 268435455):>9}\n"
        f"\tLBA48  user addressable sectors:   {sectors:>9}\n"
        "\tLogical  Sector size:                   512 bytes\n"
        "\tPhysical Sector size:                  4096 bytes\n"
        "\tNominal Media Rotation Rate: 7200\n"
        "Commands/features:\n"
        "\tEnabled\tSupported:\n"
        "\t   *\tSMART feature set\n"
        "\t    \tSecurity Mode feature set\n"
        "\t   *\tPower Management feature set\n"
        "\t   *\tWrite cache\n"
        "\t   *\tHost Protected Area feature set\n"
        "\t    \tSET_MAX security extension\n"
        "\t   *\t48-bit Address feature set\n"
        f"{dco_line}"
        "\t   *\tMandatory FLUSH_CACHE\n"
        "\t   *\tNative Command Queueing (NCQ)\n"
        "Security: \n"
        "\tMaster password revision code = 65534\n"
        f"{flags}{level}"
        "\t98min for SECURITY ERASE UNIT. 98min for ENHANCED SECURITY ERASE UNIT.\n"
        "Logical Unit WWN Device Identifier: 5000c5009f2b7c1a\n"
        "\tNAA\t\t: 5\n\tIEEE OUI\t: 000c50\n\tUnique ID\t: 09f2b7c1a\n"
        "Checksum: correct\n"
    )


def hdparm_dco(dev: str, real_max: int) -> str:
    return (
        f"\n{dev}:\nDCO Revision: 0x0002\n"
        "The following features can be selectively disabled via DCO:\n"
        "\tTransfer modes:\n\t\t mdma0 mdma1 mdma2\n"
        "\t\t udma0 udma1 udma2 udma3 udma4 udma5 udma6\n"
        f"\tReal max sectors: {real_max}\n"
        "\tATA command/feature sets:\n"
        "\t\t SMART self_test error_log security AAM HPA 48_bit\n"
        "\t\t streaming FUA selective_test conveyance_test write_read_verify\n"
        "\tSATA command/feature sets:\n\t\t NCQ interface_power_management SSP\n"
    )


NO_DCO_ERR = " HDIO_DRIVE_CMD(dco_identify) failed: Input/output error\n"


@dataclasses.dataclass
class AtaDrive:
    """A SATA drive as hdparm sees it: max address, DCO, security state."""

    path: str
    visible: int = VISIBLE
    native: int = NATIVE
    dco_max: int | None = None  # None: no DCO feature set
    set_max_refused: bool = False
    set_max_ignored: bool = False  # exits 0, changes nothing
    enabled: bool = False
    clears_password: bool = True  # a completed SECURITY ERASE UNIT clears the user password
    answers_after_erase: bool = True
    erased: bool = False

    def attach(self, tools: Tools) -> None:
        dev = self.path
        tools.on("hdparm", "-I", dev, do=self.identify)
        tools.on("hdparm", "-N", dev, do=lambda argv: (0, hdparm_n(dev, self.visible, self.native), ""))
        tools.on("hdparm", "--dco-identify", dev, do=self.dco)
        tools.on("hdparm", "--yes-i-know-what-i-am-doing", "-N", do=self.set_max)
        tools.on("hdparm", "--user-master", "u", "--security-set-pass", do=self.set_pass)
        tools.on("hdparm", "--user-master", "u", "--security-erase-enhanced", do=self.erase)
        tools.on("hdparm", "--user-master", "u", "--security-erase", do=self.erase)

    def identify(self, argv: list[str]) -> Reply:
        if self.erased and not self.answers_after_erase:
            return 5, "", " HDIO_DRIVE_CMD(identify) failed: Input/output error\n"
        return 0, hdparm_i(self.path, self.visible, dco=self.dco_max is not None,
                           enabled=self.enabled), ""

    def dco(self, argv: list[str]) -> Reply:
        if self.dco_max is None:
            return 5, f"\n{self.path}:\n", NO_DCO_ERR
        return 0, hdparm_dco(self.path, self.dco_max), ""

    def set_max(self, argv: list[str]) -> Reply:
        wanted = int(argv[3].lstrip("p"))
        if self.set_max_refused:
            return (5, f"\n{self.path}:\n setting max visible sectors to {wanted} (permanent)\n"
                    + hdparm_n(self.path, self.visible, self.native).split(":\n", 1)[1],
                    " SET_MAX_ADDRESS(_EXT) failed: Input/output error\n")
        if not self.set_max_ignored:
            self.visible = wanted
        return 0, hdparm_n(self.path, self.visible, self.native, setting=wanted), ""

    def set_pass(self, argv: list[str]) -> Reply:
        self.enabled = True
        return (0, f'security_password: "{argv[-2]}"\n\n{self.path}:\n Issuing SECURITY_SET_PASS '
                f'command, password="{argv[-2]}", user=user, mode=high\n', "")

    def erase(self, argv: list[str]) -> Reply:
        size = Path(self.path).stat().st_size
        Path(self.path).write_bytes(bytes(size))
        self.erased = True
        if self.clears_password:
            self.enabled = False
        return (0, f'security_password: "{argv[-2]}"\n\n{self.path}:\n Issuing SECURITY_ERASE '
                f'command, password="{argv[-2]}", user=user\n', "")


def ata_ident(path: Path, sectors: int) -> DiskIdentity:
    return DiskIdentity(path=str(path), name="sda", size_bytes=sectors * SECTOR,
                        logical_block_size=SECTOR, rotational=True, kind="ata",
                        model="ST500LM021-1KJ152", serial="W62GTJ8X", vendor="ATA",
                        transport="sata")


# ---------------------------------------------------------------------- HPA and DCO


def test_hpa_is_lifted_and_the_whole_native_size_erased(tools, monkeypatch, tmp_path):
    disk = disk_file(tmp_path, NATIVE)
    drive = AtaDrive(str(disk))
    drive.attach(tools)
    kernel = install(monkeypatch, tmp_path, ata_ident(disk, VISIBLE))

    plan = wiping.wipe(request(kernel, tmp_path, "overwrite").model_copy(update={"dry_run": True}),
                       safety=Safety(sysfs=kernel.sysfs))
    assert plan.commands[0] == f"hdparm --yes-i-know-what-i-am-doing -N p{NATIVE} {disk}"
    assert plan.hidden_areas[0].startswith("HPA present") and drive.visible == VISIBLE

    result = run_wipe(kernel, tmp_path, "overwrite")
    assert tools.ran("hdparm", "--yes-i-know-what-i-am-doing", "-N", f"p{NATIVE}", str(disk))
    assert drive.visible == NATIVE
    assert pattern_at(disk, 0, NATIVE) == 0  # the formerly hidden tail too
    assert result.passed and result.result == "passed" and result.nist_category == "Clear"
    assert result.hidden_area is not None and result.hidden_area.status == "removed"
    cert = certificate(result)
    assert cert["result"] == "passed" and cert["errors"] == []
    assert cert["hidden_area"]["status"] == "removed"
    assert cert["hidden_area"]["restore_command"].endswith(f"-N p{NATIVE} {disk}")
    assert cert["media"]["size_apparent_bytes"] == VISIBLE * SECTOR
    assert cert["media"]["size_bytes"] == cert["media"]["size_real_bytes"] == NATIVE * SECTOR
    assert cert["verification"]["blocks_total"] == NATIVE * SECTOR // wiping.overwrite.BLOCK
    assert not tools.ran("hdparm", "--dco-restore")


def test_hpa_restore_refused_is_not_a_pass(tools, monkeypatch, tmp_path):
    """SET MAX aborted (a BIOS's SET MAX FREEZE LOCK): the visible part is erased, the hidden
    tail is not, and the certificate says so."""
    disk = disk_file(tmp_path, NATIVE)
    drive = AtaDrive(str(disk), set_max_refused=True)
    drive.attach(tools)
    kernel = install(monkeypatch, tmp_path, ata_ident(disk, VISIBLE))

    result = run_wipe(kernel, tmp_path, "overwrite")
    assert not result.passed and result.result == "hidden area not erased"
    assert result.nist_category == "none"
    assert pattern_at(disk, 0, VISIBLE) == 0
    assert pattern_at(disk, VISIBLE, NATIVE) == NATIVE - VISIBLE  # still there
    cert = certificate(result)
    assert cert["result"] == "hidden area not erased"
    assert cert["sanitization"]["nist_category"] == "none"
    assert cert["sanitization"]["method_category"] == "Clear"
    assert cert["hidden_area"]["status"] == "present"
    assert "SET_MAX_ADDRESS(_EXT) failed" in cert["hidden_area"]["restore_error"]
    assert cert["media"]["size_bytes"] == VISIBLE * SECTOR
    assert cert["media"]["size_real_bytes"] == NATIVE * SECTOR
    assert any("could not be lifted" in e for e in cert["errors"])


def test_restore_that_the_drive_ignores_is_not_a_pass(tools, monkeypatch, tmp_path):
    """hdparm exits 0 but the re-read still shows the HPA: the drive's word decides."""
    disk = disk_file(tmp_path, NATIVE)
    AtaDrive(str(disk), set_max_ignored=True).attach(tools)
    kernel = install(monkeypatch, tmp_path, ata_ident(disk, VISIBLE))
    result = run_wipe(kernel, tmp_path, "overwrite")
    assert result.result == "hidden area not erased"
    assert result.hidden_area and "then read 12288/16384" in (result.hidden_area.restore_error or "")


def test_restored_hpa_the_kernel_does_not_see_yet_is_not_a_pass(tools, monkeypatch, tmp_path):
    """libata keeps the size it read at boot: the drive is whole again, the kernel is not, so
    this run is not a pass, nor is a rerun before the power cycle."""
    disk = disk_file(tmp_path, NATIVE)
    drive = AtaDrive(str(disk))
    drive.attach(tools)
    kernel = install(monkeypatch, tmp_path, ata_ident(disk, VISIBLE), kernel_follows=False)

    first = run_wipe(kernel, tmp_path, "overwrite")
    assert drive.visible == NATIVE  # lifted on the drive, permanently
    assert first.result == "hidden area not erased" and not first.passed
    assert first.hidden_area and "power the laptop off and on" in first.hidden_area.detail

    again = run_wipe(kernel, tmp_path, "overwrite")  # hdparm -N now reads 16384/16384
    assert not tools.ran("hdparm", "--yes-i-know-what-i-am-doing", "-N")[1:]  # no second lift
    assert again.result == "hidden area not erased"
    assert again.hidden_area and "power-cycle and rerun" in again.hidden_area.detail


def test_dco_restriction_is_not_a_pass_and_is_never_restored(tools, monkeypatch, tmp_path):
    disk = disk_file(tmp_path, NATIVE)
    AtaDrive(str(disk), visible=NATIVE, dco_max=FACTORY).attach(tools)
    kernel = install(monkeypatch, tmp_path, ata_ident(disk, NATIVE))

    result = run_wipe(kernel, tmp_path, "overwrite")
    assert result.result == "hidden area not erased" and result.nist_category == "none"
    assert not tools.ran("hdparm", "--dco-restore") and not tools.ran("hdparm", "--dco-setmax")
    assert not tools.ran("hdparm", "--yes-i-know-what-i-am-doing")
    cert = certificate(result)
    assert cert["hidden_area"]["status"] == "present"
    assert cert["hidden_area"]["dco_max_sectors"] == FACTORY
    assert cert["media"]["size_real_bytes"] == FACTORY * SECTOR
    assert "DCO hides 4096 sectors" in cert["hidden_area"]["detail"]


def test_drive_without_dco_or_hpa_passes(tools, monkeypatch, tmp_path):
    """No DCO feature set in hdparm -I: --dco-identify failing is expected, not a doubt."""
    disk = disk_file(tmp_path, NATIVE)
    AtaDrive(str(disk), visible=NATIVE).attach(tools)
    kernel = install(monkeypatch, tmp_path, ata_ident(disk, NATIVE))
    result = run_wipe(kernel, tmp_path, "overwrite")
    assert result.passed and result.hidden_area and result.hidden_area.status == "none"
    assert "the drive has no DCO feature set" in " ".join(result.hidden_areas)


def test_unreadable_hpa_is_unconfirmed_never_passed(tools, monkeypatch, tmp_path):
    """A bridge's "0/1 ... seems invalid" with exit 0 is not "no HPA"."""
    disk = disk_file(tmp_path, NATIVE)
    AtaDrive(str(disk), visible=NATIVE).attach(tools)
    tools.on("hdparm", "-N", str(disk), out=f"\n{disk}:\n max sectors   = 0/1, HPA setting "
             "seems invalid (buggy kernel device driver?)\n")
    kernel = install(monkeypatch, tmp_path, ata_ident(disk, NATIVE))
    result = run_wipe(kernel, tmp_path, "overwrite")
    assert result.result == "unconfirmed" and result.nist_category == "none"
    assert result.hidden_area and result.hidden_area.status == "unknown"
    assert not tools.ran("hdparm", "--yes-i-know-what-i-am-doing")


def test_cli_shows_a_wipe_that_is_not_a_pass_and_exits_2(tools, monkeypatch, tmp_path):
    import typer
    from typer.testing import CliRunner

    from provisioner.agent import inventory
    from provisioner.agent.commands import register

    disk = disk_file(tmp_path, NATIVE)
    AtaDrive(str(disk), visible=NATIVE, dco_max=FACTORY).attach(tools)
    kernel = install(monkeypatch, tmp_path, ata_ident(disk, NATIVE))
    monkeypatch.setattr(wiping, "Safety", lambda **kw: Safety(sysfs=kernel.sysfs))

    def no_dmi() -> None:
        raise DeelitError("no dmidecode in the test")

    monkeypatch.setattr(inventory, "collect", no_dmi)
    app = typer.Typer()
    register(app)
    got = CliRunner().invoke(app, ["agent", "wipe", str(disk), "--method", "overwrite",
                                   "--confirm", wiping.confirmation_token(kernel.ident),
                                   "--point", "DEEL IT Gent", "--technician", "t07",
                                   "--cert-dir", str(tmp_path / "certs")])
    assert got.exit_code == 2, got.output
    shown = " ".join(got.output.split())
    assert "NOT A PASS: hidden area not erased" in shown and "certificate:" in shown


# ---------------------------------------------------------------------- ATA security erase


def test_ata_erase_confirmed_by_hdparm_i_afterwards(tools, monkeypatch, tmp_path):
    disk = disk_file(tmp_path, NATIVE)
    drive = AtaDrive(str(disk), visible=NATIVE)
    drive.attach(tools)
    kernel = install(monkeypatch, tmp_path, ata_ident(disk, NATIVE))
    result = run_wipe(kernel, tmp_path)
    assert result.method == "ata-erase-enhanced"
    assert result.passed and result.nist_category == "Purge"
    assert len(tools.ran("hdparm", "-I", str(disk))) == 2  # before, and the read-back after
    assert result.drive_report == (
        "hdparm -I after the erase: security supported, not enabled, not locked, not frozen")
    assert certificate(result)["sanitization"]["drive_report"] == result.drive_report


def test_ata_erase_that_leaves_security_enabled_is_unconfirmed(tools, monkeypatch, tmp_path):
    disk = disk_file(tmp_path, NATIVE)
    AtaDrive(str(disk), visible=NATIVE, clears_password=False).attach(tools)
    kernel = install(monkeypatch, tmp_path, ata_ident(disk, NATIVE))
    result = run_wipe(kernel, tmp_path)
    assert result.result == "unconfirmed" and not result.passed
    assert result.nist_category == "none"
    cert = certificate(result)
    assert cert["sanitization"]["nist_category"] == "none"
    assert cert["sanitization"]["method_category"] == "Purge"
    assert "security is still enabled" in cert["errors"][0]
    assert "--security-disable deelit" in cert["errors"][0]


def test_ata_drive_that_does_not_answer_after_the_erase_is_unconfirmed(tools, monkeypatch,
                                                                       tmp_path):
    disk = disk_file(tmp_path, NATIVE)
    AtaDrive(str(disk), visible=NATIVE, answers_after_erase=False).attach(tools)
    kernel = install(monkeypatch, tmp_path, ata_ident(disk, NATIVE))
    result = run_wipe(kernel, tmp_path)
    assert result.result == "unconfirmed" and result.nist_category == "none"
    assert "did not answer `hdparm -I`" in result.errors[0]


def test_ata_erase_command_failing_gives_no_certificate(tools, monkeypatch, tmp_path):
    disk = disk_file(tmp_path, NATIVE)
    AtaDrive(str(disk), visible=NATIVE).attach(tools)
    tools.on("hdparm", "--user-master", "u", "--security-erase-enhanced", rc=5,
             err="SECURITY_ERASE: Input/output error\n")
    kernel = install(monkeypatch, tmp_path, ata_ident(disk, NATIVE))
    with pytest.raises(DeelitError) as err:
        run_wipe(kernel, tmp_path)
    assert "exit status 5" in str(err.value) and "--security-disable deelit" in str(err.value)
    assert not (tmp_path / "certs").exists() or not any((tmp_path / "certs").iterdir())


# ---------------------------------------------------------------------- NVMe


def nvme_ident(path: Path, sectors: int = NATIVE) -> DiskIdentity:
    return DiskIdentity(path=str(path), name="nvme0n1", size_bytes=sectors * SECTOR,
                        logical_block_size=SECTOR, rotational=False, kind="nvme",
                        model="WDC PC SN730 SDBQNTY-512G-1001", serial="2115EX442108")


def sanitize_log(status: int, *, cdw10: int = 4, erased: int = 1, sprog: int = 65535) -> str:
    """`nvme sanitize-log /dev/nvme0 --output-format=json`, nvme-cli 2.x."""
    text = {
        0: "NVM Subsystem has never been sanitized.",
        1: "Most Recent Sanitize Command Completed Successfully.",
        2: "Sanitize in Progress.",
        3: "Most Recent Sanitize Command Failed.",
        4: "Most Recent Sanitize Command (No-Deallocate After Sanitize) Completed Successfully.",
    }[status]
    never = 4294967295
    return json.dumps({"nvme0": {
        "sprog": sprog,
        "sstat": {"global_erased": erased, "no_cmplted_passes": 0, "status": f"({status}) {text}"},
        "cdw10_info": cdw10,
        "time_over_write": never, "time_block_erase": never, "time_crypto_erase": never,
        "time_over_write_no_dealloc": never, "time_block_erase_no_dealloc": never,
        "time_crypto_erase_no_dealloc": never,
    }}, indent=2) + "\n"


def zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def nvme_drive(tools: Tools, disk: Path, *, sanicap: int, fna: int = 0) -> None:
    tools.on("nvme", "id-ctrl", "/dev/nvme0", out=json.dumps(
        {"vid": 5559, "mn": "WDC PC SN730 SDBQNTY-512G-1001", "oacs": 0x17, "fna": fna,
         "sanicap": sanicap}))
    tools.on("nvme", "id-ns", str(disk), out=json.dumps({"nsze": NATIVE, "flbas": 0}))


def test_nvme_format_exiting_non_zero_is_an_error_and_never_purge(tools, monkeypatch, tmp_path):
    """The FOG bug, the other half: a refused format must stop the wipe, whatever it printed."""
    disk = disk_file(tmp_path, NATIVE)
    nvme_drive(tools, disk, sanicap=0)
    tools.on("nvme", "format", rc=10, err="NVMe status: INVALID_FORMAT: The LBA Format specified "
             "is not supported(0x410a)\n")
    kernel = install(monkeypatch, tmp_path, nvme_ident(disk))
    with pytest.raises(DeelitError) as err:
        run_wipe(kernel, tmp_path)
    assert "failed with exit status 10" in str(err.value) and "INVALID_FORMAT" in str(err.value)
    assert not (tmp_path / "certs").exists()
    assert pattern_at(disk, 0, NATIVE) == NATIVE


def test_nvme_error_line_with_exit_0_is_an_error_too(tools, monkeypatch, tmp_path):
    disk = disk_file(tmp_path, NATIVE)
    nvme_drive(tools, disk, sanicap=0)
    tools.on("nvme", "format", out="NVMe status: INVALID_FIELD: A reserved coded value or an "
             "unsupported value in a defined field(0x4002)\n")
    kernel = install(monkeypatch, tmp_path, nvme_ident(disk))
    with pytest.raises(DeelitError, match="INVALID_FIELD"):
        run_wipe(kernel, tmp_path)
    assert not (tmp_path / "certs").exists()


@pytest.mark.parametrize("argv", [
    ["nvme", "format", "/dev/nvme0n1", "--lbaf=0", "--force"],  # FOG's: no --ses at all
    ["nvme", "format", "/dev/nvme0n1", "--lbaf=0", "--ses=0", "--force"],
    ["nvme", "format", "/dev/nvme0n1", "-s", "0", "--force"],
    ["nvme", "format", "/dev/nvme0n1", "--ses=7", "--force"],
])
def test_format_without_a_secure_erase_setting_never_runs(tools, argv):
    plan = Plan(method="nvme-format", nist_category="Purge", technique="t", tool="nvme-cli",
                commands=[argv])
    with pytest.raises(DeelitError, match="without --ses=1 or --ses=2"):
        wiping.run_firmware(plan, sleep=lambda s: None)
    assert not tools.ran("nvme", "format")


def test_nvme_format_with_ses_passes_on_the_read_back(tools, monkeypatch, tmp_path):
    disk = disk_file(tmp_path, NATIVE)
    nvme_drive(tools, disk, sanicap=0)
    tools.on("nvme", "format", do=lambda argv: (zero(disk), (0, "Success formatting namespace:1\n",
                                                             ""))[1])
    kernel = install(monkeypatch, tmp_path, nvme_ident(disk))
    result = run_wipe(kernel, tmp_path)
    assert tools.ran("nvme", "format", str(disk), "--lbaf=0", "--ses=1", "--force")
    assert result.passed and result.nist_category == "Purge"
    assert result.drive_report and "secure erase setting 1" in result.drive_report
    assert result.hidden_area and result.hidden_area.status == "not applicable"


def sanitizing_drive(tools: Tools, disk: Path, states: list[str], *, before: str | None = None,
                     sanitize_rc: int = 0) -> None:
    """A drive whose sanitize log reads `before` until `nvme sanitize`, then each of `states`
    in turn (the last one for good)."""
    nvme_drive(tools, disk, sanicap=0b011)
    started: list[bool] = []
    queue = list(states)

    def log(argv: list[str]) -> Reply:
        if not started:
            return 0, before or sanitize_log(0, cdw10=0, erased=0, sprog=0), ""
        return 0, (queue.pop(0) if len(queue) > 1 else queue[0]), ""

    def sanitize(argv: list[str]) -> Reply:
        started.append(True)
        if sanitize_rc == 0:
            zero(disk)
        return sanitize_rc, "", "" if sanitize_rc == 0 else "NVMe status: ..."

    tools.on("nvme", "sanitize-log", "/dev/nvme0", do=log)
    tools.on("nvme", "sanitize", "/dev/nvme0", do=sanitize)


def test_sanitize_completed_successfully_is_a_purge(tools, monkeypatch, tmp_path):
    monkeypatch.setattr(wiping, "SANITIZE_POLL_S", 0)
    disk = disk_file(tmp_path, NATIVE)
    sanitizing_drive(tools, disk, [sanitize_log(2, sprog=1200), sanitize_log(1)])
    kernel = install(monkeypatch, tmp_path, nvme_ident(disk))
    result = run_wipe(kernel, tmp_path)
    assert tools.ran("nvme", "sanitize", "/dev/nvme0", "--sanact=4")
    assert result.passed and result.method == "nvme-sanitize-crypto"
    assert result.nist_category == "Purge"
    assert result.drive_report == ("nvme sanitize-log: (1) Most Recent Sanitize Command Completed "
                                   "Successfully.; SCDW10 0x4; global data erased 1")


def test_sanitize_log_status_3_fails_with_no_certificate(tools, monkeypatch, tmp_path):
    monkeypatch.setattr(wiping, "SANITIZE_POLL_S", 0)
    disk = disk_file(tmp_path, NATIVE)
    sanitizing_drive(tools, disk, [sanitize_log(2, sprog=9000), sanitize_log(3)])
    kernel = install(monkeypatch, tmp_path, nvme_ident(disk))
    with pytest.raises(DeelitError, match=r"sanitize failed \(sanitize log status 3"):
        run_wipe(kernel, tmp_path)
    assert not (tmp_path / "certs").exists()


def test_sanitize_status_4_is_a_success_reported_as_such(tools, monkeypatch, tmp_path):
    """Status 4: done, and the data deallocated although No-Deallocate was asked for (deelit
    never asks): a completed sanitize, its own words kept on the certificate."""
    monkeypatch.setattr(wiping, "SANITIZE_POLL_S", 0)
    disk = disk_file(tmp_path, NATIVE)
    sanitizing_drive(tools, disk, [sanitize_log(4)])
    kernel = install(monkeypatch, tmp_path, nvme_ident(disk))
    result = run_wipe(kernel, tmp_path)
    assert result.passed and result.nist_category == "Purge"
    assert "(4) Most Recent Sanitize Command (No-Deallocate After Sanitize) Completed" in (
        certificate(result)["sanitization"]["drive_report"])


def test_stale_completed_status_of_another_sanitize_is_unconfirmed(tools, monkeypatch, tmp_path):
    """A drive that ignored our crypto erase still shows the block erase of last year."""
    monkeypatch.setattr(wiping, "SANITIZE_POLL_S", 0)
    disk = disk_file(tmp_path, NATIVE)
    old = sanitize_log(1, cdw10=2)
    sanitizing_drive(tools, disk, [old], before=old)
    kernel = install(monkeypatch, tmp_path, nvme_ident(disk))
    result = run_wipe(kernel, tmp_path)
    assert result.result == "unconfirmed" and result.nist_category == "none"
    assert "SANACT 2, not the SANACT 4 deelit sent" in result.errors[0]


def test_sanitize_command_failing_is_an_error(tools, monkeypatch, tmp_path):
    disk = disk_file(tmp_path, NATIVE)
    sanitizing_drive(tools, disk, [sanitize_log(1)], sanitize_rc=1)
    kernel = install(monkeypatch, tmp_path, nvme_ident(disk))
    with pytest.raises(DeelitError, match="failed with exit status 1"):
        run_wipe(kernel, tmp_path)
    assert not (tmp_path / "certs").exists()


def test_sanitize_already_running_and_one_that_never_starts(tools, tmp_path):
    disk = disk_file(tmp_path, NATIVE)
    plan = Plan(method="nvme-sanitize-crypto", nist_category="Purge", technique="t",
                tool="nvme-cli", commands=[["nvme", "sanitize", "/dev/nvme0", "--sanact=4"]],
                poll=["nvme", "sanitize-log", "/dev/nvme0", "--output-format=json"], sanact=4)
    sanitizing_drive(tools, disk, [sanitize_log(0)], before=sanitize_log(2, sprog=100))
    with pytest.raises(DeelitError, match="already running"):
        wiping.run_firmware(plan, sleep=lambda s: None)
    assert not tools.ran("nvme", "sanitize", "/dev/nvme0")

    sanitizing_drive(tools, disk, [sanitize_log(0, cdw10=0, erased=0, sprog=0)])
    naps: list[float] = []
    with pytest.raises(DeelitError, match="the drive did not start it"):
        wiping.run_firmware(plan, sleep=naps.append)
    assert len(naps) == wiping.SANITIZE_NOT_STARTED_POLLS - 1


@pytest.mark.parametrize(("log", "status", "cdw10"), [
    (json.loads(sanitize_log(1)), 1, 4),
    # a release that keyed the status string by its own text
    ({"nvme0": {"sprog": 65535, "sstat": {"global_erased": 1, "no_cmplted_passes": 0,
      "Most Recent Sanitize Command Completed Successfully.":
      "(1) Most Recent Sanitize Command Completed Successfully."}, "cdw10_info": 2}}, 1, 2),
    (json.loads(sanitize_log(2, sprog=30000)), 2, 4),
    (json.loads(sanitize_log(3)), 3, 4),
    ({"sstat": 0x104}, 4, None),  # a number, with global data erased (bit 8)
    ({"sprog": 0}, None, None),
])
def test_sanitize_log_shapes(log, status, cdw10):
    record = sanitize_record(log)
    assert (record.status, record.cdw10) == (status, cdw10)
