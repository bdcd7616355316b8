"""Declared item / user columns of every kind ranked online as scored offline.

A tiny model is trained on a simulated log whose tables carry a categorical, a
numeric and a tokens column on both the ``items`` and the ``users`` table
(`tests.helpers.declared_columns`): the example generator's examples, the real
tf.Transform, the Trainer and the export (which writes the feature contract
beside the SavedModel).  The real predictor serves the model's version
directory and the real transformer reads the contract from it, as ``make
serve`` starts them; Redis is seeded by the bulk loader with the contract read
from the served version (``make serve``'s path), holding exactly the events
before a chosen second.  The transformer's scores of a user's impressions at
that second equal the exported model's ``serving_tf_example`` scores of the
example generator's examples to 1e-5.  While the store lacks a declared column
the model reads, the transformer is not ready and says which.  The alignment
replay compares every input of the model's signature.

The model is trained once per test session (`trained`, which
``test_served_equals_trained`` imports too).
"""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from typing import Dict, List, Tuple

import numpy as np
import pytest

from feedrank import features as F
from serving import stack as serving_stack
from serving.common import procs
from serving.features import bootstrap, declared, online, redis_layout, replay
from tests.helpers import examplegen as H
from tests.helpers.declared_columns import ALL_KINDS, add_columns
from tests.helpers.redis_stack import redis_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("serving_venv")  # skipped, or failed under make test, without it
MODEL = "feedrank"
PREFIX = "decl"
SECONDS = 8          # request seconds compared (one bulk load each)
MIN_CANDIDATES = 3   # impressions of one user in a compared second


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Tuple[str, str, tuple]:
    """(log dir, model directory of the pushed version, `replay.offline_examples` of the log);
    the log and the model are made once per session (under the session's base temp dir)."""
    root = tmp_path_factory.getbasetemp() / "declared_model"
    log_dir, model_dir = str(root / "log"), str(root / "store" / "dnn")
    made = (root / "done").exists()
    if not made:
        shutil.rmtree(root, ignore_errors=True)
        add_columns(H.make_log(log_dir))
    offline = replay.offline_examples(log_dir, spec=ALL_KINDS)   # the example generator's examples
    if not made:
        _train(offline, root, model_dir)
        (root / "done").touch()
    return log_dir, model_dir, offline


def _train(offline: tuple, tmp, model_dir: str) -> None:
    """Trains the tiny model on ``offline``'s examples (the real tf.Transform) and exports it."""
    import tensorflow as tf

    from feedrank.train import export, trainer
    from tests.helpers.model_harness import TINY
    from tests.helpers.transform import analyze_and_transform

    raw_file = str(tmp / "raw.gz")
    with tf.io.TFRecordWriter(raw_file, options="GZIP") as w:
        for record in offline[3].values():
            w.write(record)
    transformed_file, tft_out = analyze_and_transform([raw_file], str(tmp / "tft"), ALL_KINDS)
    settings = {**TINY, "model": "dnn", "epochs": 1, "batch_size": 128, "declared_features": ALL_KINDS.to_json()}
    model, _ = trainer.train([transformed_file], [transformed_file], tft_out, settings, spec=ALL_KINDS)
    export.export(model, tft_out, os.path.join(model_dir, "1700000000"), spec=ALL_KINDS)


def _answer(url: str, body: object = None) -> Tuple[int, Dict]:
    """(status, JSON body) of a GET, or of a POST of ``body``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_answering(url: str, proc, log_path: str, timeout_s: float = 120.0) -> None:
    """Polls ``url`` until the server answers at all (ready or not)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {open(log_path).read()[-3000:]}")
        try:
            _answer(url)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    raise TimeoutError(f"{url} never answered")


@pytest.fixture(scope="module")
def stack(trained, redis_server, tmp_path_factory):  # noqa: F811
    """The predictor on the model directory and the transformer on its declaration, as
    ``make serve`` starts them: (transformer URL, the served version's declaration).  The
    transformer starts on a store loaded with the built-in contract: without the declared columns."""
    log_dir, model_dir, _ = trained
    tmp = tmp_path_factory.mktemp("declared_stack")
    source = serving_stack.predictor_source(model_dir, "", "")
    declaration = serving_stack.declaration_for(model_dir, source, str(tmp))
    bootstrap.bootstrap(redis_server.client(), log_dir, redis_layout.Keys(PREFIX), force=True, spec=F.BUILTIN)
    p_port, t_port = procs.free_port(), procs.free_port()
    started = []
    try:
        started.append(procs.start_server("serving.predictor", [
            *source, "--model-name", MODEL, "--http-port", str(p_port)], str(tmp / "predictor.log")))
        procs.wait_ready(f"http://127.0.0.1:{p_port}/v2/models/{MODEL}/ready", 300, started[-1],
                         str(tmp / "predictor.log"))
        started.append(procs.start_server("serving.transformer", [
            "--model-name", MODEL, "--predictor-url", f"http://127.0.0.1:{p_port}", "--redis", redis_server.url,
            "--prefix", PREFIX, "--http-port", str(t_port), "--redis-timeout-ms", "2000", "--no-log-events",
            "--model", declaration], str(tmp / "transformer.log")))
        url = f"http://127.0.0.1:{t_port}"
        _wait_answering(f"{url}/v1/models/{MODEL}", started[-1], str(tmp / "transformer.log"))
        yield url, declaration
    finally:
        for proc in reversed(started):
            procs.stop(proc)


