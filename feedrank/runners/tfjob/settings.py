"""``trainer_job``: how the Kubeflow package runs the Trainer (``configs/kubeflow.yaml``).

``kind: pod`` (the default) trains in the Trainer step's own pod. ``kind: tfjob`` makes
that step launch a ``kubeflow.org/v1`` TFJob of ``workers`` Worker replicas through the
Kubeflow Training Operator (v1.8; `TRAINING_OPERATOR`) and wait for it. Each worker gets
the Trainer's placement and size: ``trainer_gpu`` (GPUs per worker, node selector,
tolerations), ``resources.Trainer`` and ``images.Trainer``.

Every value is checked when the config is read (`feedrank.typed`): a bad one is a
one-line `ConfigError` naming the key, e.g.
``kubeflow.yaml.trainer_job.workers must be an integer >= 1 (...), got 0``.
"""
from __future__ import annotations

import dataclasses
import logging

from feedrank.config import ConfigError
from feedrank.typed import Section, setting

log = logging.getLogger(__name__)

POD, TFJOB = "pod", "tfjob"
KINDS = (POD, TFJOB)
# The operator release whose kubeflow.org/v1 TFJob API the rendered job is written for.
TRAINING_OPERATOR = "v1.8"
RESTART_POLICIES = ("ExitCode", "OnFailure", "Never")


@dataclasses.dataclass
class TrainerJob(Section):
    """The ``trainer_job`` section of the Kubeflow config."""

    SECTION = "trainer_job"

    kind: str = setting(POD, choices=KINDS,
                        doc="pod: the Trainer trains in its own pod; tfjob: it launches a TFJob of `workers`")
    workers: int = setting(2, min=1, doc="the TFJob's Worker replicas; worker 0 is the chief")
    max_gpus: int = setting(0, min=0, doc="the most GPUs the job may hold at once, e.g. the namespace's "
                                          "GPU quota; 0: not checked")
    restart_policy: str = setting("ExitCode", choices=RESTART_POLICIES,
                                  doc="ExitCode: exit codes 128-255 (killed, evicted) restart a worker, "
                                      "1-127 fail the job")
    backoff_limit: int = setting(3, min=0, doc="worker restarts before the job fails")
    active_deadline_s: int = setting(0, min=0, doc="seconds the job may run before the operator stops it; 0: none")
    ttl_after_finished_s: int = setting(86400, min=0, doc="seconds a finished job is kept for its logs")
    service_account: str = setting("feedrank-pipeline", doc="the workers' Kubernetes service account; "
                                                            "'': the namespace's default")
    priority_class: str = setting("", doc="the workers' PriorityClass (overlays/gpu-pool: feedrank-training); "
                                          "'': none")
    poll_s: float = setting(30.0, above=0, doc="seconds between two reads of the job's status")

    @property
    def enabled(self) -> bool:
        """True when the Trainer step launches a TFJob."""
        return self.kind == TFJOB


def check_gpus(job: TrainerJob, gpus_per_worker: int, where: str) -> None:
    """The job's GPUs (``workers`` x ``trainer_gpu.count``) fit ``max_gpus``.

    MultiWorkerMirroredStrategy starts training only when every worker is up, so a job
    whose workers cannot all hold their GPUs at once would wait forever on the ones that
    did get theirs. Raises a one-line ConfigError naming the keys."""
    if not job.enabled or not job.max_gpus:
        return
    total = job.workers * gpus_per_worker
    if total > job.max_gpus:
        raise ConfigError(
            f"{where}.trainer_job.workers: {job.workers} workers x trainer_gpu.count {gpus_per_worker} = {total} "
            f"GPUs exceed {where}.trainer_job.max_gpus {job.max_gpus}: the workers could not all run at once")
