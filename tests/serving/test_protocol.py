"""What official clients send, and values out of range (the real predictor over HTTP).

The tiny SavedModel of `tests.serving.test_management` is served by the real
predictor, started without ``FEEDRANK_ADMIN_TOKEN`` (management off, the
default).  A v2 JSON request without ``Content-Type`` (what tritonclient and
kserve's ``InferenceRESTClient`` send) scores like one with it, and like v1 and
v2 binary; kserve's own REST client is run in the serving environment in JSON
and binary mode; a value outside its feature's range is a 400 naming the field,
the value and the range.
"""
from __future__ import annotations

import json
import math
import subprocess
from typing import Dict, List

import numpy as np
import pytest
import requests

from feedrank import features as F
from serving.common import procs
from serving.predictor import payloads as P
from tests.serving.test_management import NAME, TOKEN_ENV, save_tiny_ranker, start

pytestmark = pytest.mark.usefixtures("serving_venv")  # skipped, or failed under make test, without it

V1 = f"/v1/models/{NAME}:predict"
V2 = f"/v2/models/{NAME}/infer"

# kserve's InferenceRESTClient (v2) in JSON or binary mode: reads the v2 JSON body on
# stdin, prints the probabilities.
OFFICIAL_CLIENT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

url, binary = sys.argv[1], sys.argv[2] == "binary"
body = json.load(sys.stdin)
inputs = []
for t in body["inputs"]:
    dtype = object if t["datatype"] == "BYTES" else np.float32
    i = InferInput(t["name"], t["shape"], t["datatype"])
    i.set_data_from_numpy(np.array(t["data"], dtype=dtype).reshape(t["shape"]), binary_data=binary)
    inputs.append(i)

async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    try:
        out = await client.infer(url, InferRequest(model_name="%s", infer_inputs=inputs), model_name="%s")
    finally:
        await client._client.aclose()
    print(json.dumps(out.outputs[0].as_numpy().astype(float).tolist()))

asyncio.run(main())
""" % (NAME, NAME)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> str:
    """The URL of the predictor serving the tiny model (no management token)."""
    tmp = tmp_path_factory.mktemp("protocol")
    store = tmp / "store" / "tiny"
    save_tiny_ranker(str(store / "1"))
    port = procs.free_port()
    proc = start("serving.predictor", ["--model-dir", str(store), "--model-name", NAME, "--http-port", str(port)],
                 str(tmp / "predictor.log"), None)
    url = f"http://127.0.0.1:{port}"
    try:
        procs.wait_ready(f"{url}/v2/models/{NAME}/ready", 240, proc, str(tmp / "predictor.log"))
        yield url
    finally:
        procs.stop(proc)


def request_parts(n: int = 8):
    """A request of ``n`` candidates, every number within its feature's range."""
    return P.synthetic(n, 6, seed=4)


def v2_scores(response: requests.Response) -> List[float]:
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert out["name"] == "probabilities"
    return out["data"]


def test_v2_json_without_content_type_scores_like_with_it(predictor):
    user, cands = request_parts()
    body = json.dumps(P.v2_json_body(user, cands)).encode()
    with_type = requests.post(predictor + V2, data=body, headers={"Content-Type": "application/json"})
    without = requests.post(predictor + V2, data=body)
    assert "Content-Type" not in without.request.headers
    want = v2_scores(with_type)
    assert v2_scores(without) == want
    v1 = requests.post(predictor + V1, json=P.v1_body(user, cands))
    np.testing.assert_allclose(v1.json()["outputs"]["probabilities"], want, rtol=1e-6)
    for headers in ({}, {"Content-Type": "application/octet-stream"}):   # binary: the header-length header decides
        raw, header_len = P.v2_binary_body(user, cands)
        r = requests.post(predictor + V2, data=raw, headers={"Inference-Header-Content-Length": str(header_len),
                                                             **headers})
        np.testing.assert_allclose(v2_scores(r), want, rtol=1e-6)
    bad = requests.post(predictor + V2, data=b'{"inputs": [')   # still JSON, still a 400 naming it
    assert bad.status_code == 400 and bad.json()["error"], bad.text


