"""Repository paths and the tiny test configuration."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from feedrank import config as config_lib
from feedrank.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(ROOT, "configs", "tiny.yaml")


def e2e_config(tmp: Path, data_dir: Path | str, name: str = "feedrank-e2e") -> Config:
    """configs/tiny.yaml with every output redirected into ``tmp``."""
    cfg = config_lib.load(TINY_CONFIG)
    # Track straight into SQLite (no server process); tests/e2e/test_mlflow.py runs a real server.
    mlflow = dataclasses.replace(cfg.mlflow, tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    return dataclasses.replace(cfg, pipeline_name=name, input_base=str(data_dir),
                               run_root=str(tmp / "runs"), push_root=str(tmp / "model_store"), mlflow=mlflow)
