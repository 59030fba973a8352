"""The HTTP API in-process (FastAPI TestClient over the real app and a real database)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from provisioner.registry.api import create_app
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store

BODY = {"serial": "CNF01207X6", "baseboard_serial": "CNF01207X6",
        "uuid": "30464E43-3231-3730-5836-C80AA93F35FA", "macs": ["00:26:9e:00:00:01"],
        "maker": "Hewlett-Packard", "model": "HP Pavilion dv6 Notebook PC",
        "cpu": "Intel(R) Core(TM) i5 CPU M 430", "ram_bytes": 4 * 2**30,
        "disks": [{"model": "WDC WD5000BEVT", "size_bytes": 500107862016, "kind": "hdd"}],
        "battery": {"health_percent": 71.5, "cycle_count": 300}, "grade": "B"}


@pytest.fixture
def app_store(settings: Settings) -> Iterator[tuple[TestClient, Store]]:
    store = Store(settings)
    with TestClient(create_app(settings, store)) as client:
        yield client, store


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_register_list_show_events(app_store: tuple[TestClient, Store]) -> None:
    client, store = app_store
    h = auth(store.create_token("mec-pc1"))
    r = client.post("/api/v1/devices", json=BODY, headers=h)
    assert r.status_code == 201, r.text
    tag = r.json()["asset_tag"]
    assert tag == "DEELIT-MEC-000001" and r.json()["identity_source"] == "serial"
    assert client.post("/api/v1/devices", json=BODY, headers=h).status_code == 200
    ev = client.post(f"/api/v1/devices/{tag}/events", headers=h,
                     json={"type": "wiped", "technician": "t4",
                           "details": {"certificate_sha256": "ab" * 32, "method": "ata-se"}})
    assert ev.status_code == 201 and ev.json()["station"] == "mec-pc1"
    shown = client.get(f"/api/v1/devices/{tag}", headers=h).json()
    assert [e["type"] for e in shown["events"]] == ["registered", "graded", "wiped"]
    assert shown["disks"][0]["size_bytes"] == 500107862016
    listed = client.get("/api/v1/devices", params={"status": "wiped"}, headers=h).json()
    assert [d["asset_tag"] for d in listed] == [tag]
    assert client.get("/api/v1/devices", params={"status": "ready"}, headers=h).json() == []
    assert client.get("/api/v1/builds", headers=h).json() == []


def test_tokens_are_required_and_revocation_works(app_store: tuple[TestClient, Store]) -> None:
    client, store = app_store
    mine, theirs = store.create_token("mec-pc1"), store.create_token("gent-pc2")
    for method, path in [("GET", "/api/v1/devices"), ("POST", "/api/v1/devices"),
                         ("GET", "/api/v1/builds"), ("GET", "/api/v1/devices/X"),
                         ("POST", "/api/v1/devices/X/events")]:
        r = client.request(method, path, json=BODY)
        assert r.status_code == 401, (method, path, r.status_code)
        assert client.request(method, path, json=BODY,
                              headers=auth("dlt_wrong")).status_code == 401
    assert client.post("/api/v1/devices", json=BODY, headers=auth(theirs)).status_code == 201
    store.revoke_tokens("gent-pc2")
    assert client.post("/api/v1/devices", json=BODY, headers=auth(theirs)).status_code == 401
    assert client.get("/api/v1/devices", headers=auth(theirs)).status_code == 401
    assert client.get("/api/v1/devices", headers=auth(mine)).status_code == 200
    assert client.get("/api/v1/devices", headers={"Authorization": f"Basic {mine}"}
                      ).status_code == 401


def test_bad_bodies(app_store: tuple[TestClient, Store]) -> None:
    client, store = app_store
    h = auth(store.create_token("mec-pc1"))
    big = {**BODY, "cpu": "x" * 200, "disks": [{"model": "m" * 100, "junk": "y" * 300_000}]}
    assert client.post("/api/v1/devices", json=big, headers=h).status_code == 413
    r = client.post("/api/v1/devices", content=b"{not json", headers=h)
    assert r.status_code == 422
    assert client.post("/api/v1/devices", json={**BODY, "family_name": "x"},
                       headers=h).status_code == 422  # unknown keys refused, not stored
    assert client.post("/api/v1/devices", json={"serial": "N/A", "uuid": "--", "macs": []},
                       headers=h).status_code == 422
    tag = client.post("/api/v1/devices", json=BODY, headers=h).json()["asset_tag"]
    assert client.post(f"/api/v1/devices/{tag}/events", json={"type": "flying"},
                       headers=h).status_code == 422
    r = client.post(f"/api/v1/devices/{tag}/events", json={"type": "loaned"}, headers=h)
    assert r.status_code == 409 and "registered" in r.json()["detail"]
    assert client.get("/api/v1/devices/DEELIT-MEC-424242", headers=h).status_code == 404


def test_nul_characters_are_refused_not_crashing(app_store: tuple[TestClient, Store]) -> None:
    client, store = app_store  # PostgreSQL cannot store NUL in text: must be a 422, not a 500
    h = auth(store.create_token("mec-pc1"))
    assert client.post("/api/v1/devices", json={**BODY, "model": "T\x0040"},
                       headers=h).status_code == 422
    assert client.get("/api/v1/devices", params={"serial": "a\x00"}, headers=h).status_code == 422
    assert client.get("/api/v1/devices/A%00B", headers=h).status_code == 422
    tag = client.post("/api/v1/devices", json=BODY, headers=h).json()["asset_tag"]
    r = client.post(f"/api/v1/devices/{tag}/events", headers=h,
                    json={"type": "wiped", "details": {"note": "a\x00b"}})
    assert r.status_code == 201


def test_openapi_and_page(app_store: tuple[TestClient, Store]) -> None:
    client, store = app_store
    assert client.get("/openapi.json").status_code == 401  # the API's docs need a token
    assert client.get("/openapi.json", headers=auth(store.create_token("x", scope="agent"))
                      ).status_code == 403
    spec = client.get("/openapi.json", headers=auth(store.create_token("mec-pc1"))).json()
    assert {"/api/v1/devices", "/api/v1/devices/{asset_tag}",
            "/api/v1/devices/{asset_tag}/events", "/api/v1/builds"} <= set(spec["paths"])
    for gone in ("/docs", "/redoc"):  # Swagger UI would load its scripts from the internet
        assert client.get(gone).status_code == 404
    assert {"/api/v1/search", "/api/v1/labels.pdf", "/api/v1/devices/{asset_tag}/label.pdf",
            "/api/v1/devices/{asset_tag}/certificate.pdf"} <= set(spec["paths"])
    page = client.get("/")  # no token: the login view, and nothing else
    assert page.status_code == 401 and 'action="/ui/login"' in page.text
    assert "/static/cockpit.js" in page.text and "/static/vendor/htmx.min.js" in page.text
    script = client.get("/static/cockpit.js").text
    assert "/api/v1/session" in script and "localStorage" not in script
    assert client.get("/static/vendor/htmx.min.js").status_code == 200


def test_the_page_trades_its_token_for_a_strict_session_cookie(
        app_store: tuple[TestClient, Store]) -> None:
    client, store = app_store
    token = store.create_token("mec-pc1")
    assert client.get("/api/v1/devices").status_code == 401
    for bad, code in (("dlt_unknown", 401), (store.create_token("x", scope="boot"), 403)):
        r = client.post("/api/v1/session", json={"token": bad})
        assert r.status_code == code and "set-cookie" not in r.headers
    r = client.post("/api/v1/session", json={"token": token})
    assert r.status_code == 204
    cookie = r.headers["set-cookie"].lower()
    assert "deelit_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "max-age" not in cookie and "expires" not in cookie  # ends with the browser
    assert client.get("/api/v1/devices").status_code == 200  # the cookie alone suffices
    assert client.delete("/api/v1/session").status_code == 204
    assert client.get("/api/v1/devices").status_code == 401
    store.revoke_token(token)
    client.cookies.set("deelit_session", token)
    assert client.get("/api/v1/devices").status_code == 401  # a revoked token's cookie is dead
