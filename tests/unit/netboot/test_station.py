"""deelit serve without root: templates, action choice, HTTP service (scripts, Range, auth)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from provisioner.build.manifest import artifact_record
from provisioner.errors import DeelitError
from provisioner.formats import bmap as bm
from provisioner.formats import release_signature as rs
from provisioner.lab.postgres import PgCluster
from provisioner.netboot import dnsmasq, images, scripts, server
from provisioner.netboot.approvals import Approvals
from provisioner.netboot.config import StationConfig
from provisioner.netboot.http import create_app
from provisioner.registry.access import TokenScope
from provisioner.registry.lifecycle import EventType
from provisioner.registry.schemas import DeviceIn, EventIn
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller

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


def make_image(folder: Path, manifest: dict[str, Any], build_id: str = "ci-20260101-abc",
               size: int = 8 << 20) -> bm.BlockMap:
    return _make_image(folder, manifest, build_id, size)


def _describe(manifest: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The manifest describing the folder's image and map as the build records them."""
    return manifest | {"artifacts": [asdict(artifact_record(folder / n, k))
                                     for n, k in (("ci.img.zst", "disk-image"), ("ci.bmap", "bmap"))]}


def _make_image(folder: Path, manifest: dict[str, Any], build_id: str, size: int) -> bm.BlockMap:
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
    (folder / "manifest.json").write_text(json.dumps(_describe(manifest, folder) | {"build_id": build_id}))
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
    # over TFTP, which tells GRUB the size its Secure Boot verifier needs (GRUB's HTTP client
    # misses h11's lower-case content-length)
    assert "linux (tftp,192.168.77.2)/installer/vmlinuz" in grub
    assert "initrd (tftp,192.168.77.2)/installer/initrd.img" in grub and "(http," not in grub
    for name in ("vmlinuz", "initrd.img"):
        copied = root / "installer" / name
        assert copied.read_bytes() == (sb.installer_dir / name).read_bytes()
        assert copied.stat().st_mode & 0o004
    assert "deelit.action=auto" in grub and "deelit.token=tok-1" in grub
    assert "BOOTIF" not in grub  # an iPXE variable; GRUB would pass it literally


def test_chain_script_asks_with_serial_and_mac(cfg: StationConfig) -> None:
    text = scripts.chain_script(cfg)
    assert text.startswith("#!ipxe\n")
    # a returning script is not a failure: it leaves for the disk without the failure's wait
    assert text.index("goto leave") < text.index(":failed") < text.index(":leave")
    # leaving under UEFI is an error status, or the firmware opens its menu instead of the disk
    assert text.rstrip().splitlines()[-1] == "iseq ${platform} efi && exit 1 || exit"
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
    approvals = Approvals()

    def decide(machine: scripts.Machine, default: str) -> scripts.Decision:
        return scripts.decide(machine, default, book, store, approvals)  # type: ignore[arg-type]

    new = scripts.Machine.from_query("NEW-1", "52:54:00:00:00:01", None, None)
    # new to the registry: it waits, whatever the default, until a volunteer approves it
    assert decide(new, "wipe-install") == scripts.Decision(
        "wait", "new to the registry: waits for a volunteer's approval")
    assert decide(new, "inventory").action == "wait"
    assert decide(new, "local").action == "local"
    approvals.approve("52:54:00:00:00:01")  # by its MAC, as the board may show it
    assert decide(new, "wipe-install").action == "wipe-install"
    assert decide(new, "inventory").action == "inventory"
    approvals.refuse("NEW-1")
    assert decide(new, "wipe-install") == scripts.Decision("local", "refused at the station")
    _register(store, "READY-1", "52:54:00:00:00:02", EventType.wiped, EventType.imaged,
              EventType.verified, EventType.ready)
    ready = scripts.Machine.from_query("READY-1", None, None, None)
    assert decide(ready, "wipe-install").action == "local"
    _register(store, "BACK-1", "52:54:00:00:00:03", EventType.wiped, EventType.imaged,
              EventType.verified, EventType.ready, EventType.loaned, EventType.returned)
    back = scripts.Machine.from_query("BACK-1", None, None, None)
    d = decide(back, "install")
    assert d.action == "wipe-install" and "returned" in d.reason  # default for returned devices
    loaned_tag = _register(store, "LOAN-1", "52:54:00:00:00:04", EventType.wiped,
                           EventType.imaged, EventType.verified, EventType.ready, EventType.loaned)
    loan = scripts.Machine.from_query("LOAN-1", None, None, None)
    assert decide(loan, "wipe-install") == scripts.Decision(
        "local", f"{loaned_tag} is on loan: record it returned first")
    # placeholder serial: found by MAC
    oem = scripts.Machine.from_query("Default string", "52:54:00:00:00:02", None, None)
    assert decide(oem, "wipe-install").action == "local"
    # the station's own choice wins over the registry
    book.set("READY-1", "install")
    assert decide(ready, "wipe-install") == scripts.Decision(
        "install", "set for this machine at the station")
    book.set("READY-1", None)
    assert decide(ready, "wipe-install").action == "local"
    # beside another PXE server: nothing is acted on that was not approved here, known or not
    beside = scripts.decide(back, "wipe-install", book, store, Approvals(), only_approved=True)
    assert beside.action == "local" and "another PXE server" in beside.reason
    here = Approvals()
    here.approve("BACK-1")
    assert scripts.decide(back, "wipe-install", book, store, here,
                          only_approved=True).action == "wipe-install"
    assert scripts.decide(new, "wipe-install", book, store, here,
                          only_approved=True).action == "local"


