"""The cockpit's routes in-process (TestClient, the real app and database): what the JSON API
adds for it, the login view, the two-volunteers rule, the words in both languages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from provisioner.netboot.advice import GENERAL, advice
from provisioner.registry.api import create_app
from provisioner.registry.cockpit_text import EN, NL
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store

from .test_api import BODY, auth


@pytest.fixture
def app_store(settings: Settings) -> Iterator[tuple[TestClient, Store]]:
    store = Store(settings)
    with TestClient(create_app(settings, store)) as client:
        yield client, store


def test_search_by_tag_serial_or_mac_and_the_pdfs(app_store: tuple[TestClient, Store]) -> None:
    client, store = app_store
    h = auth(store.create_token("mec-pc1"))
    tag = client.post("/api/v1/devices", json=BODY, headers=h).json()["asset_tag"]
    for q in (tag, tag.lower(), "CNF01207X6", "00-26-9E-00-00-01", " 00:26:9e:00:00:01 "):
        assert [d["asset_tag"] for d in client.get("/api/v1/search", params={"q": q},
                                                   headers=h).json()] == [tag], q
    for q in ("CNF0120", "00:26:9e", "DEELIT-MEC"):  # whole fields only
        assert client.get("/api/v1/search", params={"q": q}, headers=h).json() == [], q
    assert client.get("/api/v1/search", params={"q": tag}).status_code == 401
    agent = auth(store.create_token("a", scope="agent"))
    assert client.get("/api/v1/search", params={"q": tag}, headers=agent).status_code == 403
    label = client.get(f"/api/v1/devices/{tag}/label.pdf", headers=h)
    assert label.status_code == 200 and label.content.startswith(b"%PDF")
    # no wipe on record yet: no certificate
    assert client.get(f"/api/v1/devices/{tag}/certificate.pdf", headers=h).status_code == 404
    client.post(f"/api/v1/devices/{tag}/events", headers=h, json={
        "type": "wiped", "details": {"method": "overwrite", "certificate_sha256": "c" * 64}})
    cert = client.get(f"/api/v1/devices/{tag}/certificate.pdf", headers=h)
    assert cert.status_code == 200 and cert.content.startswith(b"%PDF")
    assert client.get("/api/v1/labels.pdf", headers=h).content.startswith(b"%PDF")
    assert client.get("/api/v1/labels.pdf", params={"batch": "2001-01-01"},
                      headers=h).status_code == 404
    assert client.get("/api/v1/devices/NOPE/label.pdf", headers=h).status_code == 404


def test_a_status_change_names_the_status_it_saw(app_store: tuple[TestClient, Store]) -> None:
    """Two volunteers at once: the second one's event carries the status it was shown, which
    is no longer true; it is refused and nothing is recorded."""
    client, store = app_store
    h = auth(store.create_token("mec-pc1"))
    tag = client.post("/api/v1/devices", json=BODY, headers=h).json()["asset_tag"]
    first = client.post(f"/api/v1/devices/{tag}/events", headers=h,
                        json={"type": "retired", "technician": "t1", "if_status": "registered"})
    assert first.status_code == 201
    second = client.post(f"/api/v1/devices/{tag}/events", headers=h,
                         json={"type": "repaired", "technician": "t2", "if_status": "registered"})
    assert second.status_code == 409 and "meanwhile" in second.json()["detail"]
    assert [e["type"] for e in client.get(f"/api/v1/devices/{tag}", headers=h).json()["events"]
            ].count("repaired") == 0


def test_pages_need_the_station_token(app_store: tuple[TestClient, Store]) -> None:
    client, store = app_store
    token = store.create_token("mec-pc1")
    tag = client.post("/api/v1/devices", json=BODY, headers=auth(token)).json()["asset_tag"]
    for path in ("/", f"/ui/devices/{tag}", "/ui/devices?q=CNF01207X6", "/ui/board"):
        r = client.get(path)
        assert r.status_code == 401 and tag not in r.text and "CNF01207X6" not in r.text, path
    # htmx asking for a fragment without a session is sent to the login page
    assert client.get("/ui/board", headers={"HX-Request": "true"}).headers["HX-Redirect"] == "/"
    assert client.get("/ui/events").status_code == 401
    boot = store.create_token("pxe", scope="boot")
    refused = client.post("/ui/login", data={"token": boot}, follow_redirects=False)
    assert refused.status_code == 401 and "set-cookie" not in refused.headers
    ok = client.post("/ui/login", data={"token": token}, follow_redirects=False)
    assert ok.status_code == 303 and "HttpOnly" in ok.headers["set-cookie"]
    assert "SameSite=strict" in ok.headers["set-cookie"]
    page = client.get(f"/ui/devices/{tag}")  # the cookie now
    assert page.status_code == 200 and "CNF01207X6" in page.text
    found = client.get("/ui/devices", params={"q": "00:26:9e:00:00:01"}, follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"] == f"/ui/devices/{tag}"
    missing = client.get("/ui/devices", params={"q": "NOPE"})
    assert missing.status_code == 404 and "Niets gevonden" in missing.text
    # the language switch only ever goes back to a page of this site
    for back, where in (("/ui/devices?q=x", "/ui/devices?q=x"), ("//evil.example/", "/"),
                        ("https://evil.example/", "/"), ("/\\evil.example/", "/")):
        r = client.get("/ui/lang/en", params={"back": back}, follow_redirects=False)
        assert r.headers["location"] == where, back
    assert "Nothing found" in client.get("/ui/devices", params={"q": "NOPE"}).text
    # no station here: approving is refused with the reason, not pretended
    r = client.post("/ui/machines/X/approve", headers={"HX-Request": "true"})
    assert "needs a station" in r.text


def test_status_form_refusals_show_the_reason(app_store: tuple[TestClient, Store]) -> None:
    client, store = app_store
    token = store.create_token("mec-pc1")
    tag = client.post("/api/v1/devices", json=BODY, headers=auth(token)).json()["asset_tag"]
    client.cookies.set("deelit_session", token)
    form = {"status": "loaned", "technician": "tech-1", "shown": "registered"}
    r = client.post(f"/ui/devices/{tag}/status", data=form)  # registered -> loaned: refused
    assert r.status_code == 409 and 'class="error"' in r.text
    assert store.get_device(tag).status == "registered"
    r = client.post(f"/ui/devices/{tag}/status", data={**form, "status": "ready"})
    assert r.status_code == 422 and store.get_device(tag).status == "registered"
    for bad in ({**form, "technician": ""}, {**form, "technician": "a b"}):
        assert client.post(f"/ui/devices/{tag}/status", data=bad).status_code == 422
    ok = client.post(f"/ui/devices/{tag}/status", data={**form, "status": "retired"},
                     follow_redirects=False)
    assert ok.status_code == 303 and store.get_device(tag).status == "retired"
    assert client.post("/ui/devices/NOPE/status", data=form).status_code == 404


def test_both_languages_have_every_phrase() -> None:
    assert NL.keys() == EN.keys()
    assert all(NL.values()) and all(EN.values())


def test_failures_get_a_next_step() -> None:
    assert advice("/dev/sda: ATA security is frozen; the BIOS froze").nl.startswith(
        "ATA-beveiliging bevroren")
    assert "opnieuw goed" in advice("its credential was already handed out: ...").nl
    assert advice("something nobody foresaw") is GENERAL
