"""Wipe certificates kept whole and countersigned by the station, on SQLite and PostgreSQL:
from the laptop over its machine token, from a stick's queue at import; their PDF checked
offline by `deelit certificate verify`; a wipe that did not pass leaves the device unclean."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from provisioner.cli import make_app
from provisioner.errors import DeelitError
from provisioner.formats import signed_certificate as sc
from provisioner.registry.api import create_app
from provisioner.registry.queue import import_queue
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store

cli = make_app()
BODY = {"serial": "PF0ABCDE", "uuid": "4c4c4544-0030-4a10-8048-c4c04f503732",
        "macs": ["54:ee:75:00:00:01"], "maker": "LENOVO", "model": "20B6005BUS", "grade": "B"}


def certificate(result: str = "passed") -> str:
    """The shape of agent/certificate.py's file (the registry keeps it as text, unparsed but
    for `result`)."""
    return json.dumps({"schema": "deelit-wipe-certificate/1", "certificate_id": "c-1",
                       "organisation": "MEC", "technician_id": "deelit-agent", "result": result,
                       "media": {"serial": "S4DXNX0M", "size_bytes": 256060514304,
                                 "type": "nvme"},
                       "sanitization": {"nist_category": "Purge", "method": "nvme-format"}},
                      indent=2) + "\n"


def _refused(args: list[str], code: int) -> str:
    """The DeelitError a command ends with (main() turns it into this exit code)."""
    exc = CliRunner().invoke(cli, args).exception
    assert isinstance(exc, DeelitError) and exc.exit_code == code, exc
    return str(exc)


@pytest.fixture
def client_store(settings: Settings) -> Iterator[tuple[TestClient, Store]]:
    store = Store(settings)
    with TestClient(create_app(settings, store)) as client:
        yield client, store
    store.close()


def _laptop(client: TestClient, store: Store) -> tuple[str, dict[str, str]]:
    token = store.create_token("pxe-1", scope="machine", machine=BODY["serial"].lower(),
                               expires_in=dt.timedelta(hours=1))
    headers = {"Authorization": f"Bearer {token}"}
    r = client.post("/api/v1/devices", json=BODY, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["asset_tag"], headers


def test_the_laptops_certificate_is_kept_whole_and_countersigned(
        client_store: tuple[TestClient, Store], tmp_path: Path) -> None:
    client, store = client_store
    tag, mine = _laptop(client, store)
    text = certificate()
    r = client.post(f"/api/v1/devices/{tag}/events", headers=mine, json={
        "type": "wiped", "uid": "run-1-wiped", "details": {
            "certificate": text, "certificate_sha256": hashlib.sha256(text.encode()).hexdigest()}})
    assert r.status_code == 201, r.text
    # sent again at the end of the run (same uid): kept once, not signed twice
    again = client.post(f"/api/v1/devices/{tag}/events", headers=mine,
                        json={"type": "wiped", "uid": "run-1-wiped",
                              "details": {"certificate": text}})
    assert again.status_code == 200 and again.json() == r.json()
    [wiped] = [e for e in store.get_device(tag).events if e.type == "wiped"]
    signed = sc.SignedCertificate.model_validate(wiped.details["signed_certificate"])
    c = sc.check(signed)
    assert signed.certificate == text and "certificate" not in wiped.details
    assert "its own machine token (pf0abcde)" in c.how and c.asset_tag == tag
    assert wiped.details["result"] == "passed" and not store.get_device(tag).needs_wipe
    key = sc.load_or_make_key(store.settings.data_dir)
    assert c.key_id == sc.key_id(sc.public_line(key.public_key()))

    # the PDF carries it; verify checks it offline, against the station's exported key
    pdf, pub = tmp_path / "cert.pdf", tmp_path / "station.pub"
    station = {"Authorization": f"Bearer {store.create_token('pxe-1')}"}
    pdf.write_bytes(client.get(f"/api/v1/devices/{tag}/certificate.pdf", headers=station).content)
    data = ["--data", str(store.settings.data_dir)]
    assert CliRunner().invoke(cli, ["certificate", "station-key", *data, "-o", str(pub)]
                              ).exit_code == 0
    ok = CliRunner().invoke(cli, ["certificate", "verify", str(pdf), "--trust", str(pub)])
    assert ok.exit_code == 0 and "intact" in ok.output and tag in ok.output, ok.output

    # one changed byte in the certificate: refused, exit 1
    changed = signed.dump()
    changed["certificate"] = text.replace("Purge", "Purgf")
    bad = tmp_path / "changed.json"
    bad.write_text(json.dumps(changed))
    assert "changed" in _refused(["certificate", "verify", str(bad)], 1)
    # another station's key: refused with --trust
    other = tmp_path / "other.pub"
    other.write_text(sc.public_line(sc.load_or_make_key(tmp_path / "o").public_key()) + "\n")
    assert "not among the trusted" in _refused(
        ["certificate", "verify", str(pdf), "--trust", str(other)], 1)
    # not a certificate at all: exit 2
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    assert "neither a PDF nor JSON" in _refused(["certificate", "verify", str(junk)], 2)


def test_a_certificate_whose_hash_does_not_match_is_refused(
        client_store: tuple[TestClient, Store]) -> None:
    client, store = client_store
    tag, mine = _laptop(client, store)
    r = client.post(f"/api/v1/devices/{tag}/events", headers=mine, json={
        "type": "wiped", "details": {"certificate": certificate(), "certificate_sha256": "0" * 64}})
    assert r.status_code == 422 and "SHA-256" in r.text
    assert store.get_device(tag).status == "registered"


@pytest.mark.parametrize("result", ["hidden area not erased", "unconfirmed"])
def test_a_wipe_that_did_not_pass_leaves_the_device_unclean(
        client_store: tuple[TestClient, Store], result: str) -> None:
    client, store = client_store
    tag, mine = _laptop(client, store)
    r = client.post(f"/api/v1/devices/{tag}/events", headers=mine,
                    json={"type": "wiped", "details": {"certificate": certificate(result)}})
    assert r.status_code == 201, r.text
    dev = store.get_device(tag)
    assert dev.needs_wipe and dev.events[-1].details["result"] == result
    # nothing that leads back to a family until a wipe passes
    assert client.post(f"/api/v1/devices/{tag}/events", headers=mine,
                       json={"type": "imaged"}).status_code == 409


def test_a_sticks_certificate_is_countersigned_at_import(store: Store, tmp_path: Path) -> None:
    queue = tmp_path / "queue"
    queue.mkdir()
    (queue / "PF0ABCDE-run.json").write_text(json.dumps({
        **BODY, "events": [{"type": "wiped", "uid": "stick-run-wiped",
                            "details": {"certificate": certificate()}}]}))
    report = import_queue(store, queue, "mec-pc1")
    assert report.failed == [] and report.events_added == 1
    [wiped] = [e for e in store.get_device(report.created[0]).events if e.type == "wiped"]
    c = sc.check(sc.SignedCertificate.model_validate(wiped.details["signed_certificate"]))
    assert "imported from a stick's queue (PF0ABCDE-run.json)" in c.how and "mec-pc1" in c.how
