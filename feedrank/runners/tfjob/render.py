"""The Trainer's TFJob as pure functions of the Kubeflow config and the step's arguments.

* `render_tfjob(kf)`: the job template written into the compiled package (compile time):
  ``kubeflow.org/v1`` ``TFJob`` with ``trainer_job.workers`` Worker replicas, each pod on
  the GPU pool as ``trainer_gpu`` says, sized by ``resources.Trainer``, running
  ``images.Trainer``, with the config's env, Secret env and image pull secrets;
* `as_launcher(container, kf)`: the compiled Trainer container turned into the step that
  launches that job (`feedrank.runners.tfjob.launch`, the default image, no GPU);
* `instantiate(template, ...)`: the job the launcher submits: named, in its namespace, owned
  by the launching pod, each worker running `feedrank.runners.tfjob.worker` with the
  step's own TFX arguments (so the same executor input);
* `job_state(obj)`: the job's state and message from its status conditions.

The operator (Training Operator v1.8) sets ``TF_CONFIG`` in the container named
``tensorflow`` of each replica when the job has more than one replica; worker 0 is then
the chief (no Chief replica), and the job succeeds when worker 0 does.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import posixpath
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from feedrank.runners.kubeflow_config import KubeflowConfig

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "tfjobs", "TFJob"
API_VERSION = f"{GROUP}/{VERSION}"
REPLICA = "Worker"
CONTAINER = "tensorflow"              # the operator sets TF_CONFIG in the container of this name only
PORT_NAME, PORT = "tfjob-port", 2222  # the operator's defaults, written out
GPU_RESOURCE = "nvidia.com/gpu"
LAUNCH_MODULE = "feedrank.runners.tfjob.launch"
WORKER_MODULE = "feedrank.runners.tfjob.worker"
TEMPLATE_FLAG, POLL_FLAG, EXCHANGE_FLAG = "--tfjob", "--poll-s", "--exchange_dir"
INVOCATION_FLAG = "--json_serialized_invocation_args"   # TFX's flag for the executor input
LABELS = {"app.kubernetes.io/part-of": "feedrank", "app.kubernetes.io/component": "trainer"}
# A service-mesh sidecar would keep a finished worker's pod running, so the job would never finish.
POD_ANNOTATIONS = {"sidecar.istio.io/inject": "false"}
NAME_PREFIX = "feedrank-trainer-"


def worker_resources(res: Dict[str, str], gpus: int) -> Dict[str, Dict[str, str]]:
    """A container's ``resources`` from ``resources.Trainer`` keys plus ``gpus`` GPUs (a limit)."""
    out: Dict[str, Dict[str, str]] = {}
    for key, value in sorted(res.items()):
        kind, _, what = key.partition("_")          # cpu_request -> requests.cpu
        out.setdefault(f"{what}s", {})[kind] = str(value)
    if gpus:
        out.setdefault("limits", {})[GPU_RESOURCE] = str(gpus)
    return out


def _env(kf: "KubeflowConfig") -> List[Dict[str, Any]]:
    env: List[Dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in sorted(kf.env.items())]
    if kf.secret_env:
        name = kf.secret_env["secret_name"]
        env += [{"name": var, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
                for var, key in sorted(kf.secret_env["keys"].items())]
    return env


def worker_image(kf: "KubeflowConfig") -> str:
    """The Trainer's image (``images.Trainer``, else ``image``): the workers run it."""
    return kf.images.get("Trainer", kf.image)


def render_tfjob(kf: "KubeflowConfig") -> Dict[str, Any]:
    """The TFJob template of the compiled package (no name, namespace or worker args yet)."""
    job, gpu = kf.trainer_job, kf.trainer_gpu
    container: Dict[str, Any] = {
        "name": CONTAINER, "image": worker_image(kf),
        "command": ["python", "-m", WORKER_MODULE],
        "ports": [{"name": PORT_NAME, "containerPort": PORT}],
        "resources": worker_resources(kf.resources_for("Trainer"), gpu.count)}
    env = _env(kf)
    if env:
        container["env"] = env
    pod: Dict[str, Any] = {"containers": [container]}
    if gpu.count > 0:                      # on the GPU pool, as the Trainer's own pod would be
        if gpu.node_selector:
            pod["nodeSelector"] = dict(gpu.node_selector)
        if gpu.tolerations:
            pod["tolerations"] = [dict(t) for t in gpu.tolerations]
    if job.service_account:
        pod["serviceAccountName"] = job.service_account
    if job.priority_class:
        pod["priorityClassName"] = job.priority_class
    if kf.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in kf.image_pull_secrets]
    run_policy: Dict[str, Any] = {"cleanPodPolicy": "Running", "backoffLimit": job.backoff_limit,
                                  "ttlSecondsAfterFinished": job.ttl_after_finished_s}
    if job.active_deadline_s:
        run_policy["activeDeadlineSeconds"] = job.active_deadline_s
    return {
        "apiVersion": API_VERSION, "kind": KIND, "metadata": {"labels": dict(LABELS)},
        "spec": {"runPolicy": run_policy, "tfReplicaSpecs": {REPLICA: {
            "replicas": job.workers, "restartPolicy": job.restart_policy,
            "template": {"metadata": {"labels": dict(LABELS), "annotations": dict(POD_ANNOTATIONS)},
                         "spec": pod}}}}}


