"""A real registry (FastAPI under uvicorn) on loopback, in-process, for the agent's reporting tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from provisioner.lab.postgres import free_port
from provisioner.registry.api import create_app
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store


@dataclass
class LiveRegistry:
    base: str
    token: str
    store: Store
    server: uvicorn.Server
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.server.should_exit = False
        self.server.started = False
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "registry did not start"

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread:
            self.thread.join(timeout=10)


def make_registry(data: Path, port: int | None = None) -> LiveRegistry:
    store = Store(Settings(data_dir=data))
    token = store.create_token("test-station")
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(data_dir=data), store=store),
                                           host="127.0.0.1", port=port, log_level="warning"))
    return LiveRegistry(f"http://127.0.0.1:{port}", token, store, server)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LiveRegistry]:
    reg = make_registry(tmp_path / "registry")
    reg.start()
    yield reg
    reg.stop()
    reg.store.close()