def test_prepare_expands_image_once_and_refuses_mismatch(cfg: StationConfig,
                                                        manifest_data: dict[str, Any]) -> None:
    block_map = make_image(cfg.image_dir, manifest_data)
    prepared = images.prepare(cfg.image_dir, cfg.data_dir)
    assert prepared.build_id == "ci-20260101-abc" and prepared.size == 8 << 20
    assert prepared.mapped_bytes == block_map.mapped_blocks * 4096
    assert prepared.raw.read_bytes()[:3] == b"\xeb\x63\x90"
    assert prepared.raw.stat().st_blocks * 512 < 1 << 20  # holes stayed holes
    stamp = prepared.raw.stat().st_mtime_ns
    assert images.prepare(cfg.image_dir, cfg.data_dir).raw.stat().st_mtime_ns == stamp
    other = cfg.image_dir.parent / "other"
    make_image(other, manifest_data, "other-build")
    make_image(other / "bigger", manifest_data, "bigger", size=9 << 20)
    (other / "bigger" / "ci.bmap").replace(other / "ci.bmap")  # the map of another image
    with pytest.raises(DeelitError, match=r"ci.bmap: .*manifest.json"):  # not the build's file
        images.prepare(other, cfg.data_dir)
    manifest = json.loads((other / "manifest.json").read_text())  # a manifest that agrees...
    (other / "manifest.json").write_text(json.dumps(_describe(manifest, other)))
    with pytest.raises(DeelitError, match="do not match"):  # ...with a map of another image
        images.prepare(other, cfg.data_dir)
    assert not (cfg.data_dir / "images" / "other-build").exists()


def test_a_changed_byte_in_the_image_is_refused_before_anything_is_served(
        cfg: StationConfig, manifest_data: dict[str, Any]) -> None:
    make_image(cfg.image_dir, manifest_data)
    image = cfg.image_dir / "ci.img.zst"
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x01
    image.write_bytes(bytes(data))
    with pytest.raises(DeelitError, match=rf"^{image}: its SHA-256 is not the one in manifest.json"):
        images.prepare(cfg.image_dir, cfg.data_dir)
    assert not (cfg.data_dir / "images").exists()
    image.write_bytes(bytes(data[:-1]))  # cut short on the way
    with pytest.raises(DeelitError, match=rf"^{image}: {len(data) - 1} bytes, but manifest.json says"):
        images.prepare(cfg.image_dir, cfg.data_dir)


def test_prepare_names_what_is_missing(cfg: StationConfig, manifest_data: dict[str, Any]) -> None:
    cfg.image_dir.mkdir()
    with pytest.raises(DeelitError, match=r"manifest.json: missing"):
        images.prepare(cfg.image_dir, cfg.data_dir)
    (cfg.image_dir / "manifest.json").write_text(json.dumps(manifest_data | {"build_id": "../x"}))
    with pytest.raises(DeelitError, match=r"manifest.json: .*key build_id: '../x' is not a safe"):
        images.prepare(cfg.image_dir, cfg.data_dir)
    assert not (cfg.data_dir / "x").exists()
    (cfg.image_dir / "manifest.json").write_text(json.dumps(manifest_data))
    with pytest.raises(DeelitError, match=r"no disk image"):
        images.prepare(cfg.image_dir, cfg.data_dir)


