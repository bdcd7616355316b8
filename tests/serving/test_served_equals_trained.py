"""``make serve`` ranks as the model scores offline.

``python -m serving.stack`` is started as ``make serve`` starts it (on free
ports) on the tiny model with declared columns of every kind on both tables
(`test_declared_serving.trained`) and the log it was trained on: Redis, the
bulk load with the contract of the served version, the updater, the
predictor and the transformer.  Probe impressions one minute after the log's
last event (each for another user, each post once, so the impressions the
stack logs for one request never reach another's features) are ranked through
the transformer; the scores equal the exported model's ``serving_tf_example``
scores of the example generator's examples of the same impressions (the log
plus the probes) to 1e-5.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd
import pytest

from feedrank import features as F
from feedrank.events import contract
from serving.common import procs
from serving.features import declared, replay
from tests.helpers import examplegen as H
from tests.helpers.declared_columns import ALL_KINDS
from tests.serving.test_declared_serving import _rank, trained  # noqa: F401 (trained: one model per session)

pytestmark = pytest.mark.usefixtures("serving_venv")  # skipped, or failed under make test, without it
MODEL = "feedrank"
USERS = 10           # probe requests, one user each
CANDIDATES = 6       # posts per request
PROBE_AFTER_S = 60   # the probes' second, after the log's last event


@pytest.fixture(scope="module")
def probes(trained, tmp_path_factory) -> Tuple[int, Dict[str, List[str]], Dict, Dict]:  # noqa: F811
    """(probe second, user -> probe impression ids, examples, serialized examples): the example
    generator's examples of probe impressions appended to the served log."""
    log_dir, _, _ = trained
    events = H.load(log_dir)
    t = int(events.ts.max()) + PROBE_AFTER_S
    rng = np.random.default_rng(3)
    active = events.user_id.value_counts().index[:3 * USERS]    # users with a history
    users = list(rng.choice(active, USERS, replace=False))
    posts = rng.choice(H.load(log_dir, "items").item_id.unique(), USERS * CANDIDATES, replace=False)
    rows = [H.event(f"probe-{u}-{j}", str(user), str(posts[u * CANDIDATES + j]), contract.IMPRESSION, t)
            for u, user in enumerate(users) for j in range(CANDIDATES)]
    probe_log = H.copy_log(log_dir, str(tmp_path_factory.mktemp("probe_log")))
    H.save(pd.concat([events, pd.DataFrame(rows).astype(events.dtypes.to_dict())], ignore_index=True), probe_log)
    _, _, examples, serialized = replay.offline_examples(probe_log, spec=ALL_KINDS)
    requests: Dict[str, List[str]] = {}
    for r in rows:
        assert r["event_id"] in examples, r
        requests.setdefault(r["user_id"], []).append(r["event_id"])
    return t, requests, examples, serialized


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):  # noqa: F811
    """``python -m serving.stack`` with ``make serve``'s flags on free ports: (transformer URL,
    Redis URL).  Stopped with Ctrl-C's signal."""
    log_dir, model_dir, _ = trained
    tmp = tmp_path_factory.mktemp("served")
    ports = {name: procs.free_port() for name in ("redis", "predictor", "transformer")}
    stack_log = str(tmp / "stack.log")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.stack", "--log", log_dir, "--model", model_dir,
         "--redis-port", str(ports["redis"]), "--predictor-port", str(ports["predictor"]),
         "--transformer-port", str(ports["transformer"]), "--workdir", str(tmp / "w"),
         "--redis-timeout-ms", "5000"],   # a loaded test machine: never rank degraded here
        cwd=procs.REPO_ROOT, env=procs.serving_env(), stdout=open(stack_log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{ports['transformer']}"
    try:
        procs.wait_ready(f"{url}/v1/models/{MODEL}", 600, proc, stack_log)
        yield url, f"redis://127.0.0.1:{ports['redis']}/0"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_make_serve_ranks_as_the_model_scores_offline(trained, served, probes):  # noqa: F811
    import redis
    import tensorflow as tf

    _, model_dir, _ = trained
    url, redis_url = served
    t, requests, examples, serialized = probes
    version = os.path.join(model_dir, max(os.listdir(model_dir), key=int))
    spec = declared.spec_from_model(version)
    assert spec == ALL_KINDS
    # the stack seeded exactly the declared columns the served model reads
    meta = redis.Redis.from_url(redis_url, decode_responses=True).hgetall("fr:meta")
    for table in F.DECLARED_TABLES:
        assert json.loads(meta[declared.seeded_field(table)]) == [declared.stored_form(c)
                                                                  for c in spec.declared_of(table)]
    score_offline = tf.saved_model.load(version).signatures["serving_tf_example"]
    compared: List[str] = []
    for user, ids in requests.items():
        posts = [examples[i][F.ITEM_ID.name][0] for i in ids]
        body = _rank(url, user, posts, t)
        got = {r["post_id"]: r["score"] for r in body["ranking"]}
        want = score_offline(examples=tf.constant([serialized[i] for i in ids]))["probabilities"].numpy()
        np.testing.assert_allclose([got[p] for p in posts], want.reshape(-1), atol=1e-5, rtol=0,
                                   err_msg=f"user {user}")
        compared += ids
    assert len(compared) == USERS * CANDIDATES
    # not vacuous: the histories are there and every declared feature varies
    assert sum(bool(examples[i][F.CLICK_ITEMS.name]) for i in compared) >= USERS
    for c in spec.declared:
        assert len({json.dumps(examples[i][c.feature_name]) for i in compared}) >= 2, c.feature_name
    # the history posts' sellers too, a post without one ("", kept beside its post) among them
    sellers = {v for i in compared for s in spec.attribute_sequences for v in examples[i][s.name]}
    assert "" in sellers and len(sellers) >= 3
