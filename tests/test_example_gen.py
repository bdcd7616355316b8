"""Example-generation semantics on simulated data, the split, sampling and
the TFX component under LocalDagRunner."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from feedrank import features as F
from feedrank.events import contract
from feedrank.examples import build
from tests import examplegen_helpers as H

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


def _reference(ev: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, imp) -> dict:
    """Plain pandas recomputation of one impression's features."""
    ev = ev.sort_values(["ts", "event_id"])
    cat = items.set_index("item_id").category_id
    reg = items.set_index("item_id").region_id
    mine = ev[(ev.user_id == imp.user_id) & (ev.ts < imp.ts)]
    clicks = mine[mine.event == "click"].tail(F.CLICK_LEN)
    convs = mine[mine.event == "conversion"].tail(F.CONVERSION_LEN)
    views = mine[mine.event == "view"].tail(F.VIEW_LEN)
    tokens = [t for q in mine[mine.event == "search"]["query"] for t in q.split()][-F.SEARCH_LEN:]
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
        "label": [int((later.event == "click").any())],
        "conversion": [int((later.event == "conversion").any())],
        "item_hist_impressions": [np.float32(n_imp)], "item_hist_clicks": [np.float32(n_clk)],
        "item_hist_ctr": [np.float32((n_clk + F.CTR_PRIOR_CLICKS) / (n_imp + F.CTR_PRIOR_IMPRESSIONS))],
        "region_match": [np.float32(user_region != "" and user_region == reg[imp.item_id])],
        "interest_cat_share": [np.float32(np.mean([c == cat[imp.item_id] for c in click_cats])
                                          if click_cats else 0.0)],
    }


def test_features_match_pandas_reference(log_dir, examples):
    ev, items, users = H.load(log_dir), H.load(log_dir, "items"), H.load(log_dir, "users")
    imps = ev[ev.event == contract.IMPRESSION]
    assert len(examples) == len(imps)
    ties = ev[ev.event_id.str.startswith("tie")]
    tie_keys = set(zip(ties.user_id, ties.ts))
    tied = imps[[k in tie_keys for k in zip(imps.user_id, imps.ts)]]
    busy = imps[imps.user_id.isin(ev[ev.event == "click"].user_id.value_counts().index[:5])]
    sample = pd.concat([tied.head(20), busy.sample(40, random_state=1), imps.sample(60, random_state=2)])
    assert set(F.raw_feature_spec()) == set(next(iter(examples.values())))
    for imp in sample.itertuples():
        got, want = examples[imp.event_id], _reference(ev, items, users, imp)
        assert set(got) == set(want)
        for name, value in want.items():
            assert got[name] == pytest.approx(value) if name in [d.name for d in F.DENSE_FEATURES] \
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
        for imp in imps.itertuples():
            ex, want = examples[imp.event_id], _reference(ev, items, users, imp)
            assert ex["label"] == [1] and ex["conversion"] == [1]
            for name in ("click_item_ids", "search_tokens", "conv_item_ids"):
                assert ex[name] == want[name]
            assert ex["item_hist_clicks"] == pytest.approx(want["item_hist_clicks"])
            n += 1
    assert n >= 40


def test_encoder_is_deterministic_protobuf(result):
    from tensorflow.core.example import example_pb2

    recs = H.read_records(result["output_dir"], "train")
    for rec in recs[:500]:
        assert example_pb2.Example.FromString(rec).SerializeToString(deterministic=True) == rec


def test_time_split(result, examples):
    max_day = result["max_ts"] // 86400
    train = H.by_impression(result["output_dir"], ("train",))
    evals = H.by_impression(result["output_dir"], ("eval",))
    assert train and evals and not set(train) & set(evals)
    assert all(examples[i]["ts"][0] // 86400 == max_day for i in evals)
    assert all(examples[i]["ts"][0] // 86400 < max_day for i in train)
    assert result["examples"] == {"train": len(train), "eval": len(evals)}
    assert result["eval_start_ts"] == max_day * 86400


def test_negative_sampling(log_dir, result, tmp_path):
    full = {s: H.by_impression(result["output_dir"], (s,)) for s in ("train", "eval")}
    runs = [H.run(log_dir, str(tmp_path / f"r{i}"), negative_sampling_rate=0.3, seed=seed)
            for i, seed in enumerate((5, 5, 6))]
    got = [{s: H.by_impression(r["output_dir"], (s,)) for s in ("train", "eval")} for r in runs]
    assert got[0] == got[1]                       # deterministic
    assert set(got[0]["train"]) != set(got[2]["train"])   # seed matters
    assert got[0]["eval"] == full["eval"]         # eval untouched
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
    assert json.loads(examples.properties["split_names"].string_value) == ["train", "eval"]
    props = examples.custom_properties
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
        parsed = tf.io.parse_example(recs, F.raw_feature_spec())
        assert parsed[F.LABEL].shape[0] == len(recs)