def _requests(examples: Dict[str, Dict[str, list]]) -> List[Tuple[int, str, List[str]]]:
    """(second, user, impression ids) of `SECONDS` seconds, each with one user's
    `MIN_CANDIDATES`+ impressions, spread over the log's second half (users have a history)."""
    by_key: Dict[Tuple[int, str], List[str]] = {}
    for imp_id, ex in examples.items():
        by_key.setdefault((ex[F.TS][0], ex[F.USER_ID][0]), []).append(imp_id)
    ts = sorted(t for t, _ in by_key)
    half = ts[len(ts) // 2]
    keys = sorted(k for k, ids in by_key.items() if k[0] >= half and len(ids) >= MIN_CANDIDATES)
    seconds = sorted({t for t, _ in keys})
    picked = {seconds[i] for i in np.linspace(0, len(seconds) - 1, SECONDS).astype(int)}
    return [(t, u, sorted(by_key[t, u])) for t, u in keys if t in picked]


def _truncated_log(log_dir: str, out: str, t: int) -> str:
    """The log with only the events strictly before second ``t`` (the tables whole)."""
    H.copy_log(log_dir, out)
    events = H.load(out)
    H.save(events[events.ts < t].reset_index(drop=True), out)
    return out


def _rank(url: str, user: str, candidates: List[str], t: int) -> Dict:
    """The transformer's answer ranking ``candidates`` for ``user`` at second ``t`` (not degraded)."""
    body = {"user_id": user, "candidates": candidates, "context": {"ts": t}}
    req = urllib.request.Request(f"{url}/v1/models/{MODEL}:predict", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert "X-Feedrank-Degraded" not in r.headers
        return json.loads(r.read())


def test_raw_inputs_hold_every_declared_kind_of_both_tables():
    """The online features of the contract: a stored value, a missing cell and an unknown
    post / user get the example generator's values; the v1 request shapes the bags."""
    stored = {"item_title": ["a", "b", "c", "d", "e", "f"], "item_area_m2": 42.0, "item_seller": "dealer"}
    items = online.ItemStore.from_hash({"p1": redis_layout.encode_item("c1", "r1", 10.0, stored),
                                        "p2": redis_layout.encode_item("c2", "r2", 20.0, {"item_seller": "shop"})})
    user = online.empty_user()
    user.attributes = {"user_occupation": "student", "user_interests": ["cars", "pets", "garden", "music"]}
    inputs = online.raw_inputs(user, ["p1", "p2", "unknown"], items, [0.0] * 3, [0.0] * 3, 1_700_000_000,
                               ALL_KINDS)
    assert inputs["item_seller"] == ["dealer", "shop", ""] and inputs[F.CATEGORY_ID.name] == ["c1", "c2", ""]
    assert inputs["item_area_m2"] == [42.0, -1.0, -1.0]
    assert inputs["item_title"] == [["a", "b", "c", "d", "e"], [], []]
    assert inputs["user_occupation"] == ["student"] and inputs["user_age_years"] == [30.0]
    assert inputs["user_interests"] == ["cars", "pets", "garden"]
    assert set(inputs) == set(ALL_KINDS.features_of_side("user")) | set(ALL_KINDS.features_of_side("candidate"))
    body = online.v1_request(inputs, ALL_KINDS)["inputs"]
    assert body["user_interests"] == [["cars", "pets", "garden"]] and body[F.CLICK_ITEMS.name] == [[""]]
    assert body["item_title"] == [["a", "b", "c", "d", "e"], [""] * 5, [""] * 5]
    assert body["item_seller"] == ["dealer", "shop", ""] and body["user_age_years"] == [30.0]
    # the built-in contract sends none of them
    builtin = online.raw_inputs(user, ["p1"], items, [0.0], [0.0], 1, F.BUILTIN)
    assert set(builtin) == set(F.BUILTIN.features_of_side("user")) | set(F.BUILTIN.features_of_side("candidate"))


def test_not_ready_while_the_store_lacks_a_declared_column(trained, stack, redis_server):  # noqa: F811
    """The store records what it holds; the transformer reads that record and is not ready,
    naming every missing column, until the store holds them (loaded again: ready)."""
    log_dir, _, (_, _, examples, _) = trained
    url, declaration = stack
    spec, keys = declared.spec_from_model(declaration), redis_layout.Keys(PREFIX)
    client = redis_server.client()
    if not declared.missing_columns(spec, client.hgetall(keys.meta)):    # another test seeded it meanwhile
        bootstrap.bootstrap(client, log_dir, keys, force=True, spec=F.BUILTIN)
    status, body = _answer(f"{url}/v1/models/{MODEL}")
    assert status == 503
    for c in spec.declared:
        assert f"{c.table}.{c.column} ({c.kind}" in body["error"], body
    assert "items.title (tokens, max_tokens=5: not stored)" in body["error"]
    imp = next(iter(examples.values()))
    status, body = _answer(f"{url}/v1/models/{MODEL}:predict",
                           {"user_id": imp[F.USER_ID][0], "candidates": imp[F.ITEM_ID.name]})
    assert status == 503 and "users.interests (tokens, max_tokens=3: not stored)" in body["error"], body
    # the store holds the columns with another declaration: still not ready
    other = F.FeatureSpec(tuple(F.Declared(c.table, c.column, c.kind, default=c.default, max_tokens=2)
                                for c in spec.declared))
    assert bootstrap.ensure_columns(client, log_dir, keys, other)
    status, body = _answer(f"{url}/v1/models/{MODEL}")
    assert status == 503 and "items.title (stored as tokens, max_tokens=2, the model reads tokens, " \
                             "max_tokens=5)" in body["error"], body
    assert "items.seller" not in body["error"]
    assert len(bootstrap.ensure_columns(client, log_dir, keys, spec)) == 2     # the two token bags
    assert bootstrap.ensure_columns(client, log_dir, keys, spec) == []
    assert _answer(f"{url}/v1/models/{MODEL}") == (200, {"name": MODEL, "ready": True})


def test_every_declared_kind_ranks_online_as_scored_offline(trained, stack, redis_server,  # noqa: F811
                                                           tmp_path):
    import tensorflow as tf

    log_dir, model_dir, (_, _, examples, serialized) = trained
    url, declaration = stack
    spec = declared.spec_from_model(declaration)   # what `make serve` seeds Redis with
    assert spec == ALL_KINDS and {c.kind for c in spec.declared_of("items")} == set(F.DECLARED_KINDS)
    assert {c.kind for c in spec.declared_of("users")} == set(F.DECLARED_KINDS)
    score_offline = tf.saved_model.load(declaration).signatures["serving_tf_example"]
    keys = redis_layout.Keys(PREFIX)
    requests = _requests(examples)
    assert len({t for t, _, _ in requests}) == SECONDS
    compared: List[str] = []
    for t in sorted({t for t, _, _ in requests}):
        counts = bootstrap.bootstrap(redis_server.client(), _truncated_log(log_dir, str(tmp_path / str(t)), t),
                                     keys, force=True, spec=spec)
        assert counts["max_ts"] < t and counts["events_applied"] > 0
        for _, user, ids in (r for r in requests if r[0] == t):
            items = [examples[i][F.ITEM_ID.name][0] for i in ids]
            body = _rank(url, user, items, t)
            got = {r["post_id"]: r["score"] for r in body["ranking"]}
            want = score_offline(examples=tf.constant([serialized[i] for i in ids]))["probabilities"].numpy()
            np.testing.assert_allclose([got[i] for i in items], want.reshape(-1), atol=1e-5, rtol=0,
                                       err_msg=f"user {user} at {t}")
            compared += ids
    assert len(compared) >= SECONDS * MIN_CANDIDATES
    # the comparison is not vacuous: every declared feature varies over the compared examples
    for c in spec.declared:
        values = {json.dumps(examples[i][c.feature_name]) for i in compared}
        assert len(values) >= 2, (c.feature_name, values)

    # the user's declared columns are read from Redis per request: other values, other scores
    t, user, ids = requests[-1]
    items = [examples[i][F.ITEM_ID.name][0] for i in ids]
    before = [r["score"] for r in sorted(_rank(url, user, items, t)["ranking"], key=lambda r: r["post_id"])]
    redis_server.client().hset(keys.user_attrs, user, json.dumps(
        {"user_occupation": "retired", "user_age_years": 99.0, "user_interests": ["books"]}))
    after = [r["score"] for r in sorted(_rank(url, user, items, t)["ranking"], key=lambda r: r["post_id"])]
    assert not np.allclose(before, after, atol=1e-6, rtol=0)


def test_replay_compares_every_input_of_the_signature(trained, stack, redis_server):  # noqa: F811
    """The alignment replay of the model's log, with the contract read from the served
    version, compares exactly the inputs of its ``serving_default``: 0 mismatches."""
    log_dir, _, offline = trained
    _, declaration = stack
    spec = declared.spec_from_model(declaration)
    report = replay.replay(redis_server.client(), log_dir, redis_layout.Keys("declreplay"), offline=offline,
                           spec=spec)
    assert report.impressions == len(offline[2]) and report.mismatched == 0, dict(report.by_feature)
    assert report.inputs == replay.signature_inputs(declaration)
    assert {c.feature_name for c in spec.declared} <= report.inputs
