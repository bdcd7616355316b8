"""The predictor server, started as a real process in the serving environment.

It serves a copy of the tiny pipeline's pushed model; the tests talk HTTP to
it: v1/v2 (JSON and binary) round trips equal the offline scores of the same
model, gzip bodies, every bad-request class (4xx with an ``error`` field),
overload (503 + Retry-After), metrics, and a hot swap under traffic.
"""
import copy
import gzip
import json
import os
import re
import shutil
import struct
import threading
import time

import numpy as np
import pytest
import requests
import tensorflow as tf

from feedrank import features as F
from serving.common import procs
from serving.predictor import payloads as P
from tests.e2e.test_serving_contract import _eval_examples, _pair, _values

pytestmark = pytest.mark.e2e

NAME = "feedrank"
V1 = f"/v1/models/{NAME}:predict"
V2 = f"/v2/models/{NAME}/infer"
MAX_CANDIDATES = 300
MAX_BODY = 300_000


@pytest.fixture(scope="module")
def served(first_run, tmp_path_factory):
    """(base URL, model store dir, pushed version) of a running predictor."""
    if not os.path.exists(procs.SERVING_PYTHON):
        pytest.fail("the serving environment is missing: run `make serving-install`")
    _, summary = first_run
    pushed = summary["push"]["path"]
    store = tmp_path_factory.mktemp("store") / "din"
    version = os.path.basename(pushed.rstrip("/"))
    shutil.copytree(pushed, store / version)
    port = procs.free_port()
    log = str(tmp_path_factory.mktemp("logs") / "predictor.log")
    proc = procs.start_server("serving.predictor", [
        "--model-dir", str(store), "--model-name", NAME, "--http-port", str(port),
        "--batch-size", "8", "--max-candidates", str(MAX_CANDIDATES), "--max-body-bytes", str(MAX_BODY),
        "--max-in-flight", "2", "--poll-s", "0.5"], log)
    url = f"http://127.0.0.1:{port}"
    try:
        procs.wait_ready(f"{url}/v2/models/{NAME}/ready", 240, proc, log)
        yield url, store, version
    finally:
        procs.stop(proc)


def _offline(first_run, user_ex, candidates):
    """serving_tf_example scores of the pushed model on paired tf.Examples."""
    _, summary = first_run
    model = tf.saved_model.load(summary["push"]["path"])
    spec = F.FeatureSpec.read(summary["push"]["path"])
    paired = tf.constant([_pair(user_ex, c, spec).SerializeToString() for c in candidates])
    return model.signatures["serving_tf_example"](examples=paired)["probabilities"].numpy()


def _request_parts(user_ex, candidates, left_pad=0, spec: F.FeatureSpec = F.BUILTIN):
    """The predictor's request of ``spec``'s built-in features (the tiny run declares no columns)."""
    user = {F.USER_REGION_ID.name: _values(user_ex, F.USER_REGION_ID.name)[0]}
    user.update({d.name: float(_values(user_ex, d.name)[0]) for d in spec.request_dense("user")})
    for s in F.BUILTIN.seq_features:
        user[s.name] = [""] * left_pad + _values(user_ex, s.name)
    cands = {f.name: [_values(c, f.name)[0] for c in candidates] for f in spec.id_features if f.side == "candidate"}
    cands.update({d.name: [float(_values(c, d.name)[0]) for c in candidates]
                  for d in spec.request_dense("candidate")})
    return user, cands


@pytest.fixture(scope="module")
def case(first_run):
    cfg, _ = first_run
    examples = _eval_examples(cfg, 60)
    user_ex = next(e for e in examples if len(_values(e, F.CLICK_ITEMS.name)) >= 2)
    candidates = examples[:30]
    return user_ex, candidates, _offline(first_run, user_ex, candidates)


