"""End to end: a QEMU laptop PXE-boots beside a router, is inventoried, graded, wiped, gets
the `ci` disk image, registers, reboots into it and passes the `ci` testinfra suite over SSH.

Each goes through `deelit demo`'s own path (provisioner.lab.session.run), so a green BIOS run
here is the demo working; every check is in the test body, on what that path returns. The UEFI
laptop runs in `make test` by default; the BIOS one (the pupil station test covers the BIOS
path by default) and the two laptops at once are `heavy_vm`: see the README's "Tests".
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provisioner import profile as profiles
from provisioner.build import verify as verifier
from provisioner.formats import manifest as fm
from provisioner.formats import signed_certificate as sc
from provisioner.lab import session, watch
from provisioner.registry.identity import is_placeholder

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(3600)]
# QEMU's 52:54:00 MACs are locally administered, which the registry rightly never takes for
# a device's identity; a laptop whose serial is a placeholder needs its NIC's burnt-in MAC,
# here one of the addresses RFC 7042 sets aside for documentation (00-00-5E-00-53-xx).
BURNT_IN_MAC = "00:00:5e:00:53:04"
INSTALL_TIMEOUT = 1200  # TCG: power-on to the boot from disk, ~3x what a quiet machine takes
SSH_TIMEOUT = 600


def image_laptops(tmp_path: Path, specs: list[watch.LaptopSpec], ci_out: Path,
                  installer_out: Path, hold_approval: float = 0.0,
                  look: Callable[[session.Session], None] | None = None,
                  ) -> tuple[list[watch.Result], dict[str, int]]:
    """`deelit demo`'s path with these laptops. While the café still runs, the `ci` testinfra
    suite runs on each installed system over SSH; returns the demo's results and each
    laptop's suite exit code (logs land in tmp_path/logs)."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deelit-e2e", "-f", str(key)],
                   check=True)
    ci = profiles.load_profile("ci")
    suites: dict[str, int] = {}

    def after(sess: session.Session, results: list[watch.Result]) -> None:
        if look is not None:
            look(sess)
        for tracker, result in zip(sess.trackers, results, strict=True):
            port = sess.ssh_port(tracker, SSH_TIMEOUT)
            suites[result.spec.serial] = verifier.run_suites(
                ci, f"paramiko://root@127.0.0.1:{port}", [f"--ssh-identity-file={key}"])

    results = session.run(specs, ci_out, installer_out, view=session.PrintView(),
                          logs=tmp_path / "logs", ssh_pubkey=key.with_suffix(".pub").read_text(),
                          timeout=INSTALL_TIMEOUT, after=after, hold_approval=hold_approval)
    return results, suites


def assert_imaged_and_ready(result: watch.Result, build_id: str) -> None:
    """The registry's record of one laptop after the demo's path: every stage, the build."""
    dev = result.device
    assert dev.status == "ready", dev
    types = [e.type for e in dev.events]
    for kind in ("inventoried", "graded", "wiped", "imaged", "verified", "ready"):
        assert kind in types, types
    wiped = next(e for e in dev.events if e.type == "wiped")
    assert re.fullmatch(r"[0-9a-f]{64}", str(wiped.details["certificate_sha256"]))
    # the whole certificate reached the station before the disk was written, countersigned
    signed = sc.SignedCertificate.model_validate(wiped.details["signed_certificate"])
    c = sc.check(signed)
    assert c.certificate_sha256 == wiped.details["certificate_sha256"] and c.asset_tag == dev.asset_tag
    assert "its own machine token" in c.how and wiped.details["result"] == "passed"
    assert json.loads(signed.certificate)["media"]["size_bytes"] > 0
    assert next(e for e in dev.events if e.type == "imaged").build_id == build_id
    assert dev.grade and dev.maker == "DEELIT-TEST"
    if not is_placeholder(result.spec.serial):
        assert dev.identity_source == "serial" and dev.serial == result.spec.serial
    else:  # registered under its fallback identity, not the shared placeholder
        assert dev.identity_source != "serial" and dev.serial_placeholder
    summary = dict(watch.summary(result))
    assert summary["build id"] == build_id and summary["status"] == "ready"
    assert 0 < result.registered_s <= result.ready_s and result.disk_boot_s > 0
    # new to the registry: it waited for a volunteer (the session approves it), unrecorded
    assert result.waited_s is not None and not result.recorded_while_waiting
    assert result.approved_s is not None and result.waited_s <= result.approved_s < result.registered_s
    if result.spec.family_data:  # the previous family's data stayed while it waited
        assert result.disk_untouched_while_waiting is True


def assert_screen_said(logs: Path, laptop: str, spec: watch.LaptopSpec) -> None:
    """What the laptop's own screen (tty8) said, as the agent logs it to the serial console:
    what it is while it waits, then the countdown before its disk is wiped."""
    console = (logs / f"{laptop}-console.log").read_text(errors="replace")
    for line in ("[screen] DEZE LAPTOP WACHT OP GOEDKEURING", f"[screen] Serienr:   {spec.serial}",
                 "[screen] Er wordt niets gewist of bewaard tot een",
                 "[screen] DEZE LAPTOP WORDT GEWIST EN OPNIEUW INGERICHT",
                 "[screen] Druk op een toets om te STOPPEN."):
        assert line in console, line


