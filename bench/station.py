#!/usr/bin/env python3
"""Benchmark of the imaging station.

1. Artifact throughput: the station's HTTP service (FastAPI/uvicorn, as `deelit serve` runs it)
   against nginx serving the same folder, 8 concurrent curl clients each fetching the
   installer's filesystem.squashfs (what every PXE laptop downloads), over loopback.
   Baseline: nginx (sendfile). Prints MB/s for both and the ratio.
2. With `--laptops`: power-on to registered and to ready for one and for two virtual laptops
   (QEMU TCG, PXE in private namespaces, `ci` disk image), needs root and the builds.

Run: `.venv/bin/python bench/station.py [--laptops] [--rounds N]`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from provisioner.lab.postgres import free_port  # noqa: E402

CLIENTS = 8
NGINX_CONF = """
daemon off; worker_processes 2; pid {dir}/nginx.pid; error_log {dir}/error.log;
events {{ worker_connections 256; }}
http {{ access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  server {{ listen 127.0.0.1:{port}; location /installer/ {{ alias {folder}/; }} }} }}
"""
STATION = """
import sys, uvicorn
from pathlib import Path
from provisioner.netboot.config import StationConfig
from provisioner.netboot.http import create_app
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
data, installer, port = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
cfg = StationConfig(interface="lo", server_ip="127.0.0.1", subnet="127.0.0.0", http_port=port,
                    data_dir=data, run_dir=data, image_dir=data, installer_dir=installer)
store = Store(Settings(data_dir=data))
uvicorn.run(create_app(cfg, None, store.create_token("bench"), store), host="127.0.0.1",
            port=port, log_level="warning", access_log=False)
"""


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["curl", "-sf", "-o", "/dev/null", "-r", "0-0", url]).returncode == 0:
            return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def fetch_all(url: str, clients: int) -> float:
    """Seconds for `clients` parallel full downloads."""
    started = time.monotonic()
    procs = [subprocess.Popen(["curl", "-sf", "-o", "/dev/null", url]) for _ in range(clients)]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"a download of {url} failed")
    return time.monotonic() - started


def throughput(installer: Path, rounds: int) -> None:
    artifact = installer / "filesystem.squashfs"
    size = artifact.stat().st_size
    tmp = Path(tempfile.mkdtemp(prefix="deelit-bench-station-"))
    procs = []
    try:
        nport, sport = free_port(), free_port()
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(dir=tmp, port=nport, folder=installer))
        procs.append(subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)]))
        (tmp / "data").mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", STATION, str(tmp / "data"),
                                       str(installer), str(sport)], cwd=REPO))
        urls = {"nginx": f"http://127.0.0.1:{nport}/installer/filesystem.squashfs",
                "station": f"http://127.0.0.1:{sport}/installer/filesystem.squashfs"}
        for url in urls.values():
            wait_http(url)
        best: dict[str, float] = {}
        for _ in range(rounds):
            for name, url in urls.items():
                subprocess.run(["cat", str(artifact)], stdout=subprocess.DEVNULL, check=True)
                secs = fetch_all(url, CLIENTS)
                best[name] = min(best.get(name, secs), secs)
        rate = {k: CLIENTS * size / v / 1e6 for k, v in best.items()}
        print(f"artifact {artifact.name} {size / 1e6:.0f} MB, {CLIENTS} concurrent clients, "
              f"best of {rounds}:")
        for name in ("nginx", "station"):
            print(f"  {name:<8} {best[name]:6.2f} s  {rate[name]:8.0f} MB/s aggregate")
        print(f"  ratio station/nginx: {rate['station'] / rate['nginx']:.2f}")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)


def laptops(count: int) -> None:
    """`deelit demo`'s path with `count` laptops at once: the times it measures per laptop."""
    from provisioner.lab import session, watch

    ci, installer = REPO / "out" / "ci", REPO / "out" / "installer"
    specs = [watch.LaptopSpec(f"DL-BENCH-{count}-{i:03d}", f"52:54:00:be:0{count}:{i:02x}")
             for i in range(count)]
    results = session.run(specs, ci, installer, view=session.PrintView(), timeout=3600)
    for r in results:
        print(f"  {count} laptop(s) {r.spec.serial}: power-on -> registered {r.registered_s:6.0f} s, "
              f"-> ready {r.ready_s:6.0f} s, -> disk boot {r.disk_boot_s:6.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--installer", type=Path, default=REPO / "out" / "installer")
    parser.add_argument("--laptops", action="store_true", help="also time 1 and 2 PXE laptops")
    args = parser.parse_args()
    throughput(args.installer, args.rounds)
    if args.laptops:
        for n in (1, 2):
            laptops(n)


if __name__ == "__main__":
    main()
