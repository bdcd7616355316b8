"""Offline/online alignment: a simulated log replayed through the stream and
the updater gives, at every impression, the same raw features (sequences,
post counters, user counters, session share and recency, crosses,
attributes) as the example generator's example.  The online side is the
request the transformer sends the predictor, built by ``make serve``'s own
code, and every input of the serving signature is compared."""
from __future__ import annotations

import json
import os
import shutil
import urllib.request

import numpy as np
import pandas as pd
import pytest

from feedrank import features as F
from feedrank.events import contract
from serving.common import procs
from serving.features import declared, redis_layout, replay
from tests.helpers import examplegen as H
from tests.helpers.declared_columns import ALL_KINDS, SELLERS, add_columns
from tests.helpers.redis_stack import redis_server  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    """A simulated log plus the hard cases: events at exactly an impression's
    second (a click on the impressed item, a search, a conversion, another
    user's click and impression of the same item), duplicate event ids and
    rows the example generator quarantines."""
    d = H.make_log(str(tmp_path_factory.mktemp("log")))
    ev = H.load(d)
    imps = ev[ev.event == contract.IMPRESSION].sample(60, random_state=1)
    other = ev.user_id.iloc[0]
    extra = []
    for j, r in enumerate(imps.itertuples()):
        base = dict(request_id="", query="", dwell_s=np.nan, ts=r.ts)
        extra += [dict(base, event_id=f"tie{j}a", user_id=r.user_id, item_id=r.item_id, event="click"),
                  dict(base, event_id=f"tie{j}b", user_id=r.user_id, item_id="", event="search",
                       query="tie_token other_token"),
                  dict(base, event_id=f"tie{j}c", user_id=r.user_id, item_id=r.item_id, event="conversion"),
                  dict(base, event_id=f"tie{j}d", user_id=other, item_id=r.item_id, event="click"),
                  dict(base, event_id=f"tie{j}e", user_id=other, item_id=r.item_id, event="impression")]
    dups = ev.sample(30, random_state=2).assign(ts=lambda x: x.ts + 5)      # later copies: dropped
    bad = ev.sample(10, random_state=3).assign(event_id=lambda x: "bad" + x.event_id,
                                                item_id="no_such_post", event="click")
    ev = pd.concat([ev, pd.DataFrame(extra), dups, bad], ignore_index=True)
    H.save(ev, d)
    return d


@pytest.fixture(scope="module")
def offline(log_dir):
    """The example generator's examples of the log (computed once)."""
    return replay.offline_examples(log_dir)


@pytest.fixture(scope="module")
def report(redis_server, log_dir, offline):  # noqa: F811
    return replay.replay(redis_server.client(), log_dir, redis_layout.Keys("align"), offline=offline)


def signature(spec: F.FeatureSpec) -> set:
    """The input names of the ``serving_default`` an export with contract ``spec`` has."""
    from feedrank.train import export

    return set(export.serving_input_signature(spec))


def test_replay_has_zero_mismatches(report, offline):
    assert report.impressions == len(offline[2]) > 1000
    assert report.inputs == signature(F.BUILTIN)      # every input of the signature is compared
    assert report.mismatched == 0, (dict(report.by_feature), report.examples[:2])
    assert report.rate == 0.0
    stats = report.updater_stats
    assert stats[f"rejected_{contract.UNKNOWN_ITEM}"] == 10 and stats["duplicates"] == 30


def test_replay_sees_what_it_compares(offline):
    """The comparison is not vacuous: the features vary."""
    offline = offline[2]
    clicks = [len(ex.get(F.CLICK_ITEMS.name, [])) for ex in offline.values()]
    hist = [ex[F.ITEM_HIST_CLICKS.name][0] for ex in offline.values()]
    assert max(clicks) > 3 and sum(c > 0 for c in clicks) > 100 and max(hist) > 0
    assert len({ex[F.INTEREST_CATEGORY_SHARE.name][0] for ex in offline.values()}) > 5
    assert any(ex[F.REGION_MATCH.name][0] == 1.0 for ex in offline.values())
    for d in F.USER_COUNTER_FEATURES + F.SEEN_FEATURES:          # compared too, and not constant
        assert len({ex[d.name][0] for ex in offline.values()}) >= 3, d.name
    share = [ex[F.SESSION_CATEGORY_SHARE.name][0] for ex in offline.values()]
    recency = [ex[F.CATEGORY_RECENCY_H.name][0] for ex in offline.values()]
    assert 0 < sum(s == 0.0 for s in share) < len(share)
    assert 0 < sum(r == F.RECENCY_CAP_H for r in recency) < len(recency)


def test_same_second_leak_is_detected(redis_server, log_dir, offline):  # noqa: F811
    """A reader that applies a second's events before reading it is caught."""
    leaky = replay.replay(redis_server.client(), log_dir, redis_layout.Keys("leak"), naive=True, offline=offline)
    assert leaky.mismatched >= 60
    for name in (F.SEARCH_TOKENS.name, F.CLICK_ITEMS.name, F.CONV_ITEMS.name,
                 F.ITEM_HIST_IMPRESSIONS.name, F.ITEM_HIST_CLICKS.name, F.USER_ITEM_IMPRESSIONS.name):
        assert leaky.by_feature[name] >= 60, dict(leaky.by_feature)


