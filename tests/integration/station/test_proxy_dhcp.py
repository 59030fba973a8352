"""dnsmasq as `deelit serve` configures it answers PXE clients beside a router, giving no address."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from provisioner.lab.cafe import LAN_IP, ROUTER_IP, STATION_IP, Lan
from provisioner.netboot import dnsmasq
from provisioner.netboot.config import StationConfig
from provisioner.netboot.server import run_dir

pytestmark = [pytest.mark.root, pytest.mark.slow]
PROBE = Path(__file__).with_name("dhcp_probe.py")


def probe(lan: Lan, arch: int, ipxe: bool = False, ask_4011: bool = False) -> list[dict[str, object]]:
    extra = [STATION_IP, LAN_IP] if ask_4011 else []
    proc = lan.run(lan.lan_ns, [sys.executable, str(PROBE), "br0", str(arch),
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
