"""Registry fixtures: every storage test runs on SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.lab.postgres import PgCluster
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller


@pytest.fixture(scope="session")
def pg_template(pg_cluster: PgCluster) -> str:
    """A migrated database that each test's database is copied from."""
    url = pg_cluster.create_database("deelit_template")
    Store(Settings(db_url=url)).close()
    return "deelit_template"


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "postgresql":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        template: str = request.getfixturevalue("pg_template")
        return Settings(data_dir=tmp_path, db_url=cluster.create_database(template=template))
    return Settings(data_dir=tmp_path)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store(settings)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(Settings(data_dir=tmp_path))
    yield s
    s.close()


@pytest.fixture
def station() -> Caller:
    return Caller("mec-pc1")
