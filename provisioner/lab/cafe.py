"""The café's network on this one machine, for `deelit demo`, the end-to-end tests and the bench.

Network namespaces: a bridge (the switch), a plain DHCP server (the café's router) and a
namespace for the station; TAP ports on the bridge for the virtual laptops (lab/laptop.py).
Nothing leaves these namespaces, except through a TCP relay from the host's loopback into the
LAN (Python 3.11 has no os.setns: ctypes), which carries the station page and a laptop's SSH
to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from provisioner import procs
from provisioner.errors import DeelitError

SUBNET = "192.168.77"
ROUTER_IP, STATION_IP, LAN_IP = f"{SUBNET}.1", f"{SUBNET}.2", f"{SUBNET}.3"
STATION_PORT = 8080
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str) -> None:
    try:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise DeelitError("`ip` is not installed: install the Debian package iproute2") from None
    except subprocess.CalledProcessError as exc:
        raise DeelitError(f"`ip {' '.join(args)}` failed: {exc.stderr.strip()}") from None




class Lan:
    def __init__(self, tag: str | None = None, next_server: str | None = None) -> None:
        self.next_server = next_server
        tag = tag or f"{os.getpid() % 100000}"
        self.router_ns, self.station_ns, self.lan_ns = (f"dlt{tag}{x}" for x in "rsl")
        self.dir = Path(tempfile.mkdtemp(prefix="deelit-lan-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.taps: list[str] = []
        self._relays: list[socket.socket] = []
        self._made: list[str] = []

    # -- setup / teardown ------------------------------------------------------------------

    def __enter__(self) -> Lan:
        try:
            self.up(next_server=self.next_server)
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self, router: bool = True, next_server: str | None = None) -> None:
        for ns in (self.lan_ns, self.router_ns, self.station_ns):
            ip("netns", "add", ns)
            self._made.append(ns)  # only what this Lan made is deleted again
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.lan_ns, "link", "add", "br0", "type", "bridge", "stp_state", "0",
           "forward_delay", "0")
        ip("-n", self.lan_ns, "addr", "add", f"{LAN_IP}/24", "dev", "br0")
        ip("-n", self.lan_ns, "link", "set", "br0", "up")
        for ns, dev, addr in ((self.router_ns, "rt0", ROUTER_IP), (self.station_ns, "st0", STATION_IP)):
            ip("-n", self.lan_ns, "link", "add", f"{dev}p", "type", "veth", "peer", "name", dev,
               "netns", ns)
            ip("-n", self.lan_ns, "link", "set", f"{dev}p", "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        if router:
            self.start_router(next_server)

    def start_router(self, next_server: str | None = None) -> None:
        """The café's router: a plain dnsmasq DHCP server handing out .100-.150.

        `next_server` reconfigures it to name a TFTP server (what proxy-DHCP is there to avoid;
        only for the Secure Boot diagnosis)."""
        self.popen(self.router_ns, [
            "dnsmasq", "--keep-in-foreground", "--port=0", "--interface=rt0", "--bind-interfaces",
            f"--dhcp-range={SUBNET}.100,{SUBNET}.150,255.255.255.0,1h",
            f"--dhcp-option=option:router,{ROUTER_IP}", "--dhcp-authoritative",
            f"--dhcp-leasefile={self.dir / 'router.leases'}", f"--pid-file={self.dir / 'router.pid'}",
            "--log-dhcp", "--log-facility=-",
            *([f"--dhcp-boot=shimx64.efi,,{next_server}"] if next_server else []),
        ], log=self.dir / "router.log")

    def popen(self, ns: str, argv: list[str], log: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = (log or self.dir / f"proc{len(self.procs)}.log").open("ab")
        try:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)  # Ctrl-C reaches us, we stop them
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def run(self, ns: str, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def add_tap(self, name: str) -> str:
        ip("-n", self.lan_ns, "tuntap", "add", "dev", name, "mode", "tap")
        ip("-n", self.lan_ns, "link", "set", name, "master", "br0", "up")
        self.taps.append(name)
        return name

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        procs.stop(proc, timeout, group=True)  # `ip netns exec` and what it started
    def down(self) -> None:
        for s in self._relays:
            with contextlib.suppress(OSError):
                s.close()
        for proc in reversed(self.procs):
            self.stop(proc)
        for ns in self._made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self._made.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- what the router saw -----------------------------------------------------------------

    def leases(self) -> dict[str, str]:
        """MAC -> the address of its newest lease. One MAC holds several leases (iPXE, the
        installer and the installed system each send their own client id): the latest wins."""
        path = self.dir / "router.leases"
        newest: dict[str, tuple[int, str]] = {}
        for line in path.read_text().splitlines() if path.exists() else []:
            parts = line.split()
            if len(parts) >= 3 and parts[0].isdigit():
                mac, expiry = parts[1].lower(), int(parts[0])
                if mac not in newest or expiry > newest[mac][0]:
                    newest[mac] = (expiry, parts[2])
        return {mac: ip for mac, (_, ip) in newest.items()}

    # -- host loopback -> LAN ----------------------------------------------------------------

    def relay(self, target_ip: str, target_port: int, host_port: int = 0) -> int:
        """A host port on 127.0.0.1 (`host_port`, 0: any free one) whose connections are
        carried to target inside the LAN. Raises OSError when `host_port` is taken."""
        listener = socket.socket()
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", host_port))
            listener.listen(16)
        except OSError:
            listener.close()
            raise
        self._relays.append(listener)
        threading.Thread(target=self._accept, args=(listener, target_ip, target_port),
                         daemon=True).start()
        return int(listener.getsockname()[1])

    def _lan_socket(self) -> socket.socket:
        """A socket created inside the LAN namespace (per-thread setns, then back)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.lan_ns}", os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the LAN namespace failed")
            try:
                return socket.socket()
            finally:
                if _libc.setns(own, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back failed")
        finally:
            os.close(own)
            os.close(target)

    def _accept(self, listener: socket.socket, host: str, port: int) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._lan_socket()
            except OSError:  # the namespace is gone: the LAN is going down
                client.close()
                continue
            upstream.settimeout(10)
            try:
                upstream.connect((host, port))
            except OSError:
                client.close()
                upstream.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def ssh_banner(port: int) -> bool:
    """Whether an SSH server answers on 127.0.0.1:port (through a relay)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(10)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def last_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of a log, shortened: for one-line error messages."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1][:limit] if lines else "(no output)")
