"""Shared pytest setup: legacy Keras for TFT/TFMA, and the tiny-data fixtures.

The project is installed (`pip install -e .`, done by `make install`), so
`feedrank`, `components` and `pipeline` import without any path setup.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402

import pytest  # noqa: E402

from feedrank import config as config_lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(ROOT, "configs", "tiny.yaml")


def e2e_config(tmp, data_dir, name="feedrank-e2e"):
    """configs/tiny.yaml with every output redirected into ``tmp``."""
    cfg = config_lib.load(TINY_CONFIG)
    # Track straight into SQLite (no server process); tests/test_mlflow.py runs a real server.
    mlflow = dataclasses.replace(cfg.mlflow, tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    return dataclasses.replace(cfg, pipeline_name=name, input_base=str(data_dir),
                               run_root=str(tmp / "runs"), push_root=str(tmp / "model_store"), mlflow=mlflow)


@pytest.fixture(autouse=True)
def builtin_features():
    """Every test ends with exactly the built-in features declared (`features.declare`):
    loading a config with a ``features`` section declares its columns process-wide."""
    from feedrank import features as F

    yield
    F.declare(())


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
    from tests import examplegen_helpers as H

    return H.make_log(str(tmp_path_factory.mktemp("base")))


@pytest.fixture(scope="session")
def base_run(base_log, tmp_path_factory):
    """The example generator's summary of `base_log` with the default settings (read-only)."""
    from tests import examplegen_helpers as H

    return H.run(base_log, str(tmp_path_factory.mktemp("baseline")))
