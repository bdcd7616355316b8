"""Only the operator manages models, and readiness tells the truth (real servers over HTTP).

A tiny SavedModel with the real ``serving_default`` request contract of the
built-in features (`feedrank.train.export.serving_input_signature`) and a fixed
scoring rule is served by the real predictor, started with
``FEEDRANK_ADMIN_TOKEN`` set, and the real transformer in front of it, started
without one (management off, the default).  Every management call without the
token is refused on both (401/403/404, a JSON ``error``) and the model keeps
answering; with the token, unload makes readiness false on the predictor and
on the transformer, and ``/admin/reload`` or the repository's load bring it back.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from typing import Dict, Optional, Tuple

import pytest

from feedrank import features as F
from serving.common import procs
from serving.predictor import payloads as P

pytestmark = pytest.mark.usefixtures("serving_venv")  # skipped, or failed under make test, without it

NAME = "feedrank"
VERSION = "1"
TOKEN = "test-admin-token"
TOKEN_ENV = "FEEDRANK_ADMIN_TOKEN"
READY_PATHS = ("/v2/health/ready", f"/v2/models/{NAME}/ready", f"/v1/models/{NAME}")
MANAGEMENT_CALLS = (
    ("POST", f"/v2/repository/models/{NAME}/unload"),
    ("POST", f"/v2/repository/models/{NAME}/load"),
    ("POST", "/v2/repository/index"),
    ("GET", "/v2/repository/index"),
    ("POST", f"/v1/models/{NAME}:unload"),
    ("POST", f"/v1/models/{NAME}:load"),
    ("POST", "/admin/reload"),
    ("POST", f"/v2//repository/models/{NAME}/unload"),    # spelling variants of the same routes
    ("POST", f"/V2/Repository/Models/{NAME}/unload/"),
    ("POST", "/admin/reload/"),
)
BAD_AUTH = (None, "Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer", f"Token {TOKEN}")


def save_tiny_ranker(path: str, spec: F.FeatureSpec = F.BUILTIN) -> str:
    """A SavedModel at ``path`` (a version directory) whose ``serving_default`` takes
    the raw request of ``spec`` and scores each candidate from its CTR, its id, its
    category's clicks in the user's history and the user's CTR."""
    import tensorflow as tf

    from feedrank.train.export import serving_input_signature

    signature = serving_input_signature(spec)

    class TinyRanker(tf.Module):
        @tf.function(input_signature=[signature])
        def serve(self, request):
            ctr = request[F.ITEM_HIST_CTR.name]
            item = tf.cast(tf.strings.to_hash_bucket_fast(request[F.ITEM_ID.name], 7), tf.float32)
            history = request[F.CLICK_CATEGORIES.name][0]
            clicks = tf.reduce_sum(tf.cast(tf.equal(request[F.CATEGORY_ID.name][:, None], history[None, :]),
                                           tf.float32), 1)
            z = 2.0 * ctr + 0.05 * item + 0.1 * clicks + 0.3 * request[F.USER_HIST_CTR.name] - 1.0
            return {"probabilities": tf.sigmoid(z)}

    module = TinyRanker()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve.get_concrete_function()})
    return path


def start(module: str, args, log_path: str, token: Optional[str]):
    """``procs.start_server`` with ``FEEDRANK_ADMIN_TOKEN`` set to ``token`` (None: unset)."""
    with pytest.MonkeyPatch.context() as mp:
        if token is None:
            mp.delenv(TOKEN_ENV, raising=False)
        else:
            mp.setenv(TOKEN_ENV, token)
        return procs.start_server(module, args, log_path)


