"""Throwaway PostgreSQL clusters and registry server processes, for the tests and the bench.

The cluster is started from Debian's binaries (package `postgresql`) in a temporary folder,
listening on 127.0.0.1 on a free port and on a private unix socket, so the suite runs on a
fresh machine without a PostgreSQL service. Missing binaries are an error, not a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from provisioner import procs
from provisioner.errors import DeelitError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        raise DeelitError("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin/initdb): "
                          "install the Debian package 'postgresql' (make setup does)")
    return Path(found[-1]).parent


class PgCluster:
    """initdb + pg_ctl as the `postgres` user when run as root (initdb refuses root)."""

    def __init__(self, *, durable: bool = False) -> None:
        # Tests kill the registry, never PostgreSQL itself, so they may skip fsync; the bench
        # keeps PostgreSQL's defaults to report honest numbers.
        self.durable = durable
        self.bindir = _pg_bindir()
        # Directly under /tmp: pytest's own tmp dirs are root-only and the postgres user
        # could not reach a data folder inside them.
        self.root = Path(tempfile.mkdtemp(prefix="deelit-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise DeelitError("runuser (util-linux) is needed to start PostgreSQL as root")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.socket_dir.mkdir()
        if self._as_user:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self.started = False

    def _run(self, *args: str) -> None:
        proc = subprocess.run([*self._as_user, *args], capture_output=True, text=True,
                              timeout=120, check=False)
        if proc.returncode != 0:
            log = (self.root / "server.log")
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise DeelitError(f"{Path(args[0]).name} failed ({proc.returncode}): "
                              f"{proc.stderr.strip()[-2000:]} {tail}")

    def start(self) -> PgCluster:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                   f"-c unix_socket_directories={self.socket_dir} -c max_connections=200")
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.root / "server.log"), "-o", options, "-w", "-t", "60", "start")
        self.started = True
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """A new empty database, or a copy of `template` (much faster than migrating again)."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            subprocess.run([*self._as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                            "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60,
                           check=False)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)


class RegistryServer:
    """`deelit registry serve` in its own process on 127.0.0.1, for tests that kill it."""

    def __init__(self, data: Path, db: str | None = None, port: int | None = None) -> None:
        self.data, self.db = data, db
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> RegistryServer:
        cmd = [sys.executable, "-m", "provisioner.cli", "registry", "serve", "--data",
               str(self.data), "--host", "127.0.0.1", "--port", str(self.port)]
        if self.db:
            cmd += ["--db", self.db]
        self.data.mkdir(parents=True, exist_ok=True)
        self.log = open(self.data / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DeelitError(f"registry server exited with {self.proc.returncode}; see "
                                  f"{self.log.name}")
            try:
                if httpx.get(f"{self.base}/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise DeelitError(f"registry server did not answer within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut of the process."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        procs.stop(self.proc, timeout=15)
        if getattr(self, "log", None):
            self.log.close()
