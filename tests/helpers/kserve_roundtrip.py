"""Round-trips InferenceServices through the kserve SDK's models (run with the serving venv).

  .venv-serving/bin/python tests/helpers/kserve_roundtrip.py < objects.json

Reads a JSON list of InferenceService dicts; deserializes each into
``V1beta1InferenceService`` (kubernetes types through the kubernetes client's
own models), serializes it back, and prints a JSON list with, per object, every
field path that did not survive (an unknown or misplaced field is dropped) and
any deserialization error.  kserve 0.15's models have no ``spec.canary``
(kserve >= 0.20): each canary entry is checked as ``{trafficPercent: int,
predictor: V1beta1PredictorSpec + name}`` - the predictor round-trips as a
``V1beta1PredictorSpec`` without its ``name``; the other two keys are checked here.
"""
import copy
import json
import sys

import kserve.models
import kubernetes.client.models as k8s_models
from json_diff import dropped  # run as a script: its own folder is on sys.path
from kserve import ApiClient
from pydantic import BaseModel


class RoundTrip(ApiClient):
    """kserve's ApiClient, with kubernetes' (pydantic) models for the V1* core types."""

    def _ApiClient__deserialize(self, data, klass):
        if isinstance(klass, str) and not hasattr(kserve.models, klass) and hasattr(k8s_models, klass):
            return getattr(k8s_models, klass).from_dict(data)
        return super()._ApiClient__deserialize(data, klass)

    def sanitize_for_serialization(self, obj):
        if isinstance(obj, BaseModel):
            return obj.to_dict(serialize=True)
        return super().sanitize_for_serialization(obj)


class _Response:
    def __init__(self, data):
        self.data = json.dumps(data)


def _strip_none(x):
    if isinstance(x, dict):
        return {k: _strip_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_strip_none(v) for v in x]
    return x


def round_trip(client, obj, klass):
    model = client.deserialize(_Response(obj), klass)
    return _strip_none(client.sanitize_for_serialization(model))


def check(client, isvc):
    obj = copy.deepcopy(isvc)
    canaries = obj.get("spec", {}).pop("canary", None)
    problems = dropped(obj, round_trip(client, obj, "V1beta1InferenceService"))
    for i, entry in enumerate(canaries or []):
        where = f".spec.canary[{i}]"
        problems += [f"{where}.{k}" for k in entry if k not in ("trafficPercent", "predictor")]
        if not isinstance(entry.get("trafficPercent"), int):
            problems.append(f"{where}.trafficPercent (an integer is required)")
        pred = copy.deepcopy(entry.get("predictor") or {})
        if not isinstance(pred.pop("name", None), str):
            problems.append(f"{where}.predictor.name (required)")
        problems += [f"{where}.predictor{p}" for p in
                     dropped(pred, round_trip(client, pred, "V1beta1PredictorSpec"))]
    return problems


def main():
    client = RoundTrip()
    out = []
    for isvc in json.load(sys.stdin):
        try:
            out.append({"name": isvc["metadata"]["name"], "dropped": check(client, isvc), "error": ""})
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            out.append({"name": isvc.get("metadata", {}).get("name"), "dropped": [],
                        "error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
