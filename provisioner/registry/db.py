"""Engines and sessions: SQLite in WAL mode by default, PostgreSQL by URL; migrations on open."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from provisioner.errors import DeelitError
from provisioner.registry.settings import Settings


def _synchronous() -> str:
    value = os.environ.get("DEELIT_SQLITE_SYNCHRONOUS", "FULL").upper()
    if value not in ("FULL", "EXTRA", "NORMAL"):
        raise DeelitError(f"DEELIT_SQLITE_SYNCHRONOUS={value!r}: choose FULL (the default), "
                          "EXTRA or NORMAL")
    return value


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(url, pool_size=8, max_overflow=16, pool_timeout=60)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so BEGIN IMMEDIATE can be issued.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: an event acknowledged to an agent survives a power cut too (NORMAL in WAL
        # mode may lose the last commits then). bench/registry.py measures what it costs,
        # against NORMAL set through DEELIT_SQLITE_SYNCHRONOUS (its baseline, nothing else).
        cur.execute(f"PRAGMA synchronous={_synchronous()}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Writers take the lock up front: a deferred transaction that later upgrades to a
        # write fails at once with SQLITE_BUSY instead of waiting for the busy timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """A writer and a reader session factory (the same engine on PostgreSQL)."""

    def __init__(self, settings: Settings) -> None:
        url = settings.url
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise DeelitError(f"--db {url!r} is not a database URL: {exc}") from exc
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = _sqlite_engine(url, immediate=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
        elif self.dialect == "postgresql":
            if parsed.drivername == "postgresql":
                url = str(parsed.set(drivername="postgresql+psycopg"))
            self.engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
            self.read_engine = self.engine
        else:
            raise DeelitError(f"--db {url!r}: only sqlite:/// and postgresql:// URLs are supported")
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._write() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    def upgrade(self, revision: str = "head") -> None:
        """Brings the schema to the newest migration (a no-op when it is already there); an
        older `revision` is for tests of the migrations themselves."""
        cfg = Config()
        cfg.set_main_option(
            "script_location", str(resources.files("provisioner.registry") / "migrations")
        )
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        except OperationalError as exc:
            raise DeelitError(
                f"cannot open the registry database {self.engine.url!r}: {exc.orig}; "
                "check --db / --data and that the server is running"
            ) from exc

    def tables(self) -> set[str]:
        return set(inspect(self.engine).get_table_names())

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
