"""The example overlays under manifests/serving/overlays/, rendered by `render` from two
example registry versions (champion 3, challenger 4 at 10%).

  python -m feedrank.deploy.examples manifests/serving/overlays

tests/serving/test_serving_manifests.py checks the committed files equal this output.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional

import yaml

from feedrank.deploy import FEEDRANK_RUNTIME, SERVERLESS, STANDARD, TFSERVING_RUNTIME
from feedrank.deploy.render import inference_service, without_namespace
from feedrank.deploy.versions import ServedVersion

MODEL = "feedrank-demo-ranker"
STORE = "gs://feedrank-ml/model_store/din"
CHAMPION = ServedVersion(MODEL, "3", "champion", f"{STORE}/1732500000", f"{STORE}/1732500000")
CHALLENGER = ServedVersion(MODEL, "4", "challenger", f"{STORE}/1732600000", f"{STORE}/1732600000")
CANARY_PERCENT = 10
HEADER = ("# Rendered by `python -m feedrank.deploy.examples` (example versions: champion 3,\n"
          "# challenger 4); `python pipeline.py deploy` renders the same from the MLflow aliases.\n")


def overlays() -> Dict[str, dict]:
    """overlay directory name -> its InferenceService."""
    return {
        SERVERLESS: inference_service(SERVERLESS, FEEDRANK_RUNTIME, CHAMPION, CHALLENGER, CANARY_PERCENT),
        STANDARD: inference_service(STANDARD, FEEDRANK_RUNTIME, CHAMPION, CHALLENGER, CANARY_PERCENT),
        f"{SERVERLESS}-tfserving": inference_service(SERVERLESS, TFSERVING_RUNTIME, CHAMPION),
        f"{STANDARD}-tfserving": inference_service(STANDARD, TFSERVING_RUNTIME, CHAMPION),
    }


def files() -> Dict[str, str]:
    """relative path -> text of every example file."""
    out = {}
    for name, isvc in overlays().items():
        out[f"{name}/inferenceservice.yaml"] = HEADER + yaml.safe_dump(without_namespace(isvc), sort_keys=False)
        out[f"{name}/kustomization.yaml"] = HEADER + yaml.safe_dump(
            {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "feedrank",
             "resources": ["../../base", "inferenceservice.yaml"]}, sort_keys=False)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = argv[0] if argv else os.path.join("manifests", "serving", "overlays")
    for rel, text in files().items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