def test_http_service(cfg: StationConfig, store: Store, manifest_data: dict[str, Any]) -> None:
    make_image(cfg.image_dir, manifest_data)
    prepared = images.prepare(cfg.image_dir, cfg.data_dir)
    token = store.create_token("pxe-test", scope="agent")
    station = {"Authorization": f"Bearer {store.create_token('pxe-test')}"}
    client = TestClient(create_app(cfg, prepared, token, store))
    assert client.get("/boot.ipxe").text == scripts.chain_script(cfg)
    r = client.get("/boot.ipxe", params={"serial": "QEMU-1", "mac": "52:54:00:12:34:56"})
    # new to the registry: the installer inventories it and waits for approval
    assert "deelit.action=wait" in r.text and f"deelit.token={token}" in r.text
    assert "deelit.countdown=15" in r.text
    assert client.post("/station/approve", json={"key": "QEMU-1"},
                       headers=station).json() == {"approved": ["QEMU-1"]}
    r = client.get("/boot.ipxe", params={"serial": "QEMU-1", "mac": "52:54:00:12:34:56"})
    assert "deelit.action=wipe-install" in r.text
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
    # progress and action need the (agent) token; the board shows what agents report
    body = {"key": "QEMU-1", "stage": "install", "percent": 42.5, "message": "writing"}
    assert client.post("/station/progress", json=body).status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    assert client.post("/station/progress", json=body, headers=auth).status_code == 204
    board = {m["key"]: m for m in client.get("/station/machines", headers=station).json()}
    assert board["QEMU-1"]["stage"] == "install" and board["QEMU-1"]["percent"] == 42.5
    assert board["QEMU-1"]["action"] == "wipe-install"
    assert client.post("/station/progress", json={**body, "stage": "bogus"},
                       headers=auth).status_code == 422
    got = client.get("/station/action", params={"serial": "QEMU-1"}, headers=auth).json()
    assert got["action"] == "wipe-install"
    # the registry API is mounted on the same port
    reg = client.post("/api/v1/devices", json={"serial": "QEMU-1"}, headers=auth)
    assert reg.status_code == 201
    page = client.get("/station")  # the cockpit, which asks for the token first
    assert page.status_code == 401 and 'action="/ui/login"' in page.text


def test_station_serves_the_points_grading_thresholds(cfg: StationConfig, store: Store, tmp_path: Path) -> None:
    token = store.create_token("pxe-test")
    assert TestClient(create_app(cfg, None, token, store)).get("/station/thresholds.yaml").status_code == 404
    rules = tmp_path / "grading.yaml"
    rules.write_text("spec: {}\n")
    client = TestClient(create_app(cfg.model_copy(update={"thresholds": rules}), None, token, store))
    assert client.get("/station/thresholds.yaml").text == "spec: {}\n"


# -- tokens: the station keeps its own, machines get an agent-scoped one ---------------------


def _needs_ipxe() -> None:
    if not dnsmasq.SOURCES["undionly.kpxe"][0].exists():
        pytest.skip("Debian package ipxe not installed")


