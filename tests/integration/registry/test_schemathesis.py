"""Property-based run over the OpenAPI spec (schemathesis): no input gives a 5xx."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from provisioner.registry.api import create_app
from provisioner.registry.schemas import DeviceIn
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller

# Built at collection time because schemathesis parametrizes from a loaded schema; the
# module fixture below removes it afterwards. The migrations are cheap on SQLite.
_DATA = Path(tempfile.mkdtemp(prefix="deelit-schemathesis-"))
_STORE = Store(Settings(data_dir=_DATA))
_STORE.register(DeviceIn(serial="5CG1234ABC", maker="HP"), Caller("seed"))
_TOKEN = _STORE.create_token("schemathesis")
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_STORE.settings, _STORE),
                                       headers={"Authorization": f"Bearer {_TOKEN}"})


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _STORE.close()
    shutil.rmtree(_DATA, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_server_errors(case: schemathesis.Case) -> None:
    for headers in ({"Authorization": f"Bearer {_TOKEN}"}, {"Authorization": "Bearer x"}):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        # a wrong token never gets data or a write (logging out, which only clears the
        # page's cookie, answers anyone)
        if headers["Authorization"] == "Bearer x" and (case.method, case.path) != (
                "DELETE", "/api/v1/session"):
            assert not 200 <= response.status_code < 300, (case.method, case.formatted_path)
