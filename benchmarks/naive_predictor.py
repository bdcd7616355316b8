"""The naive peer of ``benchmarks/serving.py``: the same SavedModel served the
way people start with KServe.

A stock ``kserve.ModelServer`` with a plain synchronous ``kserve.Model``, v1
``{"instances": [...]}`` with **one instance per candidate row** that repeats
the user's whole side (histories included), no user sharing, no batching
control, no thread pool.  It takes every input of the model's signature
(the declared columns included) and answers one probability per row.

    .venv-serving/bin/python -m benchmarks.naive_predictor --model-dir DIR --http-port 8081
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Dict, List

import kserve
import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)


class NaivePredictor(kserve.Model):
    """One row per candidate; every row carries the user's side."""

    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.fn = None

    def load(self) -> bool:
        self.fn = tf.saved_model.load(self.path).signatures["serving_default"]
        self.ready = True
        return True

    def predict(self, payload: Dict, headers: Dict[str, str] = None) -> Dict:
        rows: List[Dict] = payload["instances"]
        specs = self.fn.structured_input_signature[1]
        feed = {}
        for name, spec in specs.items():
            values = [r[name] for r in rows]
            if len(spec.shape) == 2:
                width = max(1, max(len(v) for v in values))
                values = [v + [""] * (width - len(v)) for v in values]
            feed[name] = tf.constant(np.asarray(values, dtype=object if spec.dtype == tf.string else np.float32))
        return {"predictions": self.fn(**feed)["probabilities"].numpy().tolist()}


def newest(model_dir: str) -> str:
    """``model_dir`` when it is a version directory, else its newest numeric version."""
    if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        return model_dir
    versions = sorted((d for d in os.listdir(model_dir) if d.isdigit()), key=int)
    return os.path.join(model_dir, versions[-1])


def main() -> int:
    """Serves ``--model-dir`` as ``--model-name`` on ``--http-port`` (REST only)."""
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--model-name", default="naive")
    p.add_argument("--http-port", type=int, default=8081)
    args, _ = p.parse_known_args()
    model = NaivePredictor(args.model_name, newest(args.model_dir))
    model.load()
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False).start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