# every kind on both tables (tests/helpers/declared_columns.py) and a categorical with empty cells
DECLARED = F.FeatureSpec(ALL_KINDS.declared + (F.Declared("users", "gender", "categorical"),))


def test_replay_of_declared_columns_has_zero_mismatches(redis_server, log_dir, tmp_path):  # noqa: F811
    """Declared item and user columns of every kind (stored by the loader with the
    feature contract) are served as the example generator writes them, unknown ids
    and missing cells included."""
    decl_log = add_columns(H.copy_log(log_dir, str(tmp_path / "log")))
    offline = replay.offline_examples(decl_log, spec=DECLARED)
    rep = replay.replay(redis_server.client(), decl_log, redis_layout.Keys("decl"), offline=offline, spec=DECLARED)
    examples = list(offline[2].values())
    for c in DECLARED.declared:
        assert c.feature_name in examples[0]
    titles = [ex["item_title"] for ex in examples]
    assert all(1 <= len(t) <= 5 for t in titles) and len({tuple(t) for t in titles}) > 50
    area = [ex["item_area_m2"][0] for ex in examples]
    assert -1.0 in area and max(area) > 5.0            # housing posts have an area, others the default
    assert {ex["item_seller"][0] for ex in examples} >= {"", *SELLERS}
    assert {ex["user_occupation"][0] for ex in examples} >= {"student", "relocating"}
    assert "" in {ex["user_gender"][0] for ex in examples}
    ages = {ex["user_age_years"][0] for ex in examples}
    assert 30.0 in ages and len(ages) > 10
    interests = [ex["user_interests"] for ex in examples]
    assert [] in interests and max(len(t) for t in interests) == 3
    # the seller of every history post too: the four sellers and "" (a post without one) beside real posts
    history = [v for ex in examples for s in DECLARED.attribute_sequences for v in ex[s.name]]
    assert set(history) == {"", *SELLERS}
    assert all(len(ex[s.name]) == len(ex[F.ITEMS_OF[s.channel].name])
               for ex in examples for s in DECLARED.attribute_sequences)
    assert rep.impressions == len(examples) and rep.mismatched == 0, (dict(rep.by_feature), rep.examples[:2])
    assert rep.inputs == signature(DECLARED) and {c.feature_name for c in DECLARED.declared} <= rep.inputs
    assert {s.name for s in DECLARED.attribute_sequences} <= rep.inputs


@pytest.fixture(scope="module")
def ranking_stack(first_run, redis_server, tmp_path_factory):  # noqa: F811
    """Predictor on the tiny pipeline's pushed model + transformer on the Redis:
    (transformer URL, pushed model path)."""
    if not os.path.exists(procs.SERVING_PYTHON):
        pytest.fail("the serving environment is missing: run `make serving-install`")
    pushed = first_run[1]["push"]["path"]
    tmp = tmp_path_factory.mktemp("stack")
    shutil.copytree(pushed, tmp / "store" / os.path.basename(pushed.rstrip("/")))
    p_port, t_port = procs.free_port(), procs.free_port()
    started = []
    try:
        started.append(procs.start_server("serving.predictor", [
            "--model-dir", str(tmp / "store"), "--model-name", "feedrank", "--http-port", str(p_port)],
            str(tmp / "predictor.log")))
        procs.wait_ready(f"http://127.0.0.1:{p_port}/v2/models/feedrank/ready", 240, started[-1],
                         str(tmp / "predictor.log"))
        started.append(procs.start_server("serving.transformer", [
            "--model-name", "feedrank", "--predictor-url", f"http://127.0.0.1:{p_port}",
            "--redis", redis_server.url, "--prefix", "e2e", "--http-port", str(t_port),
            "--redis-timeout-ms", "2000", "--model", pushed], str(tmp / "transformer.log")))
        url = f"http://127.0.0.1:{t_port}"
        procs.wait_ready(f"{url}/v1/models/feedrank", 120, started[-1], str(tmp / "transformer.log"))
        yield url, pushed
    finally:
        for proc in reversed(started):
            procs.stop(proc)


