"""Submit and schedule a compiled package on a Kubeflow Pipelines server (`kfp.Client`).

Every failure the user can fix (no host, unreachable host, bad cron, unknown
parameter, server error) is a `KfpError` with a one-line message; the CLI
prints it and exits with status 2, never with a stack trace.
"""
from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import warnings
from typing import Any, Dict, List, Optional, Tuple

import yaml

HOST_ENV = "KFP_HOST"
DEFAULT_PACKAGE = "build/pipeline.yaml"
DEFAULT_EXPERIMENT = "feedrank"
HEALTHZ = "/apis/v2beta1/healthz"
# robfig/cron with seconds, as the KFP backend parses recurring-run schedules.
CRON_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23),
               ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 6))
_NAMES = {"month": "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC", "day-of-week": "SUN|MON|TUE|WED|THU|FRI|SAT"}


class KfpError(RuntimeError):
    """A user-fixable problem talking to Kubeflow Pipelines; the message is one line."""


def resolve_host(host: Optional[str]) -> str:
    host = host or os.environ.get(HOST_ENV) or os.environ.get("KF_PIPELINES_ENDPOINT")
    if not host:
        raise KfpError(f"no Kubeflow Pipelines host given: pass --host URL or set {HOST_ENV} (e.g. "
                       "http://localhost:8080 after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`)")
    if not re.match(r"^https?://", host):
        host = "http://" + host
    return host.rstrip("/")


def check_reachable(host: str, timeout: float = 5.0) -> None:
    """A quick GET of the healthz endpoint, so an unreachable host fails fast and clearly."""
    how = f"pass --host URL or set {HOST_ENV}"
    try:
        with urllib.request.urlopen(host + HEALTHZ, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        raise KfpError(f"Kubeflow Pipelines host {host} answered HTTP {e.code} on {HEALTHZ}: "
                       f"not a reachable KFP API endpoint (behind auth? wrong path?); {how}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise KfpError(f"cannot reach Kubeflow Pipelines at {host} ({reason}); {how}") from None


def validate_cron(expr: str) -> str:
    """Checks a 6-field cron expression (seconds first); returns it normalised."""
    fields = expr.split()
    example = "e.g. '0 0 3 * * *' runs daily at 03:00:00"
    if len(fields) != 6:
        raise KfpError(f"cron expression {expr!r} has {len(fields)} field(s); Kubeflow Pipelines needs 6: "
                       f"second minute hour day-of-month month day-of-week ({example})")
    for value, (name, lo, hi) in zip(fields, CRON_FIELDS):
        names = _NAMES.get(name)
        atom = rf"(\d+|{names})" if names else r"(\d+)"
        item = rf"(\*|\?|{atom}(-{atom})?)(/\d+)?"
        if not re.fullmatch(rf"{item}(,{item})*", value, flags=re.IGNORECASE) or \
                ("?" in value and name not in ("day-of-month", "day-of-week")):
            raise KfpError(f"cron expression {expr!r}: bad {name} field {value!r} ({example})")
        for number in re.findall(r"(?<![/\d])\d+", value):
            if not lo <= int(number) <= hi:
                raise KfpError(f"cron expression {expr!r}: {name} {number} is outside {lo}-{hi} ({example})")
    return " ".join(fields)


def read_parameters(package: str) -> Dict[str, Dict[str, Any]]:
    """The package's pipeline parameters (root inputDefinitions)."""
    if not os.path.exists(package):
        raise KfpError(f"package {package!r} does not exist; build it with "
                       "`python pipeline.py compile --output build/pipeline.yaml`")
    with open(package) as f:
        spec = next(iter(yaml.safe_load_all(f)), None) or {}
    return spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})


def _coerce(name: str, value: str, ptype: str) -> Any:
    try:
        if ptype == "NUMBER_INTEGER":
            return int(value)
        if ptype == "NUMBER_DOUBLE":
            return float(value)
        if ptype == "BOOLEAN":
            if value.lower() not in ("true", "false"):
                raise ValueError(value)
            return value.lower() == "true"
        if ptype in ("LIST", "STRUCT"):
            return json.loads(value)
    except ValueError:
        raise KfpError(f"--param {name}={value!r}: not a valid {ptype}") from None
    return value


