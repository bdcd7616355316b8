"""Example-generation semantics on simulated data, the splits, sampling,
quarantined duplicates and the TFX component under LocalDagRunner."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from feedrank import features as F
from feedrank.events import contract
from feedrank.examples import build
from tests.helpers import examplegen as H

WINDOW = 1800


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    """A simulated log with extra events tied to impression times: a click on
    the impressed item at exactly the impression ts (label yes, history no),
    a search and a conversion at the same ts, and another user's click."""
    d = H.make_log(str(tmp_path_factory.mktemp("log")))
    ev = H.load(d)
    imps = ev[ev.event == contract.IMPRESSION].sample(40, random_state=0)
    other = ev.user_id.iloc[0]
    extra = []
    for j, r in enumerate(imps.itertuples()):
        base = dict(request_id="", query="", dwell_s=np.nan, ts=r.ts)
        extra.append(dict(base, event_id=f"tie{j}a", user_id=r.user_id, item_id=r.item_id, event="click"))
        extra.append(dict(base, event_id=f"tie{j}b", user_id=r.user_id, item_id="", event="search",
                          query="tie_token other_token"))
        extra.append(dict(base, event_id=f"tie{j}c", user_id=r.user_id, item_id=r.item_id,
                          event="conversion"))
        extra.append(dict(base, event_id=f"tie{j}d", user_id=other, item_id=r.item_id, event="click"))
    ev = pd.concat([ev, pd.DataFrame(extra)], ignore_index=True)
    H.save(ev, d)
    return d


@pytest.fixture(scope="module")
def result(log_dir, tmp_path_factory):
    return H.run(log_dir, str(tmp_path_factory.mktemp("out")))


@pytest.fixture(scope="module")
def examples(result):
    return {k: H.to_dict(v) for k, v in H.by_impression(result["output_dir"]).items()}


def _target(ev: pd.DataFrame, act) -> str:
    """The impression (event_id) a click/conversion labels, "" for none: the latest
    impression of its request, else of its (user, item), at most WINDOW before it."""
    imps = ev[(ev.event == "impression") & (ev.user_id == act.user_id) & (ev.item_id == act.item_id)]
    if act.request_id and (imps.request_id == act.request_id).any():
        imps = imps[imps.request_id == act.request_id]
    imps = imps[imps.ts <= act.ts].sort_values(["ts", "event_id"])
    if imps.empty or act.ts - imps.ts.iloc[-1] > WINDOW:
        return ""
    return imps.event_id.iloc[-1]


