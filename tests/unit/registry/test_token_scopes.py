"""Token scopes and expiry, on SQLite and PostgreSQL: the store, the HTTP API, the CLI, and
the migration that added them to databases made before."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import text, update
from typer.testing import CliRunner

from provisioner.cli import make_app
from provisioner.errors import DeelitError
from provisioner.lab.postgres import PgCluster
from provisioner.registry.access import AGENT_EVENTS, TokenScope, parse_duration
from provisioner.registry.api import create_app
from provisioner.registry.db import Database
from provisioner.registry.errors import Forbidden, Invalid
from provisioner.registry.lifecycle import EventType
from provisioner.registry.models import Token, UTCDateTime
from provisioner.registry.schemas import DeviceIn, EventIn
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller

cli_app = make_app()

BODY = {"serial": "PF0ABCDE", "baseboard_serial": "L1HF00000XX",
        "uuid": "4c4c4544-0030-4a10-8048-c4c04f503732", "macs": ["54:ee:75:00:00:01"],
        "maker": "LENOVO", "model": "20B6005BUS", "grade": "B"}
# What provisioner/agent/station.py sends, in its order, for a wipe + install.
INTAKE = ["inventoried", "graded", "wiped", "imaged", "verified", "ready"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client_store(settings: Settings) -> Iterator[tuple[TestClient, Store]]:
    store = Store(settings)
    with TestClient(create_app(settings, store)) as client:
        yield client, store


def _expire(store: Store, token: str) -> None:
    """Moves a token's expiry into the past, as the clock would."""
    with store.db.write() as s:
        s.execute(update(Token).where(Token.prefix == token[:12])
                  .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))


# -- the store -------------------------------------------------------------------------------


def test_scope_and_expiry_are_stored_and_listed(store: Store) -> None:
    plain = store.create_token("mec-pc1", point="MEC")
    agent = store.create_token("mec-pc1", scope="agent", expires_in=dt.timedelta(hours=24),
                               note="serve session")
    assert store.authenticate(plain) == Caller("mec-pc1", "MEC", TokenScope.station)
    assert store.authenticate(agent) == Caller("mec-pc1", None, TokenScope.agent)
    listed = {t.prefix: t for t in store.list_tokens()}
    assert listed[plain[:12]].scope is TokenScope.station
    assert listed[plain[:12]].expires_at is None
    info = listed[agent[:12]]
    assert info.scope is TokenScope.agent and info.live()
    assert info.expires_at is not None
    lifetime = info.expires_at - info.created_at
    assert dt.timedelta(hours=24) - dt.timedelta(seconds=1) < lifetime <= dt.timedelta(hours=24)


def test_expired_and_revoked_tokens_do_not_authenticate(store: Store) -> None:
    keep = store.create_token("mec-pc1", scope="agent", expires_in=dt.timedelta(hours=1))
    old = store.create_token("mec-pc1", scope="agent", expires_in=dt.timedelta(hours=1))
    gone = store.create_token("mec-pc1", scope="agent")
    _expire(store, old)
    assert store.revoke_token(gone) is True
    assert store.revoke_token(gone) is False  # already revoked
    assert store.revoke_token("dlt_unknown") is False
    assert store.authenticate(old) is None and store.authenticate(gone) is None
    assert store.authenticate(keep) is not None
    info = store.token_info(old)
    assert info is not None and not info.live()


def test_bad_scope_or_lifetime_is_refused(store: Store) -> None:
    with pytest.raises(Invalid, match="scope"):
        store.create_token("mec-pc1", scope="admin")
    with pytest.raises(Invalid, match="positive"):
        store.create_token("mec-pc1", expires_in=dt.timedelta(0))
    with pytest.raises(Invalid, match="too long"):
        store.create_token("mec-pc1", expires_in=dt.timedelta.max)
    assert store.list_tokens() == []


def test_the_database_refuses_an_unknown_scope(store: Store) -> None:
    with pytest.raises(sa.exc.IntegrityError), store.db.write() as s:
        s.add(Token(station="x", token_sha256="0" * 64, prefix="dlt_x", scope="root",
                    created_at=dt.datetime.now(dt.UTC)))