def test_boot_scripts_and_grub_carry_an_agent_token_never_the_station_token(
        cfg: StationConfig, store: Store) -> None:
    _needs_ipxe()
    run = server.prepare_run(cfg, None, store, "pxe-test")
    station_token, agents = run.token, run.agents
    grub = (cfg.run_dir / "tftp" / "grub" / "grub.cfg").read_text()  # as dnsmasq serves it
    assert (cfg.data_dir / server.TOKEN_FILE).read_text().strip() == station_token
    assert (cfg.data_dir / server.TOKEN_FILE).stat().st_mode & 0o077 == 0
    (in_grub,) = re.findall(r"deelit\.token=(\S+)", grub)
    agent_token = agents.current()
    assert in_grub == agent_token != station_token
    assert store.authenticate(station_token) == Caller("pxe-test", None, TokenScope.station)
    assert store.authenticate(agent_token) == Caller("pxe-test", None, TokenScope.boot)
    info = store.token_info(agent_token)
    assert info is not None and info.expires_at is not None
    assert info.expires_at - info.created_at == server.AGENT_TOKEN_LIFETIME
    assert station_token not in grub
    client = TestClient(run.app)
    for serial, mac in (("QEMU-1", "52:54:00:12:34:56"), ("To Be Filled By O.E.M.",
                                                          "52:54:00:12:34:57")):
        script = client.get("/boot.ipxe", params={"serial": serial, "mac": mac}).text
        assert f"deelit.token={agent_token}" in script and station_token not in script
    assert station_token not in client.get("/boot.ipxe").text
    # restarting serve keeps the station token (the page's bookmark) and makes a new agent one
    assert client.get("/station/machines", headers={"Authorization": f"Bearer {station_token}"}
                      ).status_code == 200  # the page URL serve prints works
    again = server.prepare_run(cfg, None, store, "pxe-test")
    assert again.token == station_token and again.agents.current() != agent_token


def test_agent_token_does_what_the_agent_needs_and_nothing_more(cfg: StationConfig,
                                                                store: Store) -> None:
    station = {"Authorization": f"Bearer {store.create_token('pxe-test')}"}
    agents = server.AgentTokens(store, "pxe-test")
    agent = {"Authorization": f"Bearer {agents.current()}"}
    client = TestClient(create_app(cfg, None, agents.current, store, station="pxe-test"))
    # what provisioner/agent/station.py and report.py do
    assert client.get("/station/action", params={"serial": "QEMU-1"}, headers=agent).json()[
        "action"] == "wait"
    # an agent token (anyone on the LAN has it) cannot approve a machine, nor arm a batch
    for method, path, body in (("POST", "/station/approve", {"key": "QEMU-1"}),
                               ("POST", "/station/approve", {"all_waiting": True}),
                               ("POST", "/station/refuse", {"key": "QEMU-1"}),
                               ("PUT", "/station/batch", {"count": 5}),
                               ("DELETE", "/station/batch", None),
                               ("GET", "/station/approvals", None)):
        r = client.request(method, path, json=body, headers=agent)
        assert r.status_code == 403, (method, path, r.status_code)
    assert client.get("/station/action", params={"serial": "QEMU-1"}, headers=agent).json()[
        "action"] == "wait"
    # the boot token itself writes nothing to the registry
    assert client.post("/api/v1/devices", json={"serial": "QEMU-1"}, headers=agent).status_code == 403
    assert client.post("/station/approve", json={"key": "QEMU-1"}, headers=station).status_code == 200
    answer = client.get("/station/action", params={"serial": "QEMU-1"}, headers=agent).json()
    assert answer["action"] == "wipe-install" and answer["credential"].startswith("dlt_")
    own = {"Authorization": f"Bearer {answer['credential']}"}
    assert store.authenticate(answer["credential"]) == Caller(
        "pxe-test", None, TokenScope.machine, "qemu-1")
    # handed out once: a second ask (an impostor, or the laptop restarted) gets none
    again = client.get("/station/action", params={"serial": "QEMU-1"}, headers=agent).json()
    assert again["action"] == "wipe-install" and again["credential"] is None
    board = {m["key"]: m for m in client.get("/station/machines", headers=station).json()}
    assert board["QEMU-1"]["stage"] == "failed" and "already handed out" in board["QEMU-1"]["message"]
    # a volunteer's new approval hands out a fresh one
    client.post("/station/approve", json={"key": "QEMU-1"}, headers=station)
    assert client.get("/station/action", params={"serial": "QEMU-1"},
                      headers=agent).json()["credential"].startswith("dlt_")
    assert client.post("/station/progress", headers=agent,
                       json={"key": "QEMU-1", "stage": "grade"}).status_code == 204
    reg = client.post("/api/v1/devices", json={"serial": "QEMU-1"}, headers=own)
    assert reg.status_code == 201
    tag = reg.json()["asset_tag"]
    for kind in ("inventoried", "wiped", "imaged", "verified", "ready"):
        assert client.post(f"/api/v1/devices/{tag}/events", json={"type": kind},
                           headers=agent).status_code == 403, kind
        assert client.post(f"/api/v1/devices/{tag}/events", json={"type": kind},
                           headers=own).status_code == 201, kind
    # what the station page and people do
    refused = [client.get("/station/machines", headers=agent),
               client.get(f"/api/v1/devices/{tag}/label.pdf", headers=agent),
               client.get("/api/v1/devices", headers=agent),
               client.get(f"/api/v1/devices/{tag}", headers=agent),
               client.get("/api/v1/builds", headers=agent),
               client.post(f"/api/v1/devices/{tag}/events", json={"type": "loaned"},
                           headers=agent)]
    for r in refused:
        assert r.status_code == 403, (r.request.url, r.status_code)
        assert "station token" in r.json()["detail"]
    station_token = station["Authorization"].removeprefix("Bearer ")
    assert client.get("/station/machines", headers=station).json()[0]["stage"] == "grade"
    # a label link carries no token: the page's session cookie opens it
    assert client.get(f"/api/v1/devices/{tag}/label.pdf").status_code == 401
    assert client.get(f"/api/v1/devices/{tag}/label.pdf", params={"token": station_token}).status_code == 401
    assert client.post("/api/v1/session", json={"token": station_token}).status_code == 204
    label = client.get(f"/api/v1/devices/{tag}/label.pdf")
    assert label.status_code == 200 and label.content.startswith(b"%PDF")
    assert client.get("/api/v1/devices/DEELIT-MEC-999999/label.pdf").status_code == 404
    # the API's schema: the station's routes and the registry's, for the station only
    assert client.get("/openapi.json", headers=agent).status_code == 403
    paths = client.get("/openapi.json").json()["paths"]
    # everything the cockpit shows and does (README, "The cockpit")
    assert {"/station/approve", "/station/refuse", "/station/batch", "/station/retry",
            "/station/today", "/station/machines", "/api/v1/devices", "/api/v1/search",
            "/api/v1/labels.pdf", "/api/v1/devices/{asset_tag}/label.pdf",
            "/api/v1/devices/{asset_tag}/certificate.pdf",
            "/api/v1/devices/{asset_tag}/events"} <= set(paths)
    client.delete("/api/v1/session")
    assert client.get(f"/api/v1/devices/{tag}", headers=station).json()["status"] == "ready"
    # a revoked agent token (deelit registry token revoke) opens nothing any more
    assert store.revoke_token(agents.current())
    assert client.post("/station/progress", headers=agent,
                       json={"key": "QEMU-1", "stage": "done"}).status_code == 401
    assert client.post("/api/v1/devices", json={"serial": "QEMU-2"},
                       headers=agent).status_code == 401


