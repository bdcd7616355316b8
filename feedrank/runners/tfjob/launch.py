"""The Trainer step under ``trainer_job.kind: tfjob``: launch the TFJob, wait, take the chief's outputs.

  python -m feedrank.runners.tfjob.launch --tfjob <template JSON> -- <TFX's executor arguments>

(the compiled package's Trainer container; `feedrank.runners.tfjob.render.as_launcher`).

1. Reads the executor input from TFX's arguments (KFP has filled in ``{{$}}``).
2. Submits the template as a TFJob (`render.instantiate`) in the pod's namespace, named
   after the pod and owned by it, through the Kubernetes API (in-cluster credentials,
   or ``--kubeconfig``). A job of that name that already exists is waited on, not resubmitted.
3. Reads the job's status every ``--poll-s`` seconds until it succeeds or fails; a
   failure is one line: the operator's reason and message, and where the logs are.
4. Copies worker 0's executor output (`render.worker_output_file`) to the step's own
   ``outputs.outputFile``, so the chief's artifacts are the step's outputs.

SIGTERM (the run is stopped) deletes the job, so its workers give their GPUs back.
The Kubernetes API calls are `API_VERBS` on ``tfjobs.kubeflow.org``; the pipeline's
Role (manifests/base/rbac.yaml) grants them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from feedrank.runners.tfjob import render

log = logging.getLogger(__name__)

API_VERBS = ("create", "get", "delete")
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
POD_ENV = ("KFP_POD_NAME", "KFP_POD_UID", "KFP_NAMESPACE")   # set by KFP in every task's pod
LOG_EVERY_S = 600.0
READ_RETRIES = 5          # consecutive failed status reads (server errors, no connection) tolerated


class TFJobFailed(RuntimeError):
    """The TFJob failed, disappeared, or left no executor output."""


class _Unreachable(RuntimeError):
    """A status read that may succeed when tried again (a server error, no connection)."""


def pod_identity(env: Dict[str, str]) -> Optional[Dict[str, str]]:
    """The launching pod's name and uid (KFP's ``KFP_POD_NAME``/``KFP_POD_UID``), if set."""
    name, uid = env.get("KFP_POD_NAME", ""), env.get("KFP_POD_UID", "")
    return {"name": name, "uid": uid} if name and uid else None


def pod_namespace(env: Dict[str, str], namespace_file: str = NAMESPACE_FILE) -> str:
    """The launching pod's namespace: KFP's ``KFP_NAMESPACE``, else the service account's."""
    if env.get("KFP_NAMESPACE"):
        return env["KFP_NAMESPACE"]
    if os.path.isfile(namespace_file):
        with open(namespace_file) as f:
            return f.read().strip()
    raise TFJobFailed("cannot tell the pod's namespace: no KFP_NAMESPACE and no service account token; "
                      "pass --namespace")


def _api(kubeconfig: Optional[str]):
    from kubernetes import client, config

    if kubeconfig:
        return client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))
    config.load_incluster_config()
    return client.CustomObjectsApi()


def _http_error(e: Any, what: str) -> TFJobFailed:
    hint = " (the pod's service account may create and read tfjobs.kubeflow.org: manifests/base/rbac.yaml; " \
           "is the Training Operator installed?)" if e.status in (403, 404) else ""
    return TFJobFailed(f"{what}: HTTP {e.status} {e.reason}{hint}")


def submit(api, job: Dict[str, Any]) -> Dict[str, Any]:
    """Creates ``job``; an existing job of that name (this pod, restarted) is returned instead."""
    from kubernetes.client.exceptions import ApiException

    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    try:
        created = api.create_namespaced_custom_object(render.GROUP, render.VERSION, ns, render.PLURAL, job)
    except ApiException as e:
        if e.status != 409:
            raise _http_error(e, f"creating TFJob {ns}/{name}") from None
        log.info("TFJob %s/%s exists already: waiting for it", ns, name)
        return job
    workers = job["spec"]["tfReplicaSpecs"][render.REPLICA]["replicas"]
    log.info("created TFJob %s/%s: %d worker(s)", ns, name, workers)
    return created