def test_agent_callers_post_intake_events_only(store: Store) -> None:
    agent, station = Caller("pxe-1", scope=TokenScope.agent), Caller("pxe-1")
    tag = store.register(DeviceIn.model_validate(BODY), agent).asset_tag
    for kind in ("loaned", "returned", "repaired", "retired"):
        with pytest.raises(Forbidden, match="station token"):
            store.add_event(tag, EventIn(type=EventType(kind)), agent)
    store.add_event(tag, EventIn(type=EventType.wiped), agent)
    assert store.get_device(tag).status == "wiped"  # the refused ones left no trace
    store.add_event(tag, EventIn(type=EventType.retired), station)
    assert store.get_device(tag).status == "retired"


def test_agent_events_are_what_the_agent_sends() -> None:
    assert {e.value for e in AGENT_EVENTS} == set(INTAKE)


@pytest.mark.parametrize(("text_", "expected"), [
    ("90s", dt.timedelta(seconds=90)), ("30m", dt.timedelta(minutes=30)),
    ("24h", dt.timedelta(hours=24)), ("7d", dt.timedelta(days=7)), (" 2W ", dt.timedelta(weeks=2)),
])
def test_durations(text_: str, expected: dt.timedelta) -> None:
    assert parse_duration(text_) == expected


@pytest.mark.parametrize("bad", ["", "24", "0h", "-1h", "1.5h", "1y", "h", "99999999999w"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(Invalid):
        parse_duration(bad)


# -- the HTTP API ----------------------------------------------------------------------------


def test_agent_token_registers_and_posts_the_intake(client_store: tuple[TestClient, Store]
                                                    ) -> None:
    client, store = client_store
    h = auth(store.create_token("pxe-1", scope="agent", expires_in=dt.timedelta(hours=24)))
    r = client.post("/api/v1/devices", json=BODY, headers=h)
    assert r.status_code == 201, r.text
    tag = r.json()["asset_tag"]
    assert client.post("/api/v1/devices", json=BODY, headers=h).status_code == 200
    for kind in INTAKE:
        ev = client.post(f"/api/v1/devices/{tag}/events", headers=h,
                         json={"type": kind, "uid": f"run1-{kind}", "build_id": "ci-1",
                               "details": {"grade": "B"} if kind == "graded" else {}})
        assert ev.status_code == 201, (kind, ev.text)
        assert ev.json()["station"] == "pxe-1"
    # a resend of the same record (the agent's retry) stores nothing twice
    again = client.post(f"/api/v1/devices/{tag}/events", headers=h,
                        json={"type": "ready", "uid": "run1-ready"})
    assert again.status_code == 200
    assert store.get_device(tag).status == "ready"


def test_agent_token_cannot_read_or_change_lifecycle(client_store: tuple[TestClient, Store]
                                                     ) -> None:
    client, store = client_store
    station, agent = store.create_token("mec-pc1"), store.create_token("mec-pc1", scope="agent")
    tag = client.post("/api/v1/devices", json=BODY, headers=auth(station)).json()["asset_tag"]
    for kind in ("wiped", "imaged", "verified", "ready"):
        assert client.post(f"/api/v1/devices/{tag}/events", json={"type": kind},
                           headers=auth(station)).status_code == 201
    reads = [("GET", "/api/v1/devices"), ("GET", f"/api/v1/devices/{tag}"),
             ("GET", "/api/v1/devices/DEELIT-MEC-999999"), ("GET", "/api/v1/builds"),
             ("GET", "/api/v1/devices?status=ready")]
    for method, path in reads:
        r = client.request(method, path, headers=auth(agent))
        assert r.status_code == 403, (path, r.status_code)
        assert "station token" in r.json()["detail"] and "agent token" in r.json()["detail"]
        assert client.request(method, path, headers=auth(station)).status_code != 403
    for kind in ("loaned", "returned", "repaired", "retired"):
        r = client.post(f"/api/v1/devices/{tag}/events", json={"type": kind}, headers=auth(agent))
        assert r.status_code == 403, (kind, r.text)
        assert f"'{kind}' needs a station token" in r.json()["detail"]
    # also on an unknown tag: the answer does not tell whether the tag exists
    assert client.post("/api/v1/devices/DEELIT-MEC-999999/events", json={"type": "loaned"},
                       headers=auth(agent)).status_code == 403
    assert store.get_device(tag).status == "ready"
    # the same event with the station's own token is accepted
    assert client.post(f"/api/v1/devices/{tag}/events", json={"type": "loaned"},
                       headers=auth(station)).status_code == 201


def test_expired_and_revoked_tokens_get_401(client_store: tuple[TestClient, Store]) -> None:
    client, store = client_store
    tokens = {scope: store.create_token("mec-pc1", scope=scope, expires_in=dt.timedelta(hours=1))
              for scope in ("station", "agent")}
    for token in tokens.values():
        assert client.post("/api/v1/devices", json=BODY, headers=auth(token)).status_code in (200,
                                                                                              201)
    _expire(store, tokens["station"])
    store.revoke_token(tokens["agent"])
    for token in tokens.values():
        for method, path in [("POST", "/api/v1/devices"), ("GET", "/api/v1/devices"),
                             ("POST", "/api/v1/devices/DEELIT-MEC-000001/events")]:
            r = client.request(method, path, json=BODY if path.endswith("devices") else
                               {"type": "wiped"}, headers=auth(token))
            assert r.status_code == 401, (method, path, r.status_code)
            assert "expired or revoked" in r.json()["detail"]


def test_openapi_names_the_403(client_store: tuple[TestClient, Store]) -> None:
    client, store = client_store
    paths = client.get("/openapi.json", headers=auth(store.create_token("x"))).json()["paths"]
    assert "403" in paths["/api/v1/devices"]["get"]["responses"]
    assert "403" in paths["/api/v1/devices/{asset_tag}/events"]["post"]["responses"]
    assert "403" not in paths["/api/v1/devices"]["post"]["responses"]


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_create_with_scope_and_expiry_and_list(tmp_path: Path) -> None:
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli_app, ["registry", *args, "--data", str(tmp_path)],
                               catch_exceptions=False, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        return result.output

    station = run("token", "create", "mec-pc1").strip().splitlines()[-1]
    agent = run("token", "create", "mec-pc1", "--scope", "agent",
                "--expires-in", "12h").strip().splitlines()[-1]
    def table() -> dict[str, dict[str, str]]:
        lines = [ln for ln in run("token", "list").splitlines() if ln.startswith(("┃", "│"))]
        cells = [[c.strip() for c in ln[1:-1].replace("┃", "│").split("│")] for ln in lines]
        head, *rows = cells
        return {row[head.index("prefix")]: dict(zip(head, row, strict=True)) for row in rows}

    rows = table()
    assert set(rows) == {station[:12], agent[:12]}, rows
    assert rows[station[:12]]["scope"] == "station" and rows[station[:12]]["expires"] == ""
    assert rows[agent[:12]]["scope"] == "agent"
    store = Store(Settings(data_dir=tmp_path))
    try:
        info = store.token_info(agent)
        assert info is not None and info.scope is TokenScope.agent and info.expires_at
        assert rows[agent[:12]]["expires"] == f"{info.expires_at:%Y-%m-%d %H:%M}"
        assert store.authenticate(station) == Caller("mec-pc1", None, TokenScope.station)
        _expire(store, agent)
    finally:
        store.close()
    assert table()[agent[:12]]["expires"].endswith(" expired")
    bad = runner.invoke(cli_app, ["registry", "token", "create", "x", "--expires-in", "soon",
                                  "--data", str(tmp_path)])
    assert bad.exit_code != 0 and isinstance(bad.exception, DeelitError)
    bad = runner.invoke(cli_app, ["registry", "token", "create", "x", "--scope", "root",
                                  "--data", str(tmp_path)])
    assert bad.exit_code != 0


# -- the migration ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """An empty database (not the migrated template the other tests copy)."""
    if request.param == "postgresql":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        return Settings(data_dir=tmp_path, db_url=cluster.create_database())
    return Settings(data_dir=tmp_path)


def test_migration_keeps_old_tokens_with_station_scope(fresh_settings: Settings) -> None:
    db = Database(fresh_settings)
    try:
        db.upgrade("0001")
        assert "expires_at" not in {c["name"] for c in sa.inspect(db.engine).get_columns("tokens")}
        old = "dlt_made-before-scopes-existed-0123456789abcdef"
        tokens = sa.table("tokens", sa.column("station"), sa.column("point"),
                          sa.column("token_sha256"), sa.column("prefix"), sa.column("note"),
                          sa.column("created_at", UTCDateTime()))
        with db.engine.begin() as conn:
            conn.execute(tokens.insert().values(
                station="mec-pc1", point="MEC", token_sha256=hashlib.sha256(old.encode()).hexdigest(),
                prefix=old[:12], note="from 0001", created_at=dt.datetime.now(dt.UTC)))
    finally:
        db.dispose()
    store = Store(fresh_settings)  # migrates to the newest revision on open
    try:
        with store.db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
        assert store.authenticate(old) == Caller("mec-pc1", "MEC", TokenScope.station)
        (info,) = store.list_tokens()
        assert info.scope is TokenScope.station and info.expires_at is None
        assert info.note == "from 0001"
        # it keeps full rights: reads and lifecycle events
        with TestClient(create_app(fresh_settings, store)) as client:
            assert client.get("/api/v1/devices", headers=auth(old)).status_code == 200
        new = store.create_token("mec-pc1", scope="agent", expires_in=dt.timedelta(hours=1))
        assert store.authenticate(new) == Caller("mec-pc1", None, TokenScope.agent)
    finally:
        store.close()


def test_migration_downgrades_and_upgrades_again(fresh_settings: Settings) -> None:
    store = Store(fresh_settings)
    token = store.create_token("mec-pc1")
    store.close()
    db = Database(fresh_settings)
    try:
        cfg = Config()
        cfg.set_main_option("script_location",
                            str(resources.files("provisioner.registry") / "migrations"))
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
        columns = {c["name"] for c in sa.inspect(db.engine).get_columns("tokens")}
        assert "scope" not in columns and "expires_at" not in columns
        db.upgrade()
    finally:
        db.dispose()
    store = Store(fresh_settings)
    try:
        assert store.authenticate(token) == Caller("mec-pc1", None, TokenScope.station)
    finally:
        store.close()


def test_boot_and_machine_tokens(client_store: tuple[TestClient, Store]) -> None:
    """What a station hands out: the boot token (in every boot script) writes nothing to the
    registry; a machine's credential registers and posts the intake of that machine only."""
    client, store = client_store
    boot = auth(store.create_token("pxe-1", scope="boot", expires_in=dt.timedelta(hours=24)))
    mine = auth(store.create_token("pxe-1", scope="machine", machine=BODY["serial"].lower(),
                                   expires_in=dt.timedelta(hours=24)))
    assert client.post("/api/v1/devices", json=BODY, headers=boot).status_code == 403
    other = client.post("/api/v1/devices", json={**BODY, "serial": "OTHER-1", "macs": []},
                        headers=mine)
    assert other.status_code == 403 and "credential is for" in other.json()["detail"]
    r = client.post("/api/v1/devices", json=BODY, headers=mine)
    assert r.status_code == 201, r.text
    tag = r.json()["asset_tag"]
    station = auth(store.create_token("pxe-1"))
    other_tag = client.post("/api/v1/devices", json={**BODY, "serial": "OTHER-1", "macs": []},
                            headers=station).json()["asset_tag"]
    for kind in INTAKE:
        assert client.post(f"/api/v1/devices/{tag}/events", headers=boot,
                           json={"type": kind}).status_code == 403, kind
        assert client.post(f"/api/v1/devices/{other_tag}/events", headers=mine,
                           json={"type": kind}).status_code == 403, kind
    for kind in ("wiped", "imaged", "verified", "ready"):
        assert client.post(f"/api/v1/devices/{tag}/events", headers=mine,
                           json={"type": kind}).status_code == 201, kind
    assert client.post(f"/api/v1/devices/{tag}/events", headers=mine,
                       json={"type": "loaned"}).status_code == 403
    assert client.get(f"/api/v1/devices/{tag}", headers=mine).status_code == 403
    assert store.get_device(other_tag).status == "registered"
    with pytest.raises(Invalid, match="bound to one machine"):
        store.create_token("pxe-1", scope="machine")
    with pytest.raises(Invalid, match="bound to one machine"):
        store.create_token("pxe-1", scope="boot", machine="X")