def as_launcher(container: Dict[str, Any], kf: "KubeflowConfig") -> None:
    """Turns the compiled Trainer container into the step that launches the TFJob: the default
    image, `LAUNCH_MODULE` with the template, then TFX's own arguments (passed on to the workers)."""
    template = json.dumps(render_tfjob(kf), sort_keys=True, separators=(",", ":"))
    container["image"] = kf.image
    container["command"] = ["python", "-m", LAUNCH_MODULE]
    container["args"] = [TEMPLATE_FLAG, template, POLL_FLAG, f"{kf.trainer_job.poll_s:g}", "--",
                         *container.get("args", [])]


def k8s_literal(arg: str) -> str:
    """``arg`` as a container argument Kubernetes passes on unchanged: it expands ``$(VAR)``
    references and reduces ``$$`` to ``$``, so every ``$`` is doubled."""
    return arg.replace("$", "$$")


def invocation(tfx_args: Sequence[str]) -> Tuple[int, Dict[str, Any]]:
    """(index of the value, executor input) of TFX's ``--json_serialized_invocation_args``."""
    for i, arg in enumerate(tfx_args):
        if arg == INVOCATION_FLAG and i + 1 < len(tfx_args):
            return i + 1, json.loads(tfx_args[i + 1])
        if arg.startswith(INVOCATION_FLAG + "="):
            return i, json.loads(arg.split("=", 1)[1])
    raise ValueError(f"the Trainer's arguments have no {INVOCATION_FLAG} (the executor input)")


def with_output_file(tfx_args: Sequence[str], path: str) -> List[str]:
    """TFX's arguments with the executor input's ``outputs.outputFile`` set to ``path``."""
    i, executor_input = invocation(tfx_args)
    executor_input.setdefault("outputs", {})["outputFile"] = path
    value = json.dumps(executor_input, sort_keys=True)
    out = list(tfx_args)
    out[i] = f"{INVOCATION_FLAG}={value}" if out[i].startswith(INVOCATION_FLAG + "=") else value
    return out


def output_uris(executor_input: Dict[str, Any]) -> List[str]:
    """The URIs of the step's output artifacts, by output name."""
    outputs = (executor_input.get("outputs") or {}).get("artifacts") or {}
    return [a["uri"] for key in sorted(outputs) for a in outputs[key].get("artifacts", []) if a.get("uri")]


def job_name(seed: str) -> str:
    """A TFJob name from ``seed`` (the launching pod's uid): short enough for the operator's
    per-worker Services (``<name>-worker-<i>``, 63 characters at most)."""
    return NAME_PREFIX + hashlib.sha256(seed.encode()).hexdigest()[:12]


def exchange_dir(executor_input: Dict[str, Any], name: str) -> str:
    """Where the workers write their executor outputs: beside the step's output artifacts
    (object storage every worker and the launcher can reach), per job."""
    uris = output_uris(executor_input)
    if not uris:
        raise ValueError("the Trainer's executor input names no output artifact URI")
    return posixpath.join(posixpath.dirname(uris[0].rstrip("/")), f"tfjob-{name}")


def worker_output_file(exchange: str, index: int) -> str:
    """Worker ``index``'s executor output (worker 0's is the step's)."""
    return posixpath.join(exchange, f"worker-{index}", "executor_output.json")


def instantiate(template: Dict[str, Any], *, name: str, namespace: str, tfx_args: Sequence[str],
                exchange: str, owner: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The TFJob to submit: ``template`` named, in ``namespace``, owned by ``owner`` (the
    launching pod: deleting it deletes the job), every worker running `WORKER_MODULE` on the
    step's TFX arguments."""
    job = copy.deepcopy(template)
    meta = job.setdefault("metadata", {})
    meta.update(name=name, namespace=namespace)
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": owner["name"], "uid": owner["uid"]}]
    (container,) = [c for c in job["spec"]["tfReplicaSpecs"][REPLICA]["template"]["spec"]["containers"]
                    if c["name"] == CONTAINER]
    container["args"] = [k8s_literal(a) for a in (EXCHANGE_FLAG, exchange, "--", *tfx_args)]
    return job


TERMINAL = ("Succeeded", "Failed")


def job_state(obj: Optional[Dict[str, Any]]) -> Tuple[str, str]:
    """(state, message) of a TFJob: ``Succeeded`` or ``Failed`` once either condition is
    true, else the newest true condition (``Created``, ``Running``, ``Restarting``,
    ``Suspended``), or ``Pending`` before the operator has written any."""
    conditions = [c for c in ((obj or {}).get("status") or {}).get("conditions") or []
                  if c.get("status") == "True"]
    for state in TERMINAL:
        hit = [c for c in conditions if c.get("type") == state]
        if hit:
            c = hit[-1]
            return state, " ".join(p for p in (c.get("reason", ""), c.get("message", "")) if p)
    if not conditions:
        return "Pending", ""
    c = conditions[-1]
    return c.get("type", "Unknown"), c.get("message", "")