def test_agent_token_is_renewed_before_it_expires(cfg: StationConfig, store: Store) -> None:
    _needs_ipxe()
    now = [dt.datetime(2026, 5, 20, 8, 0, tzinfo=dt.UTC)]
    agents = server.AgentTokens(store, "pxe-test", lifetime=dt.timedelta(hours=24),
                                renew_before=dt.timedelta(hours=8), clock=lambda: now[0])
    dnsmasq.populate_tftp(cfg, scripts.grub_config(cfg, agents.current()))
    agents.on_new = lambda token: server.write_grub_config(cfg, token)
    grub = cfg.run_dir / "tftp" / "grub" / "grub.cfg"
    first = agents.current()
    now[0] += dt.timedelta(hours=15, minutes=59)
    assert agents.current() == first
    now[0] += dt.timedelta(minutes=2)
    second = agents.current()
    assert second != first and agents.current() == second
    assert f"deelit.token={second}" in grub.read_text() and first not in grub.read_text()
    assert grub.stat().st_mode & 0o004  # dnsmasq reads it as nobody
    # machines that booted with the first one can still report until it expires
    assert store.authenticate(first) is not None and store.authenticate(second) is not None
    with pytest.raises(DeelitError, match="shorter than the lifetime"):
        server.AgentTokens(store, "x", lifetime=dt.timedelta(hours=1),
                           renew_before=dt.timedelta(hours=1))


