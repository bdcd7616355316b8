"""Deploying the ranker on KServe: the champion with a challenger canary, and rollback.

  python pipeline.py deploy --canary 10 [--mode standard] [--kubeconfig ~/.kube/config]
  python pipeline.py rollback [--previous] [--kubeconfig ...]

`versions` reads the registry's ``champion``/``challenger`` aliases (both must
be blessed) and maps each version to the storage URI KServe downloads;
`render` builds the InferenceService for a deployment mode and a predictor
runtime; `apply` creates or replaces it through the Kubernetes API.
"""
from __future__ import annotations

SERVERLESS = "serverless"  # Knative: predictor.canaryTrafficPercent, the previous revision keeps the rest
STANDARD = "standard"      # kserve >= 0.20 Standard (raw Deployment) mode: spec.canary[]
MODES = (SERVERLESS, STANDARD)
FEEDRANK_RUNTIME = "feedrank"    # our kserve.Model container (serving image): v1 and v2
TFSERVING_RUNTIME = "tfserving"  # KServe's TensorFlow Serving runtime: v1 only
RUNTIMES = (FEEDRANK_RUNTIME, TFSERVING_RUNTIME)


class DeployError(RuntimeError):
    """A deployment cannot be rendered or applied for a reason the user can act on (one line)."""
