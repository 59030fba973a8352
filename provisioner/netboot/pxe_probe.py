"""Is another PXE server on this LAN? One DHCPDISCOVER as a PXE client sends it, before ours runs.

Two stations (or a router that network-boots machines itself) on one LAN both answer a laptop's
PXE request, and whichever answers first decides what happens to its disk. `deelit serve` asks
once at start: any offer carrying PXE boot information is another PXE server. A plain DHCP offer
(the café's router leasing addresses) is not; we never request the address it offers.

Run as a module (`python -m provisioner.netboot.pxe_probe IFACE [ARCH] [ipxe]`), it prints every
offer as JSON: the tests use it as a PXE client inside their namespaces.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass

MAGIC = b"\x63\x82\x53\x63"
BIOS, UEFI_X64 = 0, 7  # client architectures (RFC 4578)


@dataclass(frozen=True)
class Offer:
    server_id: str | None
    yiaddr: str
    siaddr: str
    file: str
    vendor_class: str
    has_pxe_options: bool
    type: int

    @property
    def is_pxe(self) -> bool:
        """Boot information for a PXE client: a proxy-DHCP or PXE-enabled DHCP server."""
        return self.vendor_class.startswith("PXEClient") or self.has_pxe_options or bool(self.file)


def discover(mac: bytes, xid: int, arch: int, ipxe: bool, ciaddr: str | None = None) -> bytes:
    """DHCPDISCOVER (broadcast), or with ciaddr the DHCPREQUEST a PXE client sends to port 4011."""
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0 if ciaddr else 0x8000,
                       socket.inet_aton(ciaddr or "0.0.0.0"), b"\0" * 4, b"\0" * 4, b"\0" * 4,
                       mac + b"\0" * 10, b"\0" * 64, b"\0" * 128)
    vendor = f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode()
    opts = [(53, b"\x03" if ciaddr else b"\x01"), (60, vendor), (93, struct.pack("!H", arch)),
            (94, b"\x01\x02\x01"), (97, b"\x00" + os.urandom(16)),
            (55, bytes([1, 3, 6, 43, 60, 66, 67, 97]))]
    if ipxe:
        opts += [(175, b"\x13\x01\x01"), (77, b"iPXE")]  # feature list (HTTP) + user class
    body = b"".join(bytes([code, len(val)]) + val for code, val in opts) + b"\xff"
    return head + MAGIC + body


def parse(packet: bytes) -> Offer:
    opts: dict[int, bytes] = {}
    i = 240
    while i + 1 < len(packet) and packet[i] != 255:
        if packet[i] == 0:
            i += 1
            continue
        code, length = packet[i], packet[i + 1]
        opts[code] = packet[i + 2:i + 2 + length]
        i += 2 + length
    file = packet[108:236].split(b"\0", 1)[0].decode(errors="replace")
    server = opts.get(54, b"")
    return Offer(
        server_id=socket.inet_ntoa(server) if len(server) == 4 else None,
        yiaddr=socket.inet_ntoa(packet[16:20]), siaddr=socket.inet_ntoa(packet[20:24]),
        file=file or opts.get(67, b"").decode(errors="replace"),
        vendor_class=opts.get(60, b"").decode(errors="replace"),
        has_pxe_options=43 in opts, type=opts.get(53, b"\0")[0],
    )


def client_socket(interface: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    s.bind(("0.0.0.0", 68))
    return s


def offers(s: socket.socket, mac: bytes, xid: int, arch: int = BIOS, ipxe: bool = False,
           tries: int = 3, wait: float = 2.0) -> list[Offer]:
    """Every offer to one DHCPDISCOVER, resent like firmware does until something answers."""
    found: list[Offer] = []

    def take(timeout: float) -> bool:
        if not select.select([s], [], [], timeout)[0]:
            return False
        packet = s.recv(4096)
        if len(packet) > 240 and packet[4:8] == struct.pack("!I", xid) and packet[0] == 2:
            found.append(parse(packet))
        return True

    for _ in range(tries):
        s.sendto(discover(mac, xid, arch, ipxe), ("255.255.255.255", 67))
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0 and take(left):
            pass
        if found:
            deadline = time.monotonic() + 1.5  # the slower of two servers answers too
            while (left := deadline - time.monotonic()) > 0 and take(left):
                pass
            break
    return found


def other_pxe_servers(interface: str, own_ip: str) -> list[Offer]:
    """PXE offers on `interface` (call before our own server answers): each is another server,
    unless it sends the laptop to `own_ip` (a router set to name this station as next server)."""
    mac = bytes([0x02]) + os.urandom(5)  # locally administered: no real NIC has it
    with client_socket(interface) as s:
        found = offers(s, mac, int.from_bytes(os.urandom(4), "big"))
    return [o for o in found if o.is_pxe and o.siaddr != own_ip]


def main() -> None:
    iface = sys.argv[1]
    arch = int(sys.argv[2]) if len(sys.argv) > 2 else BIOS
    ipxe = len(sys.argv) > 3 and sys.argv[3] == "ipxe"
    mac = bytes.fromhex("525400" + os.urandom(3).hex())
    xid = int.from_bytes(os.urandom(4), "big")
    with client_socket(iface) as s:
        found = [asdict(o) for o in offers(s, mac, xid, arch, ipxe)]
        # usage with the second step: ... IFACE ARCH plain|ipxe STATION OWN_IP: a UEFI PXE
        # client asks the proxy server for its boot file on port 4011
        if len(sys.argv) > 5:
            s.sendto(discover(mac, xid, arch, ipxe, sys.argv[5]), (sys.argv[4], 4011))
            if select.select([s], [], [], 3)[0]:
                found.append({**asdict(parse(s.recv(4096))), "port4011": True})
    print(json.dumps(found))


if __name__ == "__main__":
    main()