def call(method: str, url: str, body: Optional[bytes] = None,
         headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], dict]:
    """(status, lower-cased headers, JSON body) of one HTTP call."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read() or b"{}")


def bearer(token: str = TOKEN) -> Dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """(predictor URL, transformer URL, model store): the predictor with the token, the
    transformer (Redis unreachable: request-only features) without one."""
    tmp = tmp_path_factory.mktemp("management")
    store = tmp / "store" / "tiny"
    save_tiny_ranker(str(store / VERSION))
    p_port, t_port = procs.free_port(), procs.free_port()
    started = []
    try:
        started.append(start("serving.predictor", [
            "--model-dir", str(store), "--model-name", NAME, "--http-port", str(p_port), "--poll-s", "0.5"],
            str(tmp / "predictor.log"), TOKEN))
        predictor = f"http://127.0.0.1:{p_port}"
        procs.wait_ready(f"{predictor}/v2/models/{NAME}/ready", 240, started[-1], str(tmp / "predictor.log"))
        started.append(start("serving.transformer", [
            "--model-name", NAME, "--predictor-url", predictor, "--http-port", str(t_port),
            "--redis", f"redis://127.0.0.1:{procs.free_port()}/0", "--no-log-events"],
            str(tmp / "transformer.log"), None))
        transformer = f"http://127.0.0.1:{t_port}"
        procs.wait_ready(f"{transformer}/v1/models/{NAME}", 120, started[-1], str(tmp / "transformer.log"))
        yield predictor, transformer, store
    finally:
        for proc in reversed(started):
            procs.stop(proc)


def predict(predictor: str) -> Tuple[int, dict]:
    user, cands = P.synthetic(6, 5, seed=1)
    status, _, body = call("POST", f"{predictor}/v1/models/{NAME}:predict", json.dumps(P.v1_body(user, cands)).encode(),
                           {"Content-Type": "application/json"})
    return status, body


def rank(transformer: str) -> Tuple[int, dict]:
    body = {"user_id": "u0001", "candidates": ["i0000001", "i0000002", "i0000003"]}
    status, _, answer = call("POST", f"{transformer}/v1/models/{NAME}:predict", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
    return status, answer


def ready_statuses(url: str) -> Dict[str, int]:
    return {p: call("GET", url + p)[0] for p in READY_PATHS}


def wait_ready_statuses(url: str, want: int, timeout_s: float = 10.0) -> Dict[str, int]:
    """The readiness statuses once all are ``want`` (the transformer re-asks its predictor each second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = ready_statuses(url)
        if set(got.values()) == {want} or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def assert_refused(status: int, body: dict, why: str) -> None:
    assert status in (401, 403, 404), (status, body)
    assert isinstance(body.get("error"), str) and why in body["error"], body


def test_unauthenticated_management_is_refused_and_the_model_keeps_answering(stack):
    predictor, transformer, _ = stack
    scores = predict(predictor)[1]["outputs"]["probabilities"]
    for method, path in MANAGEMENT_CALLS:
        for auth in BAD_AUTH:
            headers = {"Authorization": auth} if auth else {}
            status, hdrs, body = call(method, predictor + path, b"{}" if method == "POST" else None, headers)
            if auth and auth.startswith("Bearer ") and auth != f"Bearer {TOKEN}":
                assert status == 403, (method, path, auth, status, body)
                assert_refused(status, body, "token is wrong")
            else:
                assert status == 401 and hdrs.get("www-authenticate") == "Bearer", (method, path, auth, status)
                assert_refused(status, body, TOKEN_ENV)
            status, _, body = call(method, transformer + path, b"{}" if method == "POST" else None, headers)
            assert status == 403, (method, path, auth, status, body)   # no token on the transformer: off
            assert_refused(status, body, "management is off")
    # the right token does not open management on a server started without one
    status, _, body = call("POST", f"{transformer}/v2/repository/models/{NAME}/unload", b"", bearer())
    assert_refused(status, body, "management is off")

    assert ready_statuses(predictor) == dict.fromkeys(READY_PATHS, 200)
    assert ready_statuses(transformer) == dict.fromkeys(READY_PATHS, 200)
    status, body = predict(predictor)
    assert status == 200 and body["outputs"]["probabilities"] == scores
    status, body = rank(transformer)
    assert status == 200 and len(body["ranking"]) == 3, body
    assert call("GET", f"{predictor}/admin/version")[2] == {"model": NAME, "version": VERSION, "ready": True}


def test_unload_with_the_token_makes_readiness_false_and_reload_brings_it_back(stack):
    predictor, transformer, _ = stack
    scores = predict(predictor)[1]["outputs"]["probabilities"]
    status, _, body = call("POST", f"{predictor}/v2/repository/models/{NAME}/unload", b"", bearer())
    assert status == 200, body
    assert ready_statuses(predictor) == dict.fromkeys(READY_PATHS, 503)
    assert wait_ready_statuses(transformer, 503) == dict.fromkeys(READY_PATHS, 503)
    status, body = predict(predictor)
    assert status == 503 and "not ready" in body["error"], body
    time.sleep(1.0)   # the version polling (--poll-s 0.5) does not bring an unloaded model back
    assert ready_statuses(predictor) == dict.fromkeys(READY_PATHS, 503)
    assert call("GET", f"{predictor}/admin/version")[2] == {"model": NAME, "version": None, "ready": False}

    status, _, body = call("POST", f"{predictor}/admin/reload", b"", bearer())
    assert status == 200 and body["ready"] is True and body["version"] == VERSION, body
    assert ready_statuses(predictor) == dict.fromkeys(READY_PATHS, 200)
    assert wait_ready_statuses(transformer, 200) == dict.fromkeys(READY_PATHS, 200)
    status, body = predict(predictor)
    assert status == 200 and body["outputs"]["probabilities"] == scores
    assert rank(transformer)[0] == 200

    # the repository's own load brings an unloaded model back too
    assert call("POST", f"{predictor}/v2/repository/models/{NAME}/unload", b"", bearer())[0] == 200
    assert ready_statuses(predictor) == dict.fromkeys(READY_PATHS, 503)
    status, _, body = call("POST", f"{predictor}/v2/repository/models/{NAME}/load", b"", bearer())
    assert status == 200, body
    assert ready_statuses(predictor) == dict.fromkeys(READY_PATHS, 200)
    status, _, body = call("POST", f"{predictor}/v2/repository/models/nope/load", b"", bearer())
    assert status == 404 and "nope" in body["error"], body


def test_a_vanished_version_directory(stack):
    """The loaded version answers from memory, so the server stays ready; once
    unloaded it cannot be loaded again (503 naming why) until the directory is back."""
    predictor, _, store = stack
    moved = store.parent / "moved"
    os.rename(store / VERSION, moved)
    try:
        time.sleep(1.0)   # a poll that finds no version keeps serving the loaded one
        assert ready_statuses(predictor) == dict.fromkeys(READY_PATHS, 200)
        assert predict(predictor)[0] == 200
        assert call("POST", f"{predictor}/v2/repository/models/{NAME}/unload", b"", bearer())[0] == 200
        status, _, body = call("POST", f"{predictor}/admin/reload", b"", bearer())
        assert status == 503 and body["ready"] is False and "no version directory" in body["error"], body
        status, _, body = call("POST", f"{predictor}/v2/repository/models/{NAME}/load", b"", bearer())
        assert status == 503 and "could not be loaded" in body["error"], body
        assert ready_statuses(predictor) == dict.fromkeys(READY_PATHS, 503)
    finally:
        if moved.exists():
            shutil.rmtree(store / VERSION, ignore_errors=True)
            os.rename(moved, store / VERSION)
    status, _, body = call("POST", f"{predictor}/admin/reload", b"", bearer())
    assert status == 200 and body["ready"] is True, body
    assert ready_statuses(predictor) == dict.fromkeys(READY_PATHS, 200)