def parse_params(pairs: List[str], package: str) -> Dict[str, Any]:
    """``k=v`` pairs -> run arguments, typed by the package's parameters.

    ``trainer.<key>=<json>`` edits one key of the ``trainer_config`` JSON
    parameter (default: the compiled one), e.g. ``trainer.epochs=2``.
    """
    declared = read_parameters(package)
    out: Dict[str, Any] = {}
    trainer_edits: Dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise KfpError(f"--param {pair!r} must look like NAME=VALUE")
        if name.startswith("trainer."):
            key = name[len("trainer."):]
            try:
                trainer_edits[key] = json.loads(value)
            except ValueError:
                trainer_edits[key] = value
            continue
        if name not in declared:
            raise KfpError(f"--param {name}: the package has no such parameter; it has {sorted(declared)} "
                           "(and trainer.<key> edits trainer_config)")
        out[name] = _coerce(name, value, declared[name].get("parameterType", "STRING"))
    if trainer_edits:
        if "trainer_config" not in declared:
            raise KfpError("--param trainer.<key>: the package has no trainer_config parameter")
        base = json.loads(out.get("trainer_config") or declared["trainer_config"].get("defaultValue") or "{}")
        if "model" in trainer_edits and trainer_edits["model"] != base.get("model"):
            raise KfpError(f"--param trainer.model: the model family is fixed at compile time "
                           f"({base.get('model')!r}; the push path and the baseline are per model): "
                           "compile a package with that model in --config instead")
        base.update(trainer_edits)
        out["trainer_config"] = json.dumps(base, sort_keys=True)
    return out


def _client(host: str):
    check_reachable(host)
    warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
    import kfp

    return kfp.Client(host=host)


def _call(what: str, host: str, fn, *args, **kwargs):
    """Runs a client call, turning API and network errors into one-line KfpErrors."""
    import kfp_server_api
    import urllib3

    try:
        return fn(*args, **kwargs)
    except kfp_server_api.ApiException as e:
        body = (e.body or "").strip().replace("\n", " ")
        raise KfpError(f"{what} failed at {host}: HTTP {e.status} {e.reason}: {body[:300]}") from None
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise KfpError(f"{what} failed: cannot reach Kubeflow Pipelines at {host} ({e}); "
                       f"pass --host URL or set {HOST_ENV}") from None


def submit(package: str, host: Optional[str], params: Dict[str, Any],
           experiment: str = DEFAULT_EXPERIMENT, run_name: Optional[str] = None,
           enable_caching: Optional[bool] = None, service_account: Optional[str] = None) -> Tuple[str, str]:
    """Creates a run of ``package``; returns (run id, run URL)."""
    host = resolve_host(host)
    read_parameters(package)
    client = _call("connect", host, _client, host)
    result = _call("create run", host, client.create_run_from_pipeline_package,
                   package, arguments=params, run_name=run_name, experiment_name=experiment,
                   enable_caching=enable_caching, service_account=service_account)
    return result.run_id, f"{host}/#/runs/details/{result.run_id}"


def schedule(package: str, host: Optional[str], cron: str, params: Dict[str, Any],
             experiment: str = DEFAULT_EXPERIMENT, name: str = "feedrank-daily",
             max_concurrency: int = 1, no_catchup: bool = True,
             enable_caching: Optional[bool] = None, service_account: Optional[str] = None) -> Tuple[str, str]:
    """Creates a recurring run of ``package`` on ``cron``; returns (id, URL)."""
    cron = validate_cron(cron)
    host = resolve_host(host)
    read_parameters(package)
    client = _call("connect", host, _client, host)
    exp = _call("create experiment", host, client.create_experiment, name=experiment)
    job = _call("create recurring run", host, client.create_recurring_run,
                experiment_id=exp.experiment_id, job_name=name, cron_expression=cron,
                max_concurrency=max_concurrency, no_catchup=no_catchup, params=params,
                pipeline_package_path=package, enable_caching=enable_caching,
                service_account=service_account)
    return job.recurring_run_id, f"{host}/#/recurringrun/details/{job.recurring_run_id}"
