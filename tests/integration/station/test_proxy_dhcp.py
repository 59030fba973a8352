"""dnsmasq as `deelit serve` configures it answers PXE clients beside a router, giving no address."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from provisioner.lab.cafe import LAN_IP, ROUTER_IP, STATION_IP, Lan
from provisioner.lab.laptop import deelit_argv
from provisioner.netboot import dnsmasq
from provisioner.netboot.config import StationConfig
from provisioner.netboot.server import run_dir

pytestmark = [pytest.mark.root, pytest.mark.slow]


def probe(lan: Lan, arch: int, ipxe: bool = False, ask_4011: bool = False) -> list[dict[str, object]]:
    extra = [STATION_IP, LAN_IP] if ask_4011 else []
    proc = lan.run(lan.lan_ns, [sys.executable, "-m", "provisioner.netboot.pxe_probe", "br0", str(arch),
                                "ipxe" if ipxe else "plain", *extra], timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_proxy_dhcp_answers_pxe_without_addresses(tmp_path: Path) -> None:
    with Lan() as lan:
        cfg = StationConfig(interface="st0", server_ip=STATION_IP, subnet="192.168.77.0",
                            data_dir=tmp_path / "data", run_dir=run_dir(),
                            image_dir=tmp_path, installer_dir=tmp_path)
        dnsmasq.populate_tftp(cfg, "", "#!ipxe\n")
        conf = cfg.run_dir / "dnsmasq.conf"
        conf.write_text(dnsmasq.render_config(cfg))
        conf.chmod(0o644)
        lan.popen(lan.station_ns, ["dnsmasq", "--keep-in-foreground", "--log-facility=-",
                                   f"--conf-file={conf}"], log=tmp_path / "station.log")

        bios = probe(lan, 0)
        by_server = {o["server_id"]: o for o in bios}
        assert set(by_server) == {ROUTER_IP, STATION_IP}, bios
        router, station = by_server[ROUTER_IP], by_server[STATION_IP]
        assert str(router["yiaddr"]).startswith("192.168.77.1")  # the router leases an address
        assert station["yiaddr"] == "0.0.0.0"  # proxy-DHCP: no address, ever
        assert station["vendor_class"] == "PXEClient" and station["type"] == 2
        assert station["file"] == "undionly.kpxe" or station["has_pxe_options"]

        uefi = [o for o in probe(lan, 7, ask_4011=True) if o["server_id"] == STATION_IP]
        assert uefi[0]["yiaddr"] == "0.0.0.0" and uefi[0]["siaddr"] == STATION_IP
        assert uefi[-1].get("port4011") and uefi[-1]["file"] == "snponly.efi", uefi

        chained = [o for o in probe(lan, 7, ipxe=True, ask_4011=True) if o["server_id"] == STATION_IP]
        assert chained[0]["yiaddr"] == "0.0.0.0"
        assert chained[-1].get("port4011") and chained[-1]["file"] == "boot.ipxe", chained
        log = (tmp_path / "station.log").read_text()
        assert "proxy" in log.lower()
        assert "DHCPACK" not in log and "DHCPOFFER(st0) 192" not in log
        assert "inaccessible" not in log  # dnsmasq (as nobody) can read the TFTP root
        shutil.rmtree(cfg.run_dir)


def test_serve_refuses_to_start_beside_another_pxe_server(tmp_path: Path) -> None:
    """A second station on the LAN (here a proxy-DHCP dnsmasq on the bridge) is found before
    `deelit serve` answers anyone, and serve stops, naming it, having written nothing."""
    installer = tmp_path / "installer"
    installer.mkdir()
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        (installer / name).write_bytes(b"x")
    data = tmp_path / "data"
    argv = [*deelit_argv(), "serve", "--interface", "st0", "--installer", str(installer),
            "--image", str(tmp_path / "image"), "--data", str(data), "--http-port", "18080"]
    with Lan() as lan:
        # alone beside the router: the probe sees only the router's plain DHCP offer
        alone = lan.run(lan.station_ns, [sys.executable, "-c",
                                         "from provisioner.netboot.pxe_probe import other_pxe_servers;"
                                         f"print(other_pxe_servers('st0', '{STATION_IP}'))"])
        assert alone.returncode == 0 and alone.stdout.strip() == "[]", alone.stderr

        other = StationConfig(interface="br0", server_ip=LAN_IP, subnet="192.168.77.0",
                              data_dir=tmp_path / "other", run_dir=run_dir(),
                              image_dir=tmp_path, installer_dir=tmp_path)
        try:
            dnsmasq.populate_tftp(other, "", "#!ipxe\n")
            conf = other.run_dir / "dnsmasq.conf"
            conf.write_text(dnsmasq.render_config(other))
            conf.chmod(0o644)
            lan.popen(lan.lan_ns, ["dnsmasq", "--keep-in-foreground", "--log-facility=-",
                                   f"--conf-file={conf}"], log=tmp_path / "other.log")
            refused = lan.run(lan.station_ns, argv, timeout=60)
            wrote = data.exists()
            # told to: it does not look, and goes on (here to the missing image)
            told = lan.run(lan.station_ns, [*argv, "--beside-another-pxe-server"], timeout=60)
        finally:
            shutil.rmtree(other.run_dir, ignore_errors=True)
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert f"another PXE server answers on st0: {LAN_IP} (boot file" in refused.stderr, refused.stderr
    assert not wrote
    assert told.returncode != 0 and "another PXE server answers" not in told.stderr, told.stderr
    assert "acts only on machines approved here" in told.stderr
    assert "manifest.json: missing" in told.stderr, told.stderr