def _reference(ev: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, imp) -> dict:
    """Plain pandas recomputation of one impression's features."""
    ev = ev.sort_values(["ts", "event_id"])
    cat = items.set_index("item_id").category_id
    reg = items.set_index("item_id").region_id
    mine = ev[(ev.user_id == imp.user_id) & (ev.ts < imp.ts)]
    clicks = mine[mine.event == "click"].tail(F.CLICK_LEN)
    convs = mine[mine.event == "conversion"].tail(F.CONVERSION_LEN)
    views = mine[mine.event == "view"].tail(F.VIEW_LEN)
    searches = [(t, ts) for q, ts in zip(mine[mine.event == "search"]["query"], mine[mine.event == "search"].ts)
                for t in q.split()][-F.SEARCH_LEN:]
    tokens = [t for t, _ in searches]

    def ages(times) -> list:   # bucket labels of impression ts minus event ts (features.AGE_BOUNDS_S)
        return [F.AGE_LABELS[sum(imp.ts - int(t) >= b for b in F.AGE_BOUNDS_S)] for t in times]
    later = ev[(ev.user_id == imp.user_id) & (ev.item_id == imp.item_id)
               & (ev.ts >= imp.ts) & (ev.ts <= imp.ts + WINDOW)]
    prior = ev[(ev.item_id == imp.item_id) & (ev.ts < imp.ts)]
    n_imp, n_clk = (prior.event == "impression").sum(), (prior.event == "click").sum()
    user_region = users.set_index("user_id").region_id.get(imp.user_id, "")
    click_cats = [cat[i] for i in clicks.item_id]
    price = items.set_index("item_id").price.get(imp.item_id)
    return {
        "item_id": [imp.item_id], "category_id": [cat[imp.item_id]], "region_id": [reg[imp.item_id]],
        "user_region_id": [user_region], "user_id": [imp.user_id], "impression_id": [imp.event_id],
        "ts": [imp.ts], "price": [np.float32(price if np.isfinite(price) else 0.0)],
        "click_item_ids": list(clicks.item_id), "click_category_ids": click_cats,
        "click_region_ids": [reg[i] for i in clicks.item_id],
        "conv_item_ids": list(convs.item_id), "conv_category_ids": [cat[i] for i in convs.item_id],
        "view_item_ids": list(views.item_id), "view_category_ids": [cat[i] for i in views.item_id],
        "view_region_ids": [reg[i] for i in views.item_id],
        "search_tokens": tokens,
        "click_ages": ages(clicks.ts), "view_ages": ages(views.ts), "conv_ages": ages(convs.ts),
        "search_ages": ages(ts for _, ts in searches),
        "label": [int(any(_target(ev, c) == imp.event_id for c in later[later.event == "click"].itertuples()))],
        "conversion": [int(any(_target(ev, c) == imp.event_id
                               for c in later[later.event == "conversion"].itertuples()))],
        "item_hist_impressions": [np.float32(n_imp)], "item_hist_clicks": [np.float32(n_clk)],
        "item_hist_ctr": [np.float32((n_clk + F.CTR_PRIOR_CLICKS) / (n_imp + F.CTR_PRIOR_IMPRESSIONS))],
        "region_match": [np.float32(user_region != "" and user_region == reg[imp.item_id])],
        "interest_cat_share": [np.float32(np.mean([c == cat[imp.item_id] for c in click_cats])
                                          if click_cats else 0.0)],
        **_user_counters_reference(mine, cat, cat[imp.item_id], imp.ts),
        **_seen_reference(mine, imp.item_id, imp.ts),
    }


def _seen_reference(mine: pd.DataFrame, item: str, t: int) -> dict:
    """`features.SEEN_FEATURES`: the user's earlier impressions of the post, by a plain filter."""
    shown = mine[(mine.event == "impression") & (mine.item_id == item)].ts
    hours = min((t - shown.max()) / 3600.0, F.RECENCY_CAP_H) if len(shown) else F.RECENCY_CAP_H
    return {"user_item_impressions": [np.float32(len(shown))], "item_seen_recency_h": [np.float32(hours)]}


def _user_counters_reference(mine: pd.DataFrame, cat: pd.Series, c: str, t: int) -> dict:
    """`features.USER_COUNTER_FEATURES` by a plain loop over the user's earlier events."""
    in_c = mine.item_id.map(lambda i: cat.get(i, None) == c).to_numpy(dtype=bool)
    kinds = mine.event.to_numpy()
    n_imp, n_clk = (kinds == "impression").sum(), (kinds == "click").sum()
    c_imp, c_clk = ((kinds == "impression") & in_c).sum(), ((kinds == "click") & in_c).sum()
    times = mine.ts.to_numpy()
    start = len(times)                       # walk back while consecutive gaps are <= 1800 s
    prev = t
    while start > 0 and prev - times[start - 1] <= F.SESSION_GAP_S:
        start -= 1
        prev = times[start]
    sess = np.isin(kinds[start:], ["click", "view"])
    share = (sess & in_c[start:]).sum() / sess.sum() if sess.sum() else 0.0
    rec = np.isin(kinds, ["click", "view", "conversion"]) & in_c
    hours = min((t - times[rec].max()) / 3600.0, F.RECENCY_CAP_H) if rec.any() else F.RECENCY_CAP_H
    ctr = lambda k, i: np.float32((k + F.CTR_PRIOR_CLICKS) / (i + F.CTR_PRIOR_IMPRESSIONS))  # noqa: E731
    return {"user_hist_impressions": [np.float32(n_imp)], "user_hist_clicks": [np.float32(n_clk)],
            "user_hist_ctr": [ctr(n_clk, n_imp)], "user_cat_impressions": [np.float32(c_imp)],
            "user_cat_clicks": [np.float32(c_clk)], "user_cat_ctr": [ctr(c_clk, c_imp)],
            "session_cat_share": [np.float32(share)], "cat_recency_h": [np.float32(hours)]}


