"""A PXE client's first DHCP step, as a script run inside a test namespace.

Broadcasts one DHCPDISCOVER the way firmware PXE (or iPXE, with option 175) sends it and
prints every offer received within the wait as JSON: server, offered address, boot file,
vendor class. Usage: python dhcp_probe.py IFACE ARCH [ipxe] (ARCH 0 = BIOS, 7 = x64 UEFI).
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time

MAGIC = b"\x63\x82\x53\x63"


def discover(mac: bytes, xid: int, arch: int, ipxe: bool, ciaddr: str | None = None) -> bytes:
    """DHCPDISCOVER (broadcast), or with ciaddr the DHCPREQUEST a PXE client sends to port 4011."""
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0 if ciaddr else 0x8000,
                       socket.inet_aton(ciaddr or "0.0.0.0"), b"\0" * 4, b"\0" * 4, b"\0" * 4,
                       mac + b"\0" * 10, b"\0" * 64, b"\0" * 128)
    vendor = f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode()
    opts = [(53, b"\x03" if ciaddr else b"\x01"), (60, vendor), (93, struct.pack("!H", arch)), (94, b"\x01\x02\x01"),
            (97, b"\x00" + os.urandom(16)), (55, bytes([1, 3, 6, 43, 60, 66, 67, 97]))]
    if ipxe:
        opts += [(175, b"\x13\x01\x01"), (77, b"iPXE")]  # feature list (HTTP) + user class
    body = b"".join(bytes([code, len(val)]) + val for code, val in opts) + b"\xff"
    return head + MAGIC + body


def parse(packet: bytes) -> dict[str, object]:
    yiaddr = socket.inet_ntoa(packet[16:20])
    siaddr = socket.inet_ntoa(packet[20:24])
    file = packet[108:236].split(b"\0", 1)[0].decode(errors="replace")
    opts: dict[int, bytes] = {}
    i = 240
    while i < len(packet) and packet[i] != 255:
        if packet[i] == 0:
            i += 1
            continue
        code, length = packet[i], packet[i + 1]
        opts[code] = packet[i + 2:i + 2 + length]
        i += 2 + length
    return {
        "yiaddr": yiaddr, "siaddr": siaddr, "file": file or opts.get(67, b"").decode(),
        "server_id": socket.inet_ntoa(opts[54]) if 54 in opts else None,
        "vendor_class": opts.get(60, b"").decode(errors="replace"),
        "has_pxe_options": 43 in opts, "type": opts.get(53, b"\0")[0],
    }


def main() -> None:
    iface, arch = sys.argv[1], int(sys.argv[2])
    ipxe = len(sys.argv) > 3 and sys.argv[3] == "ipxe"
    # usage with the second step: python dhcp_probe.py IFACE ARCH plain|ipxe STATION OWN_IP
    mac = bytes.fromhex("525400" + os.urandom(3).hex())
    xid = int.from_bytes(os.urandom(4), "big")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    s.bind(("0.0.0.0", 68))
    offers = []
    for _ in range(3):  # like firmware: resend until offers come
        s.sendto(discover(mac, xid, arch, ipxe), ("255.255.255.255", 67))
        deadline = time.monotonic() + 2
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([s], [], [], left)
            if not ready:
                break
            packet = s.recv(4096)
            if len(packet) > 240 and packet[4:8] == struct.pack("!I", xid):
                offers.append(parse(packet))
        if offers:
            time.sleep(1)  # let the slower of the two servers answer too
            while select.select([s], [], [], 0.5)[0]:
                packet = s.recv(4096)
                if len(packet) > 240 and packet[4:8] == struct.pack("!I", xid):
                    offers.append(parse(packet))
            break
    # A UEFI PXE client asks the proxy server for its boot file on port 4011.
    if len(sys.argv) > 4:
        station = sys.argv[4]
        ciaddr = sys.argv[5]
        s.sendto(discover(mac, xid, arch, ipxe, ciaddr), (station, 4011))
        if select.select([s], [], [], 3)[0]:
            packet = s.recv(4096)
            offers.append({**parse(packet), "port4011": True})
    print(json.dumps(offers))


if __name__ == "__main__":
    main()