def test_station_token_reuse_and_replacement(cfg: StationConfig, store: Store) -> None:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.data_dir / server.TOKEN_FILE
    # serve made its token with this note when it still handed it to every machine: replaced
    exposed = store.create_token("pxe-test", note="deelit serve (PXE agents)")
    path.write_text(exposed + "\n")
    fresh = server.station_token(store, cfg.data_dir, "pxe-test")
    assert fresh != exposed and store.authenticate(exposed) is None
    assert store.authenticate(fresh) == Caller("pxe-test", None, TokenScope.station)
    assert server.station_token(store, cfg.data_dir, "pxe-test") == fresh  # kept on restart
    # an agent-scoped or expired token in the file is not taken as the station's
    agent = store.create_token("pxe-test", scope="agent")
    path.write_text(agent + "\n")
    assert server.station_token(store, cfg.data_dir, "pxe-test") not in (agent, fresh)
    store.revoke_tokens("pxe-test")
    renewed = server.station_token(store, cfg.data_dir, "pxe-test")
    assert store.authenticate(renewed) == Caller("pxe-test", None, TokenScope.station)


def test_serve_uses_the_points_central_registry_and_point_code(
        cfg: StationConfig, manifest_data: dict[str, Any], pg_cluster: PgCluster) -> None:
    """`serve --db URL --point ANT`: the station registers into that database, with that point's
    tags, so a point's stations know each other's laptops."""
    central = cfg.model_copy(update={"db_url": pg_cluster.create_database(), "point": "ANT"})
    cfg.data_dir.mkdir(parents=True)
    make_image(cfg.image_dir, manifest_data)
    other_station = Store(Settings(data_dir=cfg.data_dir / "elsewhere", db_url=central.db_url))
    try:
        loaned = _register(other_station, "LOANED-1", "52:54:00:00:00:01", EventType.wiped,
                           EventType.imaged, EventType.verified, EventType.ready, EventType.loaned)
        store = Store(central.registry_settings())
        agent = store.create_token("pxe-pc1", scope="agent")
        client = TestClient(create_app(central, images.prepare(cfg.image_dir, cfg.data_dir),
                                       agent, store))
        # the laptop loaned out by the other station boots its own disk here
        script = client.get("/boot.ipxe", params={"serial": "LOANED-1", "mac": "52:54:00:00:00:01"})
        assert f"{loaned} is on loan" in script.text and "installer/vmlinuz" not in script.text
        made = client.post("/api/v1/devices", json={"serial": "NEW-1"},
                           headers={"Authorization": f"Bearer {agent}"})
        assert made.status_code == 201 and made.json()["asset_tag"].startswith("DEELIT-ANT-")
        assert other_station.find_device(serial="NEW-1") is not None
        assert not (cfg.data_dir / "registry.sqlite3").exists()
    finally:
        other_station.close()


