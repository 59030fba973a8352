"""`deelit demo` without root or VMs: argument checks, refusals, and the progress view fed with
station board rows and records from a real registry (what the station's SQLite holds)."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from provisioner.errors import DeelitError
from provisioner.lab import session, watch
from provisioner.registry import identity
from provisioner.registry.identity import is_placeholder
from provisioner.registry.lifecycle import EventType
from provisioner.registry.schemas import DeviceIn, EventIn
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller

CALLER = Caller("demo-test")
SERIAL, MAC = "DEMO-K7P2QX", "52:54:00:3a:9c:11"
CERT = "5f" * 32
BUILD = "ci-20260101-abc123"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(Settings(data_dir=tmp_path / "data"))
    yield s
    s.close()


def row(stage: str, message: str = "", percent: float | None = None, *, key: str = SERIAL,
        action: str | None = "wipe-install", updated: str = "2026-01-01T10:00:00") -> dict[str, object]:
    """A row as GET /station/machines returns it (board.MachineState)."""
    return {"key": key, "stage": stage, "action": action, "percent": percent, "message": message,
            "serial": key if key == SERIAL else None, "mac": MAC, "asset_tag": None,
            "first_seen": "2026-01-01T10:00:00", "updated": updated}


def add(store: Store, tag: str, kind: EventType, **kw: object) -> None:
    build_id = kw.pop("build_id", None)
    store.add_event(tag, EventIn(type=kind, details=kw, build_id=build_id), CALLER)  # type: ignore[arg-type]


# -- arguments and refusals ------------------------------------------------------------------


def test_firmware_choices() -> None:
    assert session.check_firmware("bios") == "bios" and session.check_firmware("uefi") == "uefi"
    for bad in ("uefi-secureboot", "BIOS", ""):
        with pytest.raises(DeelitError, match=r"--firmware: .* not one of bios, uefi"):
            session.check_firmware(bad)


@pytest.mark.parametrize("ok", ["DEMO-ABC123", "PF2XK9Q1", "To Be Filled By O.E.M.", "SN:12/34+5"])
def test_serials_accepted(ok: str) -> None:
    assert session.check_serial(ok) == ok


@pytest.mark.parametrize("bad", ["", "A", "x,y", "-abc", "abc ", "a\nb", "é-1234", "A" * 65])
def test_serials_refused(bad: str) -> None:
    with pytest.raises(DeelitError, match=r"--serial: .* not a usable serial"):
        session.check_serial(bad)


def test_timeout_and_page_port_checks() -> None:
    assert session.check_timeout(1.5) == 90
    for bad in (0, -3, float("nan")):
        with pytest.raises(DeelitError, match="--timeout"):
            session.check_timeout(bad)
    assert session.check_page_port(0) == 0 and session.check_page_port(8080) == 8080
    with pytest.raises(DeelitError, match="--page-port"):
        session.check_page_port(70000)


def test_made_up_serials_and_macs() -> None:
    rng = random.Random(7)
    serials = {session.random_serial(rng) for _ in range(50)}
    assert len(serials) == 50
    for s in serials:
        assert re.fullmatch(r"DEMO-[A-HJ-NP-Z2-9]{6}", s) and not is_placeholder(s)
        assert session.check_serial(s) == s
    mac = session.random_mac(rng)
    assert re.fullmatch(r"00:00:5e:00:53:[0-9a-f]{2}", mac)
    assert identity.normalise_mac(mac) == mac  # universally administered: an identity


def _host(present: set[str]) -> dict[str, object]:
    return {"which": lambda cmd: f"/usr/bin/{cmd}" if cmd in present else None,
            "exists": lambda p: str(p) in present}


ALL_TOOLS = {"qemu-system-x86_64", "dnsmasq", "ip", "/dev/net/tun"}


def test_refuses_without_root() -> None:
    with pytest.raises(DeelitError, match="needs root"):
        session.check_host("bios", euid=1000, **_host(ALL_TOOLS))  # type: ignore[arg-type]


def test_refuses_missing_tools_naming_their_packages() -> None:
    with pytest.raises(DeelitError) as exc:
        session.check_host("bios", euid=0, **_host({"ip", "/dev/net/tun"}))  # type: ignore[arg-type]
    text = str(exc.value)
    assert "qemu-system-x86_64 (Debian package qemu-system-x86)" in text
    assert "dnsmasq (Debian package dnsmasq-base)" in text and "make setup" in text
    assert "iproute2" not in text
    with pytest.raises(DeelitError, match="/dev/net/tun"):
        session.check_host("bios", euid=0, **_host(ALL_TOOLS - {"/dev/net/tun"}))  # type: ignore[arg-type]


def test_uefi_needs_ovmf() -> None:
    with pytest.raises(DeelitError, match=r"OVMF_CODE_4M\.fd.*ovmf"):
        session.check_host("uefi", euid=0, **_host(ALL_TOOLS))  # type: ignore[arg-type]
    ovmf = {str(session.OVMF_DIR / n) for n in session.OVMF["uefi"]}
    session.check_host("uefi", euid=0, **_host(ALL_TOOLS | ovmf))  # type: ignore[arg-type]
    session.check_host("bios", euid=0, **_host(ALL_TOOLS))  # type: ignore[arg-type]


def test_session_refuses_missing_builds_before_touching_the_network(tmp_path: Path) -> None:
    (tmp_path / "installer").mkdir()
    sess = session.Session(tmp_path / "ci", tmp_path / "installer")
    with pytest.raises(DeelitError, match="vmlinuz: missing; build the installer"), sess:
        pass
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        (tmp_path / "installer" / name).write_bytes(b"x")
    with pytest.raises(DeelitError, match="no disk image"), session.Session(tmp_path / "ci", tmp_path / "installer"):
        pass
    assert sess.lan is None


def test_cli_error_is_one_line_and_non_zero() -> None:
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli", "demo", "--firmware", "uefi-secureboot"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --firmware: "), proc.stderr


@pytest.mark.parametrize(("args", "needle"), [(["--serial", "a,b"], "--serial"),
                                              (["--timeout", "0"], "--timeout"),
                                              (["--page-port", "-1"], "--page-port")])
def test_cli_checks_arguments_before_anything_else(args: list[str], needle: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from provisioner.cli import make_app

    def must_not_run(*a: object, **k: object) -> None:
        raise AssertionError("host checks or builds ran before the arguments were checked")

    monkeypatch.setattr(session, "check_host", must_not_run)
    result = CliRunner().invoke(make_app("demo"), ["demo", *args])
    assert isinstance(result.exception, DeelitError) and needle in str(result.exception)


# -- the progress view -----------------------------------------------------------------------


def test_clock() -> None:
    assert [watch.clock(s) for s in (0, 59.6, 185, 3723)] == ["0:00", "1:00", "3:05", "1:02:03"]


def test_tracker_follows_board_and_registry_to_the_disk_boot(store: Store) -> None:
    t = watch.Tracker("laptop1", watch.LaptopSpec(SERIAL, MAC))
    assert t.observe(5, [], None, False) == [] and t.stage == "power-on"
    lines = t.observe(40, [row("pxe", "no record: default action")], None, False)
    assert len(lines) == 1 and "pxe" in lines[0] and "action wipe-install" in lines[0]
    assert lines[0].lstrip().startswith("0:40  DEMO-K7P2QX")
    assert t.observe(42, [row("pxe", "no record: default action")], None, False) == []  # no change

    assert "inventory" in t.observe(200, [row("inventory", "DEELIT-TEST VirtualLaptop, 1 disk(s)")],
                                    None, False)[0]
    dev = store.register(DeviceIn(serial=SERIAL, macs=[MAC], maker="DEELIT-TEST", grade="A"), CALLER)
    add(store, dev.asset_tag, EventType.inventoried)
    add(store, dev.asset_tag, EventType.graded, grade="A")
    lines = t.observe(230, [row("grade", f"registered as {dev.asset_tag}: grade A")],
                      store.get_device(dev.asset_tag), False)
    assert t.registered_s == 230 and t.ready_s is None
    registry = [ln for ln in lines if "registry" in ln]
    assert registry and f"registered as {dev.asset_tag} (grade A, by serial): graded, inventoried" in registry[0]

    # percent: shown in the view, a line per quarter (for logs without a live view)
    lines = t.observe(240, [row("wipe", "erasing /dev/nvme0n1", 10.0)], store.get_device(dev.asset_tag), False)
    assert len(lines) == 1 and t.percent == 10.0
    assert t.observe(245, [row("wipe", "erasing /dev/nvme0n1", 20.0)], None, False) == []
    lines = t.observe(250, [row("wipe", "erasing /dev/nvme0n1", 60.0)], None, False)
    assert len(lines) == 1 and "60%" in lines[0]
    t.observe(300, [row("install", f"{BUILD} -> /dev/nvme0n1", 30.0)], None, False)
    assert t.stage == "install" and t.percent == 30.0
    t.observe(400, [row("verify", f"{BUILD} -> /dev/nvme0n1", 80.0)], None, False)
    assert t.stage == "verify"

    add(store, dev.asset_tag, EventType.wiped, certificate_sha256=CERT, method="nvme-format",
        nist_category="Purge")
    for kind in (EventType.imaged, EventType.verified, EventType.ready):
        add(store, dev.asset_tag, kind, build_id=BUILD)
    lines = t.observe(460, [row("done", f"{dev.asset_tag}: ready", 100.0)],
                      store.get_device(dev.asset_tag), False)
    assert t.ready_s == 460 and not t.done
    assert any(f"wiped, imaged, verified, ready; {dev.asset_tag} is ready" in ln for ln in lines), lines
    # the reboot: iPXE asks again and is sent to its disk; percent is no longer the stage's
    t.observe(500, [row("pxe", "registry: ready", 100.0, action="local")], store.get_device(dev.asset_tag),
              False)
    assert t.stage == "pxe" and t.percent is None and not t.done
    lines = t.observe(530, [row("pxe", "registry: ready", 100.0, action="local")],
                      store.get_device(dev.asset_tag), True)
    assert t.done and t.disk_boot_s == 530 and "rebooted into its disk" in lines[-1]


def test_tracker_notes_a_failure() -> None:
    t = watch.Tracker("laptop1", watch.LaptopSpec(SERIAL, MAC))
    t.observe(300, [row("failed", "graded reject: not imaged (disk smaller than 60 GB)")], None, False)
    assert t.failed == "graded reject: not imaged (disk smaller than 60 GB)" and not t.done


def test_placeholder_serial_is_followed_by_mac_only() -> None:
    placeholder = watch.Tracker("laptop2", watch.LaptopSpec("To Be Filled By O.E.M.", MAC))
    other = row("install", "someone else's", 50.0, key="52:54:00:00:00:99")
    other["mac"] = "52:54:00:00:00:99"
    other["serial"] = "To Be Filled By O.E.M."
    assert placeholder.observe(10, [other], None, False) == [] and placeholder.stage == "power-on"
    mine = row("grade", "checking disk health", key=MAC)
    assert placeholder.observe(20, [other, mine], None, False) and placeholder.stage == "grade"
    real = watch.Tracker("laptop1", watch.LaptopSpec(SERIAL, "52:54:00:00:00:01"))
    assert real.matches(row("inventory")) and not real.matches(other)


def test_newest_row_wins_when_two_match() -> None:
    t = watch.Tracker("laptop1", watch.LaptopSpec(SERIAL, MAC))
    old = row("pxe", "first boot", updated="2026-01-01T10:00:00")
    new = row("install", "writing", 40.0, key=MAC, updated="2026-01-01T10:05:00")
    t.observe(300, [new, old], None, False)
    assert t.stage == "install" and t.percent == 40.0


def _text(trackers: list[watch.Tracker]) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(watch.render(trackers))
    return console.export_text()


def test_render_shows_stage_percent_and_milestones() -> None:
    a = watch.Tracker("laptop1", watch.LaptopSpec(SERIAL, MAC))
    a.observe(372, [row("install", f"{BUILD} -> /dev/nvme0n1", 45.0)], None, False)
    a.registered_s = 230
    b = watch.Tracker("laptop2", watch.LaptopSpec("DEMO-UEFI22", "52:54:00:00:00:02", "uefi"))
    text = _text([a, b])
    first = next(ln for ln in text.splitlines() if SERIAL in ln)
    assert "bios" in first and "6:12" in first and "install" in first and " 45%" in first
    assert "█" * 9 + "░" * 11 in first and "registered 3:50" in first and f"{BUILD} -> /dev/nvme0n1" in first
    second = next(ln for ln in text.splitlines() if "DEMO-UEFI22" in ln)
    assert "uefi" in second and "power-on" in second and "%" not in second
    a.ready_s, a.disk_boot_s = 460, 530
    assert "imaged" in next(ln for ln in _text([a]).splitlines() if SERIAL in ln)


def test_summary_from_the_registry_record(store: Store) -> None:
    dev = store.register(DeviceIn(serial=SERIAL, macs=[MAC], grade="B"), CALLER)
    add(store, dev.asset_tag, EventType.inventoried)
    add(store, dev.asset_tag, EventType.wiped, certificate_sha256=CERT, method="nvme-format",
        nist_category="Purge")
    for kind in (EventType.imaged, EventType.verified, EventType.ready):
        add(store, dev.asset_tag, kind, build_id=BUILD)
    result = watch.Result("laptop1", watch.LaptopSpec(SERIAL, MAC), 185, 467, 530,
                         store.get_device(dev.asset_tag))
    rows = dict(watch.summary(result))
    assert rows["power-on → registered"] == "3:05" and rows["power-on → ready"] == "7:47"
    assert rows["power-on → disk boot"] == "8:50"
    assert rows["serial"] == SERIAL and rows["asset tag"] == dev.asset_tag
    assert rows["status"] == "ready" and rows["grade"] == "B" and rows["build id"] == BUILD
    assert rows["wipe certificate sha256"] == f"{CERT} (nvme-format, Purge)"
    assert "power-on → first-boot dialog" not in rows  # ci: no first-boot questions

    shot = Path("/x/laptop1-firstboot.png")
    pupil = watch.Result("laptop1", watch.LaptopSpec(SERIAL, MAC), 185, 467, 530,
                         store.get_device(dev.asset_tag), 612, shot)
    rows = dict(watch.summary(pupil))
    assert rows["power-on → first-boot dialog"] == "10:12" and rows["screenshot"] == str(shot)
    # what `deelit demo` prints at the end
    from rich.console import Console

    from provisioner.lab.commands import _print_results

    console = Console(record=True, width=200)
    _print_results(console, [pupil])
    text = console.export_text()
    assert f"imaged {SERIAL} (bios):" in text and "10:12" in text and str(shot) in text


def test_console_watch_finds_a_mark_split_across_reads(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    cw = watch.ConsoleWatch(log, watch.DISK_BOOT_MARK)
    assert not cw.check()  # no file yet
    log.write_bytes(b"iPXE 1.21\r\n" * 1000 + b"Booting from Hard Disk...\r\ndeelit: loading Li")
    assert not cw.check()
    with log.open("ab") as f:
        f.write(b"nux from UUID 1234\r\n")
    assert cw.check() and cw.check()


CONSOLE = (b"iPXE initialising devices...ok\r\n"
           b"http://192.168.77.2:8080/boot.ipxe... ok\r\ndeelit: DEMO-K7P2QX: wipe-install\r\n"
           b"[    0.000000] Linux version 6.12.118+deb13-amd64 (debian-kernel@lists.debian.org)\r\n")
WGET = (b"Begin: Trying wget http://192.168.77.2:8080/installer/filesystem.squashfs -O "
        b"/run/live/medium/live/filesystem.squashfs ... Connecting to 192.168.77.2:8080\r\n"
        b"filesystem.squashfs    3% |*                               | 11.0M  0:00:49 ETA\r"
        b"filesystem.squashfs   25% |********                        | 70.8M  0:00:23 ETA\r")


def test_boot_phase_from_the_console() -> None:
    assert watch.boot_phase(b"iPXE initialising devices...ok\r\n") is None
    assert watch.boot_phase(CONSOLE) == ("boot", "the installer's kernel is starting", None)
    assert watch.boot_phase(CONSOLE + WGET) == ("download", "fetching the installer's filesystem.squashfs", 25.0)
    started = CONSOLE + WGET + b"\r\nWelcome to Debian GNU/Linux 13 (trixie)!\r\n"
    assert watch.boot_phase(started) == ("start", "the installer's system is starting", None)


def test_console_watch_keeps_the_last_boot_phase(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(CONSOLE + WGET)
    cw = watch.ConsoleWatch(log, watch.DISK_BOOT_MARK)
    assert not cw.check() and cw.phase is not None and cw.phase[2] == 25.0
    with log.open("ab") as f:  # the marks scroll out of the recent window: the phase stays
        f.write(b"[  123.4] some driver says something\r\n" * 3000)
    assert not cw.check() and cw.phase is not None and cw.phase[0] == "download"


def test_the_installer_boot_shows_while_the_board_says_pxe() -> None:
    t = watch.Tracker("laptop1", watch.LaptopSpec(SERIAL, MAC))
    t.observe(20, [row("pxe", "new to the registry")], None, False)
    lines = t.observe(80, [row("pxe", "new to the registry")], None, False, watch.boot_phase(CONSOLE + WGET))
    assert t.stage == "download" and t.percent == 25.0 and "filesystem.squashfs" in lines[0]
    # the agent reports: the board wins again
    t.observe(300, [row("inventory", "DEELIT-TEST VirtualLaptop")], None, False, watch.boot_phase(CONSOLE))
    assert t.stage == "inventory" and t.percent is None
    # the second PXE boot is sent to the local disk: the console's old phase does not count
    t.observe(500, [row("pxe", "registry: ready", action="local")], None, False, watch.boot_phase(CONSOLE))
    assert t.stage == "pxe" and t.message == "registry: ready"


def test_registry_lines_name_each_kind_of_event_once(store: Store) -> None:
    t = watch.Tracker("laptop1", watch.LaptopSpec(SERIAL, MAC))
    dev = store.register(DeviceIn(serial=SERIAL, macs=[MAC], grade="C"), CALLER)  # records "graded"
    first = t.observe(363, [], store.get_device(dev.asset_tag), False)
    assert len(first) == 1 and first[0].endswith("(grade C, by serial): graded")
    add(store, dev.asset_tag, EventType.inventoried)
    add(store, dev.asset_tag, EventType.graded, grade="C")
    again = t.observe(365, [], store.get_device(dev.asset_tag), False)
    assert len(again) == 1 and again[0].endswith("registry   inventoried"), again
    assert t.observe(367, [], store.get_device(dev.asset_tag), False) == []


# -- the first-boot dialog (the pupil image) --------------------------------------------------


def test_a_tracker_that_wants_the_dialog_is_done_only_once_it_is_on_the_screen(tmp_path: Path) -> None:
    t = watch.Tracker("laptop1", watch.LaptopSpec(SERIAL, MAC), want_dialog=True)
    t.ready_s, t.disk_boot_s = 460.0, 530.0
    assert t.booted and not t.done
    shot = tmp_path / "laptop1-firstboot.png"
    lines = t.dialog_shown(610.0, shot)
    assert t.done and t.dialog_s == 610.0 and t.screenshot == shot
    assert len(lines) == 1 and "first-boot dialog" in lines[0] and str(shot) in lines[0]
    assert t.dialog_shown(700.0, shot) == [] and t.dialog_s == 610.0  # the first sighting counts
    result = watch.Result("laptop1", t.spec, 230.0, 460.0, 530.0, None, 610.0, shot)  # type: ignore[arg-type]
    assert result.dialog_s == 610.0


def test_seeded_first_boot_answers_mean_no_dialog_to_wait_for() -> None:
    seeded = watch.LaptopSpec(SERIAL, MAC, credentials=(("deelit.firstboot.child-name", "Noor"),))
    assert seeded.seeds_first_boot
    assert not watch.LaptopSpec(SERIAL, MAC, credentials=(("ssh.authorized_keys.root", "k"),)).seeds_first_boot


def _screen(tmp_path: Path, name: str, background: tuple[int, int, int],
            box: tuple[int, int, int] | None) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (720, 400), background)
    if box is not None:
        ImageDraw.Draw(image).rectangle((80, 100, 640, 300), fill=box)
    path = tmp_path / name
    image.save(path)
    return path


def test_whiptail_dialog_is_told_from_other_screens(tmp_path: Path) -> None:
    vga_blue, vga_grey = (0, 0, 170), (170, 170, 170)
    assert watch.shows_whiptail_dialog(_screen(tmp_path, "dialog.png", vga_blue, vga_grey))
    assert not watch.shows_whiptail_dialog(_screen(tmp_path, "console.png", (0, 0, 0), vga_grey))
    assert not watch.shows_whiptail_dialog(_screen(tmp_path, "blue.png", vga_blue, None))
    assert not watch.shows_whiptail_dialog(_screen(tmp_path, "desktop.png", (40, 90, 160), (230, 230, 230)))


def test_the_running_rate_alone_adds_no_line() -> None:
    spec = watch.LaptopSpec("PF0RATE1", "52:54:00:00:00:77")
    t = watch.Tracker("laptop1", spec)
    rows = [{"key": "PF0RATE1", "serial": "PF0RATE1", "stage": "install", "percent": 10.0,
             "message": "ci-1 -> /dev/sda, 40 MB/s", "updated": "1"}]
    assert len(t.observe(1.0, rows, None, False)) == 1
    rows[0].update(percent=12.0, message="ci-1 -> /dev/sda, 44 MB/s", updated="2")
    assert t.observe(2.0, rows, None, False) == []
    rows[0].update(stage="verify", percent=60.0, updated="3")
    assert len(t.observe(3.0, rows, None, False)) == 1
