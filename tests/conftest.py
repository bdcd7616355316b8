"""Shared pytest setup for every test folder: legacy Keras for TFT/TFMA, the
folder markers, the serving-environment fixtures and the tiny-data fixtures.

The project is installed (`pip install -e .`, done by `make install`), so
`feedrank`, `components`, `serving` and `pipeline` import without any path setup.
Helpers that tests import live in `tests/helpers/`.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from feedrank import config as config_lib  # noqa: E402
from tests.helpers import serving_env  # noqa: E402
from tests.helpers.config import TINY_CONFIG, e2e_config  # noqa: E402

# Fixtures every folder may use: a real MLflow server per module (`mlflow_url`, `client`).
pytest_plugins = ("tests.helpers.mlflow_server",)

# The folder under tests/ a test lives in names its marker (registered in pytest.ini).
FOLDER_MARKERS = ("unit", "e2e", "serving")
TESTS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Marks every test with its folder's marker: tests/unit -> unit, tests/e2e -> e2e, tests/serving -> serving."""
    for item in items:
        try:
            folder = Path(str(item.path)).resolve().relative_to(TESTS_DIR).parts[0]
        except ValueError:  # a test outside tests/
            continue
        if folder in FOLDER_MARKERS:
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="session")
def serving_venv():
    """The serving venv's Python; skips the test without it (fails under ``FEEDRANK_REQUIRE_SERVING``)."""
    serving_env.require_serving_venv()
    from serving.common import procs

    return procs.SERVING_PYTHON


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A tiny simulated log (configs/tiny.yaml's `simulate` section)."""
    from feedrank.events.simulator import simulate

    s = config_lib.load(TINY_CONFIG).simulate
    out = tmp_path_factory.mktemp("data") / "tiny"
    simulate(str(out), users=s.users, items=s.items, days=s.days, seed=s.seed)
    return out


@pytest.fixture(scope="session")
def first_run(tmp_path_factory, tiny_data):
    """One real pipeline run on the tiny log: (config, summary)."""
    import pipeline

    cfg = e2e_config(tmp_path_factory.mktemp("e2e"), tiny_data)
    return cfg, pipeline.run(cfg)


@pytest.fixture(scope="session")
def base_log(tmp_path_factory):
    """The small simulated log the example-generator tests perturb (copy it before changing it)."""
    from tests.helpers import examplegen as H

    return H.make_log(str(tmp_path_factory.mktemp("base")))


@pytest.fixture(scope="session")
def base_run(base_log, tmp_path_factory):
    """The example generator's summary of `base_log` with the default settings (read-only)."""
    from tests.helpers import examplegen as H

    return H.run(base_log, str(tmp_path_factory.mktemp("baseline")))
