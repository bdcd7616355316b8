"""A real ``mlflow server`` process (SQLite backend, proxied artifacts) for a test module.

Registered for every test folder by ``pytest_plugins`` in ``tests/conftest.py``:
a test asks for ``mlflow_url`` or ``client`` by name (one server per module).
"""
from __future__ import annotations

from typing import Iterator

import pytest

from feedrank.tracking import candidate as cand_lib
from feedrank.tracking import server


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory) -> Iterator[str]:
    """One server per module on a free port in a tmp dir; stopped (and checked down) at the end."""
    root = tmp_path_factory.mktemp("mlflow")
    url = server.ensure_server(str(root), port=0)
    assert server.ensure_server(str(root)) == url  # reused, not a second process
    yield url
    assert server.stop_server(str(root))
    assert not server.healthy(url)


@pytest.fixture(scope="module")
def client(mlflow_url):  # noqa: F811 - the fixture above
    """An MLflow client on the module's server."""
    return cand_lib.client_for(mlflow_url)