def test_features_match_pandas_reference(log_dir, result, examples):
    ev, items, users = H.load(log_dir), H.load(log_dir, "items"), H.load(log_dir, "users")
    imps = ev[ev.event == contract.IMPRESSION]
    assert result["censored_eval"] > 0 and result["impressions_warmup"] == 0
    assert len(examples) == len(imps) - result["censored_eval"]
    imps = imps[imps.event_id.isin(examples)]
    ties = ev[ev.event_id.str.startswith("tie")]
    tie_keys = set(zip(ties.user_id, ties.ts))
    tied = imps[[k in tie_keys for k in zip(imps.user_id, imps.ts)]]
    busy = imps[imps.user_id.isin(ev[ev.event == "click"].user_id.value_counts().index[:5])]
    sample = pd.concat([tied.head(20), busy.sample(40, random_state=1), imps.sample(60, random_state=2)])
    assert set(F.BUILTIN.raw_feature_spec()) == set(next(iter(examples.values())))
    for imp in sample.itertuples():
        got, want = examples[imp.event_id], _reference(ev, items, users, imp)
        assert set(got) == set(want)
        for name, value in want.items():
            assert got[name] == pytest.approx(value) if name in [d.name for d in F.BUILTIN.dense_features] \
                else got[name] == value, (imp.event_id, name, got[name], value)
    assert sum(e["label"][0] for e in examples.values()) > 0
    assert any(e["search_tokens"] for e in examples.values())
    assert any(e["view_item_ids"] for e in examples.values())
    for e in list(examples.values())[:300]:   # the pure crosses agree with the written ones
        assert build.crosses(e["user_region_id"][0], e["region_id"][0], e["click_category_ids"],
                             e["category_id"][0]) == pytest.approx(
            (e["region_match"][0], e["interest_cat_share"][0]))


def test_equal_timestamp_is_label_not_history(log_dir, examples):
    ev = H.load(log_dir)
    items, users = H.load(log_dir, "items"), H.load(log_dir, "users")
    ties = ev[ev.event_id.str.startswith("tie") & ev.event_id.str.endswith("a")]
    n = 0
    for t in ties.itertuples():
        imps = ev[(ev.event == "impression") & (ev.user_id == t.user_id) & (ev.item_id == t.item_id)
                  & (ev.ts == t.ts)]
        for imp in imps[imps.event_id.isin(examples)].itertuples():   # not the censored ones
            ex, want = examples[imp.event_id], _reference(ev, items, users, imp)
            assert ex["label"] == [1] and ex["conversion"] == [1]
            for name in ("click_item_ids", "search_tokens", "conv_item_ids"):
                assert ex[name] == want[name]
            assert ex["item_hist_clicks"] == pytest.approx(want["item_hist_clicks"])
            n += 1
    assert n >= 30


def test_encoder_is_deterministic_protobuf(result):
    from tensorflow.core.example import example_pb2

    recs = H.read_records(result["output_dir"], "train")
    for rec in recs[:500]:
        assert example_pb2.Example.FromString(rec).SerializeToString(deterministic=True) == rec


