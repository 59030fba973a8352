"""Snipe-IT sync against a small fake Snipe-IT on loopback.

No Snipe-IT can run here (it is a PHP/MySQL application). The fake below enforces the
documented REST contract we rely on: bearer token, POST /api/v1/hardware needing asset_tag,
status_id and model_id with unique asset tags and serials, validation errors answered with
HTTP 200 and {"status": "error"}, GET /api/v1/hardware/byserial/{serial} answering
{"total", "rows"} and GET /api/v1/hardware/bytag/{tag}.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest

from provisioner.errors import DeelitError
from provisioner.registry.export import sync_snipeit
from provisioner.registry.schemas import DeviceIn
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller

TOKEN = "snipe-test-key"


class FakeSnipe(BaseHTTPRequestHandler):
    assets: list[dict[str, Any]]
    requests_seen: list[str]

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, {"status": "error", "messages": "Unauthorized."})
            return False
        return True

    def do_GET(self) -> None:
        self.requests_seen.append(f"GET {self.path}")
        if not self._authorised():
            return
        if self.path.startswith("/api/v1/hardware/byserial/"):
            serial = unquote(self.path.rsplit("/", 1)[1])
            rows = [a for a in self.assets if a.get("serial") == serial]
            self._send(200, {"total": len(rows), "rows": rows})
        elif self.path.startswith("/api/v1/hardware/bytag/"):
            tag = unquote(self.path.rsplit("/", 1)[1])
            rows = [a for a in self.assets if a["asset_tag"] == tag]
            self._send(200, rows[0] if rows else {"status": "error",
                                                  "messages": "Asset does not exist."})
        else:
            self._send(404, {"status": "error", "messages": "not found"})

    def do_POST(self) -> None:
        self.requests_seen.append(f"POST {self.path}")
        if not self._authorised():
            return
        if self.path != "/api/v1/hardware":
            self._send(404, {"status": "error", "messages": "not found"})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        missing = {k: [f"The {k} field is required."] for k in ("asset_tag", "status_id",
                                                                 "model_id") if not body.get(k)}
        if not missing and any(a["asset_tag"] == body["asset_tag"] for a in self.assets):
            missing = {"asset_tag": ["The asset tag must be unique."]}
        if not missing and body["model_id"] != 7:
            missing = {"model_id": ["The selected model id is invalid."]}
        if missing:
            self._send(200, {"status": "error", "messages": missing, "payload": None})
            return
        asset = {"id": len(self.assets) + 1, **body}
        self.assets.append(asset)
        self._send(200, {"status": "success", "messages": "Asset created successfully.",
                         "payload": asset})


@pytest.fixture
def snipe() -> Iterator[tuple[str, type[FakeSnipe]]]:
    handler = type("Handler", (FakeSnipe,), {"assets": [], "requests_seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_sync_creates_once(sqlite_store: Store, station: Caller,
                           snipe: tuple[str, type[FakeSnipe]]) -> None:
    url, fake = snipe
    sqlite_store.register(DeviceIn(serial="5CG1234ABC", maker="HP", model="840 G3"), station)
    sqlite_store.register(DeviceIn(serial="Default string", uuid="12345678-1234-1234-1234-"
                                   "123456789abc", maker="TECLAST"), station)
    devices = sqlite_store.list_devices()
    report = sync_snipeit(devices, url=url, token=TOKEN, model_id=7, status_id=2)
    assert report.created == ["DEELIT-MEC-000001", "DEELIT-MEC-000002"] and not report.failed
    assert fake.assets[0]["serial"] == "5CG1234ABC" and "serial" not in fake.assets[1]
    again = sync_snipeit(devices, url=url, token=TOKEN, model_id=7, status_id=2)
    assert again.present == report.created and not again.created
    assert len(fake.assets) == 2
    assert "GET /api/v1/hardware/byserial/5CG1234ABC" in fake.requests_seen


def test_sync_reports_refusals_and_bad_tokens(sqlite_store: Store, station: Caller,
                                             snipe: tuple[str, type[FakeSnipe]]) -> None:
    url, _ = snipe
    sqlite_store.register(DeviceIn(serial="5CG1234ABC", maker="HP"), station)
    devices = sqlite_store.list_devices()
    report = sync_snipeit(devices, url=url, token=TOKEN, model_id=99, status_id=2)
    assert report.failed and "model id is invalid" in report.failed[0][1]
    with pytest.raises(DeelitError, match="refused the token"):
        sync_snipeit(devices, url=url, token="wrong", model_id=7, status_id=2)