@pytest.mark.parametrize("mode", ["json", "binary"])
def test_kserve_rest_client_gets_the_same_scores(predictor, mode):
    user, cands = request_parts()
    want = v2_scores(requests.post(predictor + V2, json=P.v2_json_body(user, cands)))
    run = subprocess.run([procs.SERVING_PYTHON, "-c", OFFICIAL_CLIENT, predictor, mode],
                         input=json.dumps(P.v2_json_body(user, cands)), capture_output=True, text=True,
                         timeout=120, env=procs.serving_env())
    assert run.returncode == 0, run.stderr[-3000:]
    np.testing.assert_allclose(json.loads(run.stdout.strip().splitlines()[-1]), want, rtol=1e-6)


def _with(user: Dict, cands: Dict, name: str, value: float, index: int = 2):
    user, cands = dict(user), {k: list(v) for k, v in cands.items()}
    if name in user:
        user[name] = value
    else:
        cands[name][index] = value
    return user, cands


OUT_OF_RANGE = [   # (feature, value, the allowed range as the error names it)
    (F.ITEM_HIST_CTR.name, 7.0, "[0, 1]"),
    (F.ITEM_HIST_IMPRESSIONS.name, -3.0, ">= 0"),
    (F.PRICE.name, -0.5, ">= 0"),
    (F.USER_HIST_CTR.name, 1.5, "[0, 1]"),          # a user-side number
    (F.USER_HIST_CLICKS.name, -1.0, ">= 0"),
    (F.CATEGORY_RECENCY_H.name, 721.0, "[0, 720]"),
]


@pytest.mark.parametrize("name,value,allowed", OUT_OF_RANGE, ids=[c[0] for c in OUT_OF_RANGE])
def test_a_value_out_of_range_is_a_400_naming_the_field(predictor, name, value, allowed):
    user, cands = _with(*request_parts(), name, value)
    raw, header_len = P.v2_binary_body(user, cands)
    answers = {
        "v1": requests.post(predictor + V1, json=P.v1_body(user, cands)),
        "v2 json": requests.post(predictor + V2, data=json.dumps(P.v2_json_body(user, cands))),
        "v2 binary": requests.post(predictor + V2, data=raw,
                                   headers={"Inference-Header-Content-Length": str(header_len)}),
    }
    for how, r in answers.items():
        assert r.status_code == 400, (how, r.status_code, r.text)
        error = r.json()["error"]
        assert repr(name) in error and f"{value:g}" in error and allowed in error, (how, error)


def test_values_at_the_range_limits_and_non_finite_values(predictor):
    user, cands = request_parts(3)
    edges = {F.ITEM_HIST_CTR.name: [0.0, 1.0, 0.5], F.CATEGORY_RECENCY_H.name: [0.0, 720.0, 3.0],
             F.PRICE.name: [0.0, 1e9, 2.0]}
    cands = {**cands, **edges}
    r = requests.post(predictor + V1, json=P.v1_body(user, cands))
    assert r.status_code == 200, r.text
    for value in (math.nan, math.inf, -math.inf):   # only the binary form carries them
        bad_user, bad_cands = _with(user, cands, F.ITEM_HIST_CTR.name, value, 1)
        raw, header_len = P.v2_binary_body(bad_user, bad_cands)
        r = requests.post(predictor + V2, data=raw, headers={"Inference-Header-Content-Length": str(header_len)})
        assert r.status_code == 400 and F.ITEM_HIST_CTR.name in r.json()["error"], r.text
        assert "non-finite" in r.json()["error"]


def test_management_is_off_by_default(predictor):
    for path in (f"/v2/repository/models/{NAME}/unload", f"/v2/repository/models/{NAME}/load", "/admin/reload"):
        for headers in ({}, {"Authorization": "Bearer anything"}):
            r = requests.post(predictor + path, headers=headers)
            assert r.status_code == 403 and TOKEN_ENV in r.json()["error"], (path, r.status_code, r.text)
    assert requests.get(f"{predictor}/v2/health/ready").status_code == 200
    assert requests.get(f"{predictor}/admin/version").json()["ready"] is True
