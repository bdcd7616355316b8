"""Orchestrator back ends other than the local LocalDagRunner (Kubeflow Pipelines)."""