def test_v1_and_v2_scores_equal_the_offline_scores(served, case):
    url, _, version = served
    user_ex, candidates, want = case
    user, cands = _request_parts(user_ex, candidates, left_pad=3)
    r1 = requests.post(url + V1, json=P.v1_body(user, cands))
    assert r1.status_code == 200, r1.text
    assert r1.json()["model_version"] == version and r1.headers["x-model-version"] == version
    np.testing.assert_allclose(r1.json()["outputs"]["probabilities"], want, rtol=1e-5, atol=1e-6)

    r2 = requests.post(url + V2, json=P.v2_json_body(user, cands))
    assert r2.status_code == 200, r2.text
    out = r2.json()["outputs"][0]
    assert out["name"] == "probabilities" and out["shape"] == [len(candidates)]
    np.testing.assert_allclose(out["data"], want, rtol=1e-5, atol=1e-6)

    body, header_len = P.v2_binary_body(user, cands)
    r3 = requests.post(url + V2, data=body, headers={"Inference-Header-Content-Length": str(header_len),
                                                     "Content-Type": "application/octet-stream"})
    assert r3.status_code == 200, r3.text
    np.testing.assert_allclose(r3.json()["outputs"][0]["data"], want, rtol=1e-5, atol=1e-6)

    body, header_len = P.v2_binary_body(user, cands, binary_output=True)
    r5 = requests.post(url + V2, data=body, headers={"Inference-Header-Content-Length": str(header_len),
                                                     "Content-Type": "application/octet-stream"})
    assert r5.status_code == 200, r5.text
    header, probs = P.read_binary_output(r5.content, int(r5.headers["Inference-Header-Content-Length"]))
    assert header["model_version"] == version
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)

    gz = gzip.compress(json.dumps(P.v1_body(user, cands)).encode())
    r4 = requests.post(url + V1, data=gz, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r4.status_code == 200, r4.text
    np.testing.assert_allclose(r4.json()["outputs"]["probabilities"], want, rtol=1e-5, atol=1e-6)


def test_health_readiness_and_metadata(served):
    url, _, _ = served
    assert requests.get(url + "/v2/health/live").status_code == 200
    assert requests.get(url + "/v2/health/ready").json()["ready"] is True
    assert requests.get(url + f"/v1/models/{NAME}").json()["ready"] is True
    meta = requests.get(url + f"/v2/models/{NAME}").json()
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert inputs[F.CLICK_ITEMS.name]["shape"] == [1, -1] and inputs[F.PRICE.name]["datatype"] == "FP32"
    assert meta["outputs"][0]["name"] == "probabilities"


def _binary_bytes_input(value: bytes, prefix: int = -1) -> bytes:
    """A v2 binary body with one BYTES element ``value`` (2 bytes) and its length prefix."""
    header = json.dumps({"inputs": [{"name": F.USER_REGION_ID.name, "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 6}}]}).encode()
    return header + struct.pack("<I", len(value) if prefix < 0 else prefix) + value


def _bad_cases():
    user, cands = P.synthetic(4, 5)
    v1, v2 = P.v1_body(user, cands), P.v2_json_body(user, cands)
    binary, hlen = P.v2_binary_body(user, cands)
    big_user, big_cands = P.synthetic(MAX_CANDIDATES + 1, 2)

    def v1_with(**changes):
        b = copy.deepcopy(v1)
        for k, v in changes.items():
            if v is None:
                del b["inputs"][k]
            else:
                b["inputs"][k] = v
        return {"json": b}

    def v2_with(i, **changes):
        b = copy.deepcopy(v2)
        b["inputs"][i].update(changes)
        return {"json": b}

    octet = {"Content-Type": "application/octet-stream"}
    return {
        "malformed json": (V1, {"data": b'{"inputs": {', "headers": {"Content-Type": "application/json"}},
                           400, "Unrecognized request format"),
        "no inputs object": (V1, {"json": {"instances": [1]}}, 400, '"inputs"'),
        "missing field": (V1, v1_with(item_id=None), 400, "missing input(s): item_id"),
        "unknown field": (V1, v1_with(colour=["x"] * 4), 400, "unknown input(s): colour"),
        "string as number": (V1, v1_with(price=["a"] * 4), 400, "'price' must hold numbers"),
        "number as string": (V1, v1_with(item_id=[1, 2, 3, 4]), 400, "'item_id' must hold strings"),
        "scalar for list": (V1, v1_with(item_id="p1"), 400, "'item_id' must be a list"),
        "candidate counts differ": (V1, v1_with(price=[1.0] * 3), 400, "disagree on the number of candidates"),
        "two user rows": (V1, v1_with(click_item_ids=[["a"], ["b"]]), 400, "must be one row"),
        "too many candidates": (V1, {"json": P.v1_body(big_user, big_cands)}, 400,
                                f"too many candidates: {MAX_CANDIDATES + 1}"),
        "oversized body": (V1, {"data": b" " * (MAX_BODY + 1), "headers": {"Content-Type": "application/json"}},
                           413, "over the"),
        "bad gzip": (V1, {"data": b"not gzip", "headers": {"Content-Encoding": "gzip"}}, 400, "not valid gzip"),
        "unknown encoding": (V1, {"data": b"x", "headers": {"Content-Encoding": "br"}}, 415, "not supported"),
        "not json": (V1, {"data": b"a=1", "headers": {"Content-Type": "text/plain"}}, 400, "must be JSON"),
        "v2 malformed json": (V2, {"data": b'{"inputs": [', "headers": {"Content-Type": "application/json"}},
                              400, "invalid request body"),
        "v2 shape != data": (V2, v2_with(0, shape=[7]), 400, "needs 7 values, data has"),
        "v2 wrong datatype": (V2, v2_with(0, datatype="INT32"), 400, "expected BYTES"),
        "v2 missing shape": (V2, v2_with(0, shape=None), 400, "shape"),
        "v2 binary too short": (V2, {"data": binary[:-3], "headers": {
            "Inference-Header-Content-Length": str(hlen), **octet}}, 400, "does not match its declared shape"),
        "v2 binary not utf-8": (V2, {"data": _binary_bytes_input(b"\xff\xfe"), "headers": {
            "Inference-Header-Content-Length": str(len(_binary_bytes_input(b"\xff\xfe")) - 6), **octet}},
            400, "not UTF-8"),
        "v2 binary bad length prefix": (V2, {"data": _binary_bytes_input(b"ab", prefix=99), "headers": {
            "Inference-Header-Content-Length": str(len(_binary_bytes_input(b"ab", prefix=99)) - 6), **octet}},
            400, "does not match its declared shape"),
        "v2 binary no header": (V2, {"data": binary, "headers": octet}, 400, "inference-header-content-length"),
        "unknown model": ("/v1/models/nope:predict", {"json": v1}, 404, "nope"),
    }


@pytest.mark.parametrize("name", list(_bad_cases()))
def test_bad_requests_get_a_4xx_with_an_error_field(served, name):
    url, _, _ = served
    path, kwargs, status, fragment = _bad_cases()[name]
    r = requests.post(url + path, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert fragment.lower() in error.lower(), error
    assert "Traceback" not in error and "Exception" not in error


def _metric(url, pattern):
    text = requests.get(url + "/metrics").text
    values = [float(m.group(1)) for m in re.finditer(pattern + r"\s+([0-9.e+-]+)", text)]
    return sum(values), text


def test_overload_answers_503_with_retry_after(served):
    url, _, _ = served
    user, cands = P.synthetic(MAX_CANDIDATES, 50)   # batch size 8: ~38 model calls, slow on purpose
    results = []
    slow = [threading.Thread(target=lambda: results.append(requests.post(url + V1, json=P.v1_body(user, cands))))
            for _ in range(2)]
    for t in slow:
        t.start()
    deadline = time.monotonic() + 10
    while _metric(url, r'feedrank_in_flight_requests\{server="predictor"\}')[0] < 2:
        assert time.monotonic() < deadline, "the two slow requests never were in flight together"
    r = requests.post(url + V1, json=P.v1_body(*P.synthetic(2, 2)))
    for t in slow:
        t.join()
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert "overloaded" in r.json()["error"]
    assert [x.status_code for x in results] == [200, 200]


def test_metrics_expose_latency_batch_sizes_and_version(served):
    url, _, _ = served
    requests.post(url + V1, json=P.v1_body(*P.synthetic(20, 5)))
    count, text = _metric(
        url, r'feedrank_request_latency_seconds_count\{route="v1_predict",server="predictor",status="200"\}')
    assert count >= 1
    assert 'feedrank_predictor_batch_size_bucket{le="10.0"}' in text
    assert re.search(r'feedrank_predictor_model_version\{model="feedrank",version="\d+"\} 1\.0', text)


def test_hot_swap_under_traffic_fails_no_request(served, case):
    url, store, version = served
    user_ex, candidates, want = case
    body = P.v1_body(*_request_parts(user_ex, candidates))
    new_version = str(int(version) + 1)
    statuses, versions, stop = [], set(), threading.Event()

    def client():
        while not stop.is_set():
            r = requests.post(url + V1, json=body)
            statuses.append(r.status_code)
            if r.status_code == 200:
                versions.add(r.json()["model_version"])
                np.testing.assert_allclose(r.json()["outputs"]["probabilities"], want, rtol=1e-5, atol=1e-6)

    t = threading.Thread(target=client)
    t.start()
    try:
        time.sleep(0.5)
        staging = store / f".staging-{new_version}"
        shutil.copytree(store / version, staging)
        os.rename(staging, store / new_version)   # appears complete, as the Pusher's rename does
        deadline = time.monotonic() + 120
        while new_version not in versions and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
    assert new_version in versions, f"version {new_version} was never served (saw {versions})"
    assert statuses and set(statuses) == {200}, statuses
    assert requests.get(url + "/admin/version").json()["version"] == new_version