def read(api, ns: str, name: str) -> Dict[str, Any]:
    """The job as the API server has it; a deleted job is a failure, a server error or a
    lost connection `_Unreachable`."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return api.get_namespaced_custom_object(render.GROUP, render.VERSION, ns, render.PLURAL, name)
    except ApiException as e:
        if e.status == 404:
            raise TFJobFailed(f"TFJob {ns}/{name} was deleted before it finished") from None
        if e.status and e.status < 500:
            raise _http_error(e, f"reading TFJob {ns}/{name}") from None
        raise _Unreachable(f"reading TFJob {ns}/{name}: HTTP {e.status} {e.reason}") from None
    except HTTPError as e:
        raise _Unreachable(f"reading TFJob {ns}/{name}: {e}") from None


def delete(api, ns: str, name: str) -> None:
    """Deletes the job and, in the background, its pods; a job already gone is no error."""
    from kubernetes.client.exceptions import ApiException

    try:
        api.delete_namespaced_custom_object(render.GROUP, render.VERSION, ns, render.PLURAL, name,
                                            propagation_policy="Background")
        log.info("deleted TFJob %s/%s", ns, name)
    except ApiException as e:
        if e.status != 404:
            log.warning("could not delete TFJob %s/%s: HTTP %s %s", ns, name, e.status, e.reason)


def wait(api, ns: str, name: str, poll_s: float) -> None:
    """Returns when the job succeeds; raises TFJobFailed with the operator's words when it fails."""
    last, logged, misses = "", time.monotonic(), 0
    while True:
        try:
            obj = read(api, ns, name)
        except _Unreachable as e:
            misses += 1
            if misses > READ_RETRIES:
                raise TFJobFailed(f"{e} ({misses} times in a row; the job may still be running)") from None
            log.warning("%s; trying again", e)
            time.sleep(poll_s)
            continue
        misses = 0
        state, message = render.job_state(obj)
        if state == "Succeeded":
            log.info("TFJob %s/%s succeeded", ns, name)
            return
        if state == "Failed":
            raise TFJobFailed(f"TFJob {ns}/{name} failed: {message or 'no message'}; "
                              f"the workers' logs: kubectl -n {ns} logs {name}-worker-0 (and -1, ...)")
        if state != last or time.monotonic() - logged > LOG_EVERY_S:
            log.info("TFJob %s/%s: %s%s", ns, name, state, f" ({message})" if message else "")
            last, logged = state, time.monotonic()
        time.sleep(poll_s)


def copy_chief_output(exchange: str, output_file: str) -> None:
    """Worker 0's executor output -> the step's ``outputs.outputFile``."""
    from tfx.dsl.io import fileio

    chief = render.worker_output_file(exchange, 0)
    if not fileio.exists(chief):
        raise TFJobFailed(f"the TFJob succeeded but worker 0 wrote no executor output at {chief}")
    with fileio.open(chief, "rb") as f:
        data = f.read()
    fileio.makedirs(os.path.dirname(output_file))
    with fileio.open(output_file, "wb") as f:
        f.write(data)
    log.info("the step's outputs are worker 0's (%s)", chief)


def launch(template: Dict[str, Any], tfx_args: Sequence[str], api, namespace: str,
           owner: Optional[Dict[str, str]], poll_s: float) -> str:
    """Submits the job for ``tfx_args``, waits for it and copies the chief's executor output;
    returns the job's name. Deletes the job when interrupted (SIGTERM, Ctrl-C)."""
    _, executor_input = render.invocation(tfx_args)
    output_file = (executor_input.get("outputs") or {}).get("outputFile")
    if not output_file:
        raise TFJobFailed("the executor input has no outputs.outputFile")
    seed = owner["uid"] if owner else json.dumps(executor_input.get("outputs"), sort_keys=True)
    name = render.job_name(seed)
    exchange = render.exchange_dir(executor_input, name)
    job = render.instantiate(template, name=name, namespace=namespace, tfx_args=tfx_args,
                             exchange=exchange, owner=owner)
    try:
        submit(api, job)
        wait(api, namespace, name, poll_s)
    except (KeyboardInterrupt, SystemExit):
        delete(api, namespace, name)
        raise
    copy_chief_output(exchange, output_file)
    return name


def _stop(signum, frame) -> None:  # SIGTERM -> SystemExit, so launch() deletes the job
    raise SystemExit(128 + signum)


def main(argv: Optional[List[str]] = None) -> int:
    """The step's command; returns its exit status (1 with one error line on failure)."""
    from kubernetes.config import ConfigException

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m feedrank.runners.tfjob.launch")
    p.add_argument(render.TEMPLATE_FLAG, required=True, help="the TFJob template (JSON)")
    p.add_argument("--namespace", help="default: the pod's own")
    p.add_argument("--kubeconfig", help="default: the pod's in-cluster credentials")
    p.add_argument(render.POLL_FLAG, type=float, default=30.0, help="seconds between status reads")
    p.add_argument("tfx_args", nargs=argparse.REMAINDER, help="-- then TFX's executor arguments")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    tfx_args = args.tfx_args[1:] if args.tfx_args[:1] == ["--"] else args.tfx_args
    env = dict(os.environ)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        namespace = args.namespace or pod_namespace(env)
        name = launch(json.loads(args.tfjob), tfx_args, _api(args.kubeconfig), namespace, pod_identity(env),
                      args.poll_s)
    except (TFJobFailed, ValueError, ConfigException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"TFJob {namespace}/{name} succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
