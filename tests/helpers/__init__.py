"""Shared test helpers: imported by the tests in ``tests/unit``, ``tests/e2e`` and
``tests/serving`` (``from tests.helpers import ...``); pytest fixtures used by
every folder live in ``tests/conftest.py``."""