def test_serve_refuses_a_bad_point_code_before_starting(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from provisioner.cli import make_app

    result = CliRunner().invoke(make_app("serve"),
                                ["serve", "--point", "mechelen", "--data", str(tmp_path)])
    assert result.exit_code != 0
    assert "default_point" in str(result.exception) and "2-8 capital letters" in str(result.exception)
    assert list(tmp_path.iterdir()) == []


# -- a point that accepts only signed builds (--signers / DEELIT_SIGNERS) --------------------

@pytest.fixture
def started(cfg: StationConfig, manifest_data: dict[str, Any], release_keys: Path,
            monkeypatch: pytest.MonkeyPatch) -> list[StationConfig]:
    """Both build folders signed by the partner; the station's start is recorded, not run."""
    make_image(cfg.image_dir, manifest_data)
    for folder in (cfg.image_dir, cfg.installer_dir):
        names = " ".join(sorted(p.name for p in folder.iterdir()))
        subprocess.run(f"sha256sum {names} > SHA256SUMS", shell=True, cwd=folder, check=True)
        rs.sign(folder, release_keys / "partner")
    runs: list[StationConfig] = []

    def record(station_cfg: StationConfig, **_: object) -> None:
        shutil.rmtree(station_cfg.run_dir, ignore_errors=True)
        runs.append(station_cfg)

    monkeypatch.setattr(server, "serve", record)
    return runs


def _serve(cfg: StationConfig, *extra: str, env: dict[str, str] | None = None) -> Result:
    from provisioner.cli import make_app

    return CliRunner().invoke(make_app("serve"), [
        "serve", "--interface", "lo", "--image", str(cfg.image_dir), "--installer",
        str(cfg.installer_dir), "--data", str(cfg.data_dir), *extra], env=env)


def _refused(result: Result, cfg: StationConfig, started: list[StationConfig]) -> str:
    assert isinstance(result.exception, DeelitError), result.output
    assert result.exception.exit_code == 2
    assert started == [] and not cfg.data_dir.exists()  # nothing started, nothing written
    return str(result.exception)


def test_serve_starts_with_builds_signed_by_the_points_signers(
        cfg: StationConfig, started: list[StationConfig], release_keys: Path) -> None:
    result = _serve(cfg, env={"DEELIT_SIGNERS": str(release_keys / "partner.pub")})
    assert result.exit_code == 0, result.output
    assert [s.image_dir for s in started] == [cfg.image_dir]
    assert result.output.count("signed by partner@ci") == 2  # the image and the installer


def test_serve_refuses_an_unsigned_build_before_starting(
        cfg: StationConfig, started: list[StationConfig], release_keys: Path) -> None:
    (cfg.image_dir / "SHA256SUMS.sig").unlink()
    message = _refused(_serve(cfg, "--signers", str(release_keys / "partner.pub")), cfg, started)
    assert f"{cfg.image_dir / 'SHA256SUMS.sig'}: missing, so this build is not signed" in message


def test_serve_refuses_a_build_signed_by_another_key(
        cfg: StationConfig, started: list[StationConfig], release_keys: Path) -> None:
    rs.sign(cfg.installer_dir, release_keys / "stranger")
    result = _serve(cfg, env={"DEELIT_SIGNERS": str(release_keys / "partner.pub")})
    message = _refused(result, cfg, started)
    assert f"{cfg.installer_dir / 'SHA256SUMS.sig'}: signed by ssh-ed25519 key" in message
    assert "not among the signers" in message


def test_serve_refuses_an_installer_changed_after_signing(
        cfg: StationConfig, started: list[StationConfig], release_keys: Path) -> None:
    (cfg.installer_dir / "initrd.img").write_bytes(b"another initrd")
    message = _refused(_serve(cfg, "--signers", str(release_keys / "partner.pub")), cfg, started)
    assert f"{cfg.installer_dir / 'initrd.img'} was changed or damaged" in message


def test_serve_refuses_a_disk_image_the_signature_does_not_cover(
        cfg: StationConfig, started: list[StationConfig], release_keys: Path) -> None:
    """The station serves the folder's first *.img.zst: one slipped in is refused."""
    shutil.copyfile(cfg.image_dir / "ci.img.zst", cfg.image_dir / "a.img.zst")
    message = _refused(_serve(cfg, "--signers", str(release_keys / "partner.pub")), cfg, started)
    assert f"{cfg.image_dir / 'a.img.zst'}: not listed in" in message


def test_serve_without_signers_serves_unsigned_builds_as_before(
        cfg: StationConfig, started: list[StationConfig]) -> None:
    for folder in (cfg.image_dir, cfg.installer_dir):
        (folder / "SHA256SUMS.sig").unlink()
    result = _serve(cfg)
    assert result.exit_code == 0, result.output
    assert len(started) == 1 and "signed by" not in result.output


def test_station_routes_limit_bodies_queries_and_the_board(cfg: StationConfig, store: Store) -> None:
    """A flood from the LAN neither fills memory nor pushes a working laptop off the board."""
    agent = store.create_token("pxe-test", scope="agent")
    app = create_app(cfg, None, agent, store)
    app.state.board.capacity = 50
    client = TestClient(app)
    auth = {"Authorization": f"Bearer {agent}"}
    body = {"key": "WORKING-1", "stage": "wipe", "percent": 10.0}
    assert client.post("/station/progress", json=body, headers=auth).status_code == 204
    big = client.post("/station/progress", content=b"x" * (300 * 1024), headers=auth)
    assert big.status_code == 413
    assert client.get("/boot.ipxe", params={"serial": "S" * 129}).status_code == 422
    for n in range(200):  # boot-script asks with made-up serials: no token needed
        assert client.get("/boot.ipxe", params={"serial": f"FAKE-{n:04d}"}).status_code == 200
    station = {"Authorization": f"Bearer {store.create_token('pxe-test')}"}
    keys = [m["key"] for m in client.get("/station/machines", headers=station).json()]
    assert len(keys) == 50 and "WORKING-1" in keys and "FAKE-0199" in keys
    assert "FAKE-0000" not in keys