def build_id_of(out: Path) -> str:
    return fm.read(out / fm.FILENAME).build_id


@pytest.mark.heavy_vm
def test_pxe_bios_laptop_end_to_end(tmp_path: Path, ci_out: Path, installer_out: Path) -> None:
    """A laptop with a family's data on its disk waits 5 minutes for approval: disk unchanged,
    nothing in the registry; approved, it is wiped and imaged."""
    spec = watch.LaptopSpec("DL-E2E-BIOS-7Q2", "52:54:00:de:e1:01", family_data=True)
    [result], suites = image_laptops(tmp_path, [spec], ci_out, installer_out, hold_approval=300)
    assert result.spec == spec
    assert result.approved_s is not None and result.waited_s is not None
    assert result.approved_s - result.waited_s >= 300
    assert_screen_said(tmp_path / "logs", "laptop1", spec)
    assert_imaged_and_ready(result, build_id_of(ci_out))
    assert suites == {spec.serial: 0}, "ci testinfra suite on the installed laptop failed"
    print(f"BIOS power-on to registered {result.registered_s:.0f} s, to ready "
          f"{result.ready_s:.0f} s, to disk boot {result.disk_boot_s:.0f} s")


def test_pxe_uefi_laptop_end_to_end(tmp_path: Path, ci_out: Path, installer_out: Path,
                                   browser: Any) -> None:
    """Its family data untouched and nothing recorded for the 30 s it waits for approval (the
    BIOS test waits 5 minutes); then the cockpit shows its card, done, with its asset tag."""
    spec = watch.LaptopSpec("DL-E2E-UEFI-3K8", "52:54:00:de:e1:02", "uefi", family_data=True)
    seen: dict[str, str] = {}

    def look(sess: session.Session) -> None:
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.goto(sess.page_url)
        card = page.locator(f".card[data-key='{spec.serial}'].stage-done")
        card.wait_for(timeout=30000)
        seen["card"] = card.text_content() or ""
        (tmp_path / "logs").mkdir(exist_ok=True)
        page.screenshot(path=str(tmp_path / "logs" / "cockpit-e2e.png"))
        page.close()

    [result], suites = image_laptops(tmp_path, [spec], ci_out, installer_out, hold_approval=30,
                                     look=look)
    assert spec.serial in seen["card"] and "DEELIT-TEST" in seen["card"]
    assert str(result.device.asset_tag) in seen["card"]
    assert_screen_said(tmp_path / "logs", "laptop1", spec)
    assert_imaged_and_ready(result, build_id_of(ci_out))
    assert suites == {spec.serial: 0}, "ci testinfra suite on the installed laptop failed"
    print(f"UEFI power-on to ready {result.ready_s:.0f} s")


@pytest.mark.heavy_vm
def test_two_laptops_at_once_one_with_placeholder_serial(tmp_path: Path, ci_out: Path,
                                                         installer_out: Path) -> None:
    specs = [watch.LaptopSpec("DL-E2E-TWO-5M1", "52:54:00:de:e1:03"),
             watch.LaptopSpec("To Be Filled By O.E.M.", BURNT_IN_MAC)]
    results, suites = image_laptops(tmp_path, specs, ci_out, installer_out)
    assert [r.spec for r in results] == specs
    for result in results:
        assert_imaged_and_ready(result, build_id_of(ci_out))
    assert results[0].device.asset_tag != results[1].device.asset_tag
    assert suites == {s.serial: 0 for s in specs}, suites
    print(f"two laptops: ready after {results[0].ready_s:.0f} s and {results[1].ready_s:.0f} s")


@pytest.mark.heavy_vm
def test_a_key_at_the_laptop_stops_the_countdown(tmp_path: Path, ci_out: Path,
                                                 installer_out: Path) -> None:
    """Approved by a batch (no click), the laptop counts down before wiping; a key pressed on
    its keyboard stops it: it powers off with its data intact and nothing recorded."""
    import time

    from provisioner.lab.qmp import QMP

    spec = watch.LaptopSpec("DL-E2E-STOP-2W6", "52:54:00:de:e1:05", family_data=True)
    with session.Session(ci_out, installer_out, view=session.PrintView(), logs=tmp_path / "logs",
                         station_args=["--approve-next", "1", "--countdown", "60"],
                         approve=False) as sess:
        [tracker] = sess.power_on([spec])
        laptop = sess.laptops[0]
        deadline = time.monotonic() + INSTALL_TIMEOUT
        while tracker.stage != "countdown":
            rows = [r for r in sess.board() if tracker.matches(r)]
            tracker.stage = str(rows[-1]["stage"]) if rows else tracker.stage
            assert laptop.alive() and time.monotonic() < deadline, tracker.stage
            time.sleep(2)
        time.sleep(5)  # the countdown is on its screen (tty8)
        with QMP(laptop.qmp_socket) as qmp:
            qmp.key("spc")
        assert laptop.proc is not None and sess.station is not None
        laptop.proc.wait(timeout=300)  # it powers off
        stages = [str(r["stage"]) for r in sess.board() if tracker.matches(r)]
        assert "stopped" in stages, stages
        assert laptop.family_data_intact()
        assert sess.station.device(serial=spec.serial) is None
    console = (tmp_path / "logs" / "laptop1-console.log").read_text(errors="replace")
    assert "[screen] GESTOPT: er is niets gewist." in console