@pytest.mark.e2e
def test_online_ranking_equals_offline_scores(ranking_stack, redis_server, tiny_data):  # noqa: F811
    """Replaying the tiny log, the transformer's ranking of a user's
    impressions at their second scores each post as the pushed model scores
    the offline example (1e-5)."""
    import tensorflow as tf

    url, pushed = ranking_stack
    offline = replay.offline_examples(str(tiny_data), spec=declared.spec_from_model(pushed))
    examples, serialized = offline[2], offline[3]
    sent = []

    def rank(t, impression_ids):
        by_user = {}
        for i in impression_ids:
            by_user.setdefault(examples[i][F.USER_ID][0], []).append(i)
        for user, ids in by_user.items():
            if len(sent) >= 60 or (len(ids) < 2 and len(sent) % 2):
                continue
            body = {"user_id": user, "candidates": [examples[i][F.ITEM_ID.name][0] for i in ids],
                    "context": {"ts": t}}
            req = urllib.request.Request(f"{url}/v1/models/feedrank:predict", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert "X-Feedrank-Degraded" not in r.headers
                sent.append((ids, json.loads(r.read())))

    spec = declared.spec_from_model(pushed)
    report = replay.replay(redis_server.client(), str(tiny_data), redis_layout.Keys("e2e"), offline=offline,
                           on_second=rank, spec=spec)
    assert report.mismatched == 0 and len(sent) == 60
    assert report.inputs == replay.signature_inputs(pushed)
    score_offline = tf.saved_model.load(pushed).signatures["serving_tf_example"]
    multi = 0
    for ids, body in sent:
        want = score_offline(examples=tf.constant([serialized[i] for i in ids]))["probabilities"].numpy()
        got = {}
        for r in body["ranking"]:
            got.setdefault(r["post_id"], r["score"])
        items = [examples[i][F.ITEM_ID.name][0] for i in ids]
        np.testing.assert_allclose([got[it] for it in items], want.reshape(-1), atol=1e-5, rtol=0)
        scores = [r["score"] for r in body["ranking"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == len(ids)
        multi += len(ids) > 1
    assert multi >= 20


def _time_versioned(log_dir: str) -> dict:
    """Rewrites the log's items and users tables (declared columns included) with
    ``valid_from``: a third of the posts change category, region, price and seller mid-log;
    every 7th post has no row before its first impression's second + 1 (an impression
    before it, and the updater's event category, see no row); every 5th post has a row
    dated after the log (never used); every 4th user changes region and age mid-log; every
    9th user has two rows of the same time, of which the first in file order holds.
    Returns the times and ids it used."""
    ev, items, users = H.load(log_dir), H.load(log_dir, "items"), H.load(log_dir, "users")
    mid, end = int(ev.ts.median()), int(ev.ts.max())
    first_imp = ev[ev.event == contract.IMPRESSION].groupby("item_id").ts.min()
    items = items.assign(valid_from=np.nan)
    changed = items.iloc[::3].assign(category_id=lambda d: d.category_id + "_v2",
                                     region_id=lambda d: d.region_id + "_v2", price=lambda d: d.price * 3 + 1,
                                     seller="seller_v2", valid_from=float(mid))
    late = items.iloc[1::7].item_id
    late = late[late.isin(first_imp.index)]
    items.loc[items.item_id.isin(late), "valid_from"] = first_imp[late].to_numpy() + 1.0
    future = items.iloc[2::5].assign(category_id="future_cat", price=999.0, valid_from=float(end + 3600))
    users = users.assign(valid_from=np.nan)
    moved = users.iloc[::4].assign(region_id=lambda d: d.region_id + "_moved", age_years=99.0,
                                   valid_from=float(mid))
    twins = users.iloc[1::9].assign(region_id="never_used")      # same id and valid_from, later in the file
    H.save(pd.concat([items, changed, future], ignore_index=True), log_dir, "items")
    H.save(pd.concat([users, moved, twins], ignore_index=True), log_dir, "users")
    return dict(mid=mid, late=set(late), changed=set(changed.item_id))


def test_replay_of_time_versioned_attributes_has_zero_mismatches(redis_server, log_dir, tmp_path):  # noqa: F811
    """Items and users rows with ``valid_from`` (changes mid-log, posts with no row yet,
    rows dated after the log, same-time twins): the transformer's request, the updater's
    per-category counters and the example generator agree at every impression."""
    vlog = add_columns(H.copy_log(log_dir, str(tmp_path / "log")))
    used = _time_versioned(vlog)
    offline = replay.offline_examples(vlog, spec=DECLARED)
    examples = offline[2]
    cats = {(ex["item_id"][0], ex["ts"][0] >= used["mid"]): ex["category_id"][0] for ex in examples.values()}
    # not vacuous: a changed post shows its old and its new row, a late post an empty category
    # before its row, and no example ever shows a future row
    assert any(c.endswith("_v2") for (i, after), c in cats.items() if after and i in used["changed"])
    assert any(not c.endswith("_v2") for (i, after), c in cats.items() if not after and i in used["changed"])
    assert any(ex["category_id"] == [""] for ex in examples.values() if ex["item_id"][0] in used["late"])
    assert not any("future_cat" in ex["category_id"] for ex in examples.values())
    # a history post shows its seller as of the impression: the old one before the change, the new after
    sellers = {(ex["ts"][0] >= used["mid"], v) for ex in examples.values() for v in ex["view_item_seller"]}
    assert (True, "seller_v2") in sellers and (False, "seller_v2") not in sellers
    regions = {ex["user_region_id"][0] for ex in examples.values()}
    assert any(r.endswith("_moved") for r in regions) and "never_used" not in regions
    rep = replay.replay(redis_server.client(), vlog, redis_layout.Keys("versioned"), offline=offline, spec=DECLARED)
    assert rep.impressions == len(examples) and rep.mismatched == 0, (dict(rep.by_feature), rep.examples[:2])