def test_splits_and_bounds(log_dir, result, examples):
    ev = H.load(log_dir)
    imp_ts = ev.ts[ev.event == contract.IMPRESSION]
    end = int(imp_ts.max())
    assert result["log_end_ts"] == end and result["first_impression_ts"] == int(imp_ts.min())
    assert result["eval_start_ts"] == end // 86400 * 86400                 # eval_days 1
    assert result["valid_start_ts"] == result["eval_start_ts"] - 86400     # valid_days 1
    assert result["train_start_ts"] == int(imp_ts.min()) // 86400 * 86400  # warmup_days 0
    got = {s: H.by_impression(result["output_dir"], (s,)) for s in ("train", "valid", "eval")}
    assert result["examples"] == {s: len(v) for s, v in got.items()} and all(got.values())
    ts = {s: [examples[i]["ts"][0] for i in v] for s, v in got.items()}
    assert result["train_start_ts"] <= min(ts["train"]) and max(ts["train"]) < result["valid_start_ts"]
    assert result["valid_start_ts"] <= min(ts["valid"]) and max(ts["valid"]) < result["eval_start_ts"]
    assert result["eval_start_ts"] <= min(ts["eval"]) and max(ts["eval"]) <= end - WINDOW
    assert result["positives"] == {s: sum(examples[i]["label"][0] for i in v) for s, v in got.items()}
    censored = imp_ts[imp_ts > end - WINDOW]
    assert result["censored_eval"] == len(censored) > 0
    with open(os.path.join(result["output_dir"], "summary.json")) as f:
        assert json.load(f)["censored_eval"] == len(censored)
    # the shuffles' spilled frames are gone once the run is done
    assert sorted(os.listdir(result["quarantine_dir"])) == ["quarantine.parquet", "summary.json"]


def test_negative_sampling(log_dir, result, tmp_path):
    full = {s: H.by_impression(result["output_dir"], (s,)) for s in ("train", "valid", "eval")}
    runs = [H.run(log_dir, str(tmp_path / f"r{i}"), negative_sampling_rate=0.3, seed=seed)
            for i, seed in enumerate((5, 5, 6))]
    got = [{s: H.by_impression(r["output_dir"], (s,)) for s in ("train", "valid", "eval")} for r in runs]
    assert got[0] == got[1]                       # deterministic
    assert set(got[0]["train"]) != set(got[2]["train"])   # seed matters
    assert got[0]["eval"] == full["eval"] and got[0]["valid"] == full["valid"]   # valid and eval untouched
    pos = {k for k, v in full["train"].items() if H.to_dict(v)["label"] == [1]}
    assert pos <= set(got[0]["train"])            # positives always kept
    n_neg = len(full["train"]) - len(pos)
    kept = len(got[0]["train"]) - len(pos)
    assert abs(kept / n_neg - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n_neg)
    assert runs[0]["negatives_dropped"] == n_neg - kept
    assert runs[0]["negative_sampling_rate"] == 0.3
    assert all(got[0]["train"][k] == full["train"][k] for k in got[0]["train"])


def test_sampling_hash_rate():
    ids = np.array([f"e{i:09d}" for i in range(200_000)], dtype=object)
    u = build.sampling_uniform(ids, seed=3)
    assert abs((u < 0.25).mean() - 0.25) < 0.005
    assert np.array_equal(u, build.sampling_uniform(ids, seed=3))
    assert not np.array_equal(u, build.sampling_uniform(ids, seed=4))


def test_crosses_function():
    assert build.crosses("r1", "r1", ["a", "b", "a", "c"], "a") == (1.0, 0.5)
    assert build.crosses("", "", [], "a") == (0.0, 0.0)
    assert build.crosses("r1", "r2", ["b"], "a") == (0.0, 0.0)


