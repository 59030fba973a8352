"""`deelit serve`: prepare the image, write the configs, run dnsmasq and the HTTP service.

Everything started here is stopped on the way out (Ctrl-C, SIGTERM or an error), and the
run folder (dnsmasq config, TFTP root) is removed with it.

Tokens: the station's own (DATA/station-token, full rights; the station page uses it and it
never leaves this machine), and a boot token made for this run. Only the latter goes into what
machines are handed (iPXE scripts, the TFTP grub.cfg, so the installer's kernel command line),
because anyone on the café's network can fetch those: it may only ask for a machine's action
and report progress, and expires. A machine that may be written gets its own credential with
its action (credentials.py): that one registers it and posts its intake events. Stopping serve
revokes neither: a station restarted while a laptop is still imaging must not strand that
laptop's report (the agent keeps retrying, and a revoked token would never be accepted again);
`deelit registry token revoke` ends them at once when that is wanted.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from provisioner.errors import DeelitError
from provisioner.netboot import images, pxe_probe, scripts
from provisioner.netboot.approvals import Approvals
from provisioner.netboot.config import StationConfig
from provisioner.netboot.dnsmasq import Dnsmasq, populate_tftp
from provisioner.netboot.http import create_app
from provisioner.netboot.station_client import TOKEN_FILE, URL_FILE
from provisioner.registry.access import TokenScope
from provisioner.registry.store import Store
from provisioner.registry.tokens import utcnow

# Before agent tokens, serve made its station token with this note and put it in every boot
# script: such a token has been readable on the network, so it is replaced, not reused.
_EXPOSED_NOTE = "deelit serve (PXE agents)"
AGENT_TOKEN_LIFETIME = dt.timedelta(hours=24)
# A machine reports with the token it booted with, up to hours later (a slow wipe): a station
# left running hands out a fresh one this long before the current one expires.
AGENT_TOKEN_RENEW_BEFORE = dt.timedelta(hours=8)


def station_token(store: Store, data_dir: Path, station: str) -> str:
    """The station's own token (the page uses it): kept (0600) across restarts, renewed if
    revoked or expired. It is never handed to machines; AgentTokens are."""
    path = data_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        info = store.token_info(token)
        if info is not None and info.live() and info.scope is TokenScope.station:
            if info.note != _EXPOSED_NOTE:
                return token
            store.revoke_token(token)
    token = store.create_token(station, note="deelit serve (station page)")
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(path.with_suffix(".tmp"), path)
    return token


class AgentTokens:
    """The boot tokens one `deelit serve` run hands to machines (scope `boot`).

    `current()` makes the first one, and a new one once the current one is within
    `renew_before` of its expiry (so a station left running keeps booting machines, while
    machines still working report with the token they booted with); `on_new` is told each new
    one (serve rewrites grub.cfg with it).
    """

    def __init__(self, store: Store, station: str, *,
                 lifetime: dt.timedelta = AGENT_TOKEN_LIFETIME,
                 renew_before: dt.timedelta = AGENT_TOKEN_RENEW_BEFORE,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        if not dt.timedelta(0) <= renew_before < lifetime:
            raise DeelitError("agent tokens: renew_before must be shorter than the lifetime")
        self.store, self.station = store, station
        self.lifetime, self.renew_before, self.clock = lifetime, renew_before, clock
        self.on_new: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        self._issued: list[str] = []
        self._renew_at: dt.datetime | None = None

    def current(self) -> str:
        with self._lock:
            now = self.clock()
            if self._issued and self._renew_at is not None and now < self._renew_at:
                return self._issued[-1]
            token = self.store.create_token(
                self.station, scope=TokenScope.boot, expires_in=self.lifetime,
                note=f"deelit serve run of {now:%Y-%m-%d %H:%M} UTC (handed to PXE machines)")
            self._issued.append(token)
            self._renew_at = now + self.lifetime - self.renew_before
            if self.on_new is not None:
                self.on_new(token)
            return token


def write_grub_config(cfg: StationConfig, token: str) -> None:
    """(Re)writes the TFTP grub.cfg of the Secure Boot path with `token`, atomically."""
    path = cfg.run_dir / "tftp" / "grub" / "grub.cfg"
    tmp = path.with_name(".grub.cfg.tmp")
    tmp.write_text(scripts.grub_config(cfg, token))
    tmp.chmod(0o644)  # dnsmasq reads it as nobody
    os.replace(tmp, path)


@dataclass
class Run:
    token: str  # the station's own (the page URL carries it); never handed to machines
    agents: AgentTokens  # what the boot scripts and grub.cfg carry
    app: FastAPI


def prepare_run(cfg: StationConfig, image: images.PreparedImage | None, store: Store,
                station: str, approvals: Approvals | None = None) -> Run:
    """The tokens of a serve run, the TFTP root filled in, and the HTTP app: all but the
    processes (dnsmasq, uvicorn)."""
    token = station_token(store, cfg.data_dir, station)
    agents = AgentTokens(store, station)
    populate_tftp(cfg, scripts.grub_config(cfg, agents.current()), scripts.chain_script(cfg))
    agents.on_new = lambda new: write_grub_config(cfg, new)
    return Run(token, agents, create_app(cfg, image, agents.current, store, approvals, station))


def run_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="deelit-station-"))
    path.chmod(0o755)  # dnsmasq reads its TFTP root as nobody
    return path


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise DeelitError(f"{host}:{port} is taken ({exc.strerror}): choose --http-port") from exc


def refuse_beside_another_pxe_server(interface: str, own_ip: str) -> None:
    """Two PXE servers on one LAN race for every laptop: refuse to be the second."""
    try:
        others = pxe_probe.other_pxe_servers(interface, own_ip)
    except OSError as exc:
        raise DeelitError(
            f"could not ask {interface} for other PXE servers ({exc}): port 68 is held by a DHCP "
            "client that does not share it; give the station a fixed address on that interface"
        ) from exc
    if others:
        named = ", ".join(sorted({f"{o.server_id or o.siaddr} (boot file {o.file or '-'})"
                                  for o in others}))
        raise DeelitError(
            f"another PXE server answers on {interface}: {named}. Two on one LAN race for each "
            "laptop, and whichever answers first decides what happens to its disk: stop the "
            "other one (another deelit serve, or network boot in the router's settings), or image "
            "on a network of your own"
        )


def serve(cfg: StationConfig, *, on_ready: Callable[[str], None] | None = None,
          stop: threading.Event | None = None, station: str | None = None,
          batch: tuple[dt.timedelta | None, int | None] = (None, None)) -> None:
    """Runs until SIGINT/SIGTERM (or `stop` is set). `batch`: approval armed from the start
    (for how long, for how many machines), as `deelit station batch` arms it later."""
    if os.geteuid() != 0:
        raise DeelitError("deelit serve answers DHCP (port 67) and TFTP (port 69): run it as root")
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        if not (cfg.installer_dir / name).is_file():
            raise DeelitError(f"{cfg.installer_dir / name}: missing; build the installer first "
                              "(deelit build installer)")
    try:
        if not cfg.only_approved:
            refuse_beside_another_pxe_server(cfg.interface, cfg.server_ip)
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        check_port_free(cfg.server_ip, cfg.http_port)
        image = images.prepare(cfg.image_dir, cfg.data_dir)
        store = Store(cfg.registry_settings())
    except BaseException:
        shutil.rmtree(cfg.run_dir, ignore_errors=True)
        raise
    dnsmasq = Dnsmasq(cfg, cfg.data_dir / "dnsmasq.log")
    stop = stop or threading.Event()
    previous: dict[signal.Signals, object] = {}
    agents: AgentTokens | None = None
    try:
        approvals = Approvals()
        if batch != (None, None):
            approvals.arm(span=batch[0], count=batch[1])
        run = prepare_run(cfg, image, store, station or f"pxe-{socket.gethostname()}"[:64],
                          approvals)
        agents = run.agents
        server = uvicorn.Server(uvicorn.Config(run.app, host=cfg.server_ip, port=cfg.http_port,
                                               log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, name="station-http", daemon=True)
        thread.start()
        dnsmasq.start()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        while not server.started and thread.is_alive():
            stop.wait(0.1)
        if not thread.is_alive():
            raise DeelitError(f"the HTTP service did not start on {cfg.http_base}")
        (cfg.data_dir / URL_FILE).write_text(cfg.http_base + "\n")  # for `deelit station`
        if on_ready:
            on_ready(run.token)
        while not stop.is_set():
            agents.current()  # renews the agent token (and grub.cfg) when due
            if dnsmasq.proc is not None and dnsmasq.proc.poll() is not None:
                raise DeelitError(f"dnsmasq stopped ({dnsmasq.proc.returncode}); "
                                  f"log: {dnsmasq.log}")
            stop.wait(0.5)
        server.should_exit = True
        thread.join(timeout=15)
    finally:
        (cfg.data_dir / URL_FILE).unlink(missing_ok=True)
        dnsmasq.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        store.close()  # agent tokens live on until they expire (module docstring)
        shutil.rmtree(cfg.run_dir, ignore_errors=True)
