"""Registry integration fixtures: real server processes on SQLite and a throwaway PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.lab.postgres import PgCluster
from provisioner.registry.settings import Settings


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "postgresql":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        return Settings(data_dir=tmp_path, db_url=cluster.create_database())
    return Settings(data_dir=tmp_path)