def test_component_under_local_dag_runner(log_dir, tmp_path):
    import tensorflow as tf
    from tfx import v1 as tfx
    from tfx.types import artifact_utils

    from components.example_gen.component import BehaviorExampleGen

    gen = BehaviorExampleGen(input_base=log_dir, input_fingerprint="fp-1", num_shards=2)
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="examplegen_test", pipeline_root=str(tmp_path / "root"), components=[gen],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(tmp_path / "mlmd.sqlite")),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    tfx.orchestration.LocalDagRunner().run(pipeline)

    from ml_metadata.metadata_store import metadata_store
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(str(tmp_path / "mlmd.sqlite")))
    [examples] = store.get_artifacts_by_type("Examples")
    [quarantine] = store.get_artifacts_by_type("feedrank.Quarantine")
    assert json.loads(examples.properties["split_names"].string_value) == ["train", "valid", "eval"]
    props = examples.custom_properties
    with open(os.path.join(quarantine.uri, "summary.json")) as f:
        summary = json.load(f)
    for key in ("train_start_ts", "valid_start_ts", "eval_start_ts", "log_end_ts", "censored_eval"):
        assert props[key].int_value == summary[key], key
    assert props["train_start_ts"].int_value < props["valid_start_ts"].int_value \
        < props["eval_start_ts"].int_value < props["log_end_ts"].int_value
    assert props["censored_eval"].int_value > 0
    assert props["file_format"].string_value == "tfrecords_gzip"
    assert props["payload_format"].string_value == "FORMAT_TF_EXAMPLE"
    assert props["input_fingerprint"].string_value == "fp-1"
    assert props["events_read"].int_value == props["events_used"].int_value + props["quarantined"].int_value
    assert props["negative_sampling_rate"].double_value == 1.0
    assert os.path.exists(os.path.join(quarantine.uri, "summary.json"))
    assert os.path.exists(os.path.join(quarantine.uri, "quarantine.parquet"))
    for split in artifact_utils.decode_split_names(examples.properties["split_names"].string_value):
        recs = H.read_records(examples.uri, split)
        assert len(recs) == props[f"examples_{split}"].int_value > 0
        assert props[f"positives_{split}"].int_value == summary["positives"][split] > 0
        parsed = tf.io.parse_example(recs, F.BUILTIN.raw_feature_spec())
        assert parsed[F.LABEL].shape[0] == len(recs)


def test_quarantined_duplicate_keeps_every_column(log_dir, tmp_path):
    log = H.copy_log(log_dir, str(tmp_path / "log"))
    ev = H.load(log)
    view = ev[(ev.event == "view") & ev.dwell_s.notna()].iloc[0]
    imp = ev[(ev.event == "impression") & (ev.request_id != "")].iloc[0]
    dups = pd.DataFrame([view, imp]).assign(ts=lambda d: d.ts + 5)   # later copies: the quarantined ones
    dups.loc[dups.event == "view", "dwell_s"] = 12.5
    H.save(pd.concat([ev, dups], ignore_index=True), log)
    res = H.run(log, str(tmp_path / "out"))
    q = H.quarantine(res).set_index("event_id")
    assert list(q.reason) == [contract.DUPLICATE_ID] * 2
    assert q.loc[imp.event_id, "request_id"] == imp.request_id != ""
    assert float(q.loc[view.event_id, "dwell_s"]) == 12.5
    assert q.loc[view.event_id, "item_id"] == view.item_id


def test_component_failure_is_one_readable_line(log_dir, tmp_path):
    """A log without clicks fails in the example generator, not minutes later in the
    Trainer, and the local runner's summary shows the project's one-line error."""
    from tfx import v1 as tfx

    from components.example_gen.component import BehaviorExampleGen
    from feedrank.evaluate.summary import pipeline_failure

    log = H.copy_log(log_dir, str(tmp_path / "log"))
    ev = H.load(log)
    H.save(ev[ev.event != contract.CLICK], log)
    gen = BehaviorExampleGen(input_base=log, num_shards=2)
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="examplegen_fail", pipeline_root=str(tmp_path / "root"), components=[gen],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(tmp_path / "mlmd.sqlite")),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    with pytest.raises(Exception) as err:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    failure = pipeline_failure(err.value)
    assert failure["error"] == "NoPositiveLabelsError" and "\n" not in failure["message"]
    assert failure["message"].startswith("no positive label in the train, valid, eval splits")
