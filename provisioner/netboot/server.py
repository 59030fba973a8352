"""`deelit serve`: prepare the image, write the configs, run dnsmasq and the HTTP service.

Everything started here is stopped on the way out (Ctrl-C, SIGTERM or an error), and the
run folder (dnsmasq config, TFTP root) is removed with it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn

from provisioner.errors import DeelitError
from provisioner.netboot import images, scripts
from provisioner.netboot.config import StationConfig
from provisioner.netboot.dnsmasq import Dnsmasq, populate_tftp
from provisioner.netboot.http import create_app
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store

TOKEN_FILE = "station-token"


def station_token(store: Store, data_dir: Path, station: str) -> str:
    """The token the agents of this station use: kept (0600) across restarts, renewed if revoked."""
    path = data_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if store.authenticate(token) is not None:
            return token
    token = store.create_token(station, note="deelit serve (PXE agents)")
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(path.with_suffix(".tmp"), path)
    return token


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


def serve(cfg: StationConfig, *, on_ready: Callable[[str], None] | None = None,
          stop: threading.Event | None = None, station: str | None = None) -> None:
    """Runs until SIGINT/SIGTERM (or `stop` is set)."""
    if os.geteuid() != 0:
        raise DeelitError("deelit serve answers DHCP (port 67) and TFTP (port 69): run it as root")
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        if not (cfg.installer_dir / name).is_file():
            raise DeelitError(f"{cfg.installer_dir / name}: missing; build the installer first "
                              "(deelit build installer)")
    try:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        check_port_free(cfg.server_ip, cfg.http_port)
        image = images.prepare(cfg.image_dir, cfg.data_dir)
        store = Store(Settings(data_dir=cfg.data_dir))
    except BaseException:
        shutil.rmtree(cfg.run_dir, ignore_errors=True)
        raise
    dnsmasq = Dnsmasq(cfg, cfg.data_dir / "dnsmasq.log")
    stop = stop or threading.Event()
    previous: dict[signal.Signals, object] = {}
    try:
        token = station_token(store, cfg.data_dir, station or f"pxe-{socket.gethostname()}"[:64])
        populate_tftp(cfg, scripts.grub_config(cfg, token), scripts.chain_script(cfg))
        app = create_app(cfg, image, token, store)
        server = uvicorn.Server(uvicorn.Config(app, host=cfg.server_ip, port=cfg.http_port,
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
        if on_ready:
            on_ready(token)
        while not stop.is_set():
            if dnsmasq.proc is not None and dnsmasq.proc.poll() is not None:
                raise DeelitError(f"dnsmasq stopped ({dnsmasq.proc.returncode}); "
                                  f"log: {dnsmasq.log}")
            stop.wait(0.5)
        server.should_exit = True
        thread.join(timeout=15)
    finally:
        dnsmasq.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        store.close()
        shutil.rmtree(cfg.run_dir, ignore_errors=True)
