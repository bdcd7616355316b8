"""THE leakage test: the future must not change the past, anywhere a model input comes from.

Pick a cut time T.  Perturb, add and delete events with ``ts >= T`` (clicks
on impressed items, by the same and by other users, new impressions, new
posts, searches, conversions, re-timed and re-targeted events), and add
`items` and `users` rows valid from T on (a price cut, a category or region
change: the ``valid_from`` column).  Then, for every example before T:

* example generator: examples before ``T - label_window_s`` are
  byte-identical (negative sampling decisions included), and every example
  before T has identical non-label features;
* Word2Vec (T = ``train_start_ts``, the end of the warm-up days): the
  vectors are bit-identical (one worker, a fixed seed);
* tf.Transform (T = ``valid_start_ts``): the real ``preprocessing_fn``
  analysed by tft_beam on the train split (the only split the pipeline's
  Transform analyses) gives every train example identical transformed model
  inputs (`FeatureSpec.model_input_names`);
* the model's in-graph inputs from the vectors (T = ``valid_start_ts``): the
  similarity and match features the model computes for every train example
  from the vectors mapped onto Transform's vocabulary are identical.
"""
from __future__ import annotations

import glob
import os

import numpy as np
import pandas as pd
import pytest

from feedrank import features as F
from feedrank.events import contract
from tests.helpers import examplegen as H

WINDOW = 1800
DAY_S = 86_400
WARMUP = 2          # of 6 days: warm-up days 0-1, train days 2-3, valid day 4, eval day 5
EXAMPLES = dict(warmup_days=WARMUP, valid_split="last_days", valid_days=1, eval_days=1)


def _perturb(ev: pd.DataFrame, items: pd.DataFrame, cut: int, rng: np.random.Generator) -> pd.DataFrame:
    """Changes only events with ts >= cut; the last event and the last impression are kept as is."""
    max_ts = int(ev.ts.max())
    keep = (ev.ts == max_ts) | (ev.index == ev.ts.where(ev.event == contract.IMPRESSION).idxmax())
    future = (ev.ts >= cut) & ~keep
    past, fut = ev[~future], ev[future].copy()
    fut = fut[rng.random(len(fut)) > 0.3]                                     # delete 30%
    move = rng.random(len(fut)) < 0.2                                         # re-time 20%
    fut.loc[move, "ts"] = rng.integers(cut, max_ts + 1, move.sum())
    swap = (rng.random(len(fut)) < 0.1) & (fut.event != contract.SEARCH).to_numpy()
    fut.loc[swap, "item_id"] = rng.choice(items.item_id.to_numpy(), swap.sum())  # re-target 10%
    recent = ev[(ev.event == contract.IMPRESSION) & (ev.ts >= cut - WINDOW) & (ev.ts < cut)]
    older = ev[(ev.event == contract.IMPRESSION) & (ev.ts < cut - WINDOW)]
    users = ev.user_id[ev.user_id != ""].unique()
    add = []
    base = dict(request_id="", query="", dwell_s=np.nan)
    for j, r in enumerate(recent.sample(min(60, len(recent)), random_state=1).itertuples()):
        t = int(min(max_ts, max(cut, r.ts + WINDOW - 5)))        # a click inside r's label window
        add.append(dict(base, event_id=f"new{j}c", user_id=r.user_id, item_id=r.item_id, event="click", ts=t))
        add.append(dict(base, event_id=f"new{j}v", user_id=r.user_id, item_id=r.item_id,
                        event="conversion", ts=t))
    for j, r in enumerate(older.sample(80, random_state=2).itertuples()):
        t = cut + j % 7                                               # at (or right after) the cut
        other = rng.choice(users[users != r.user_id])                 # really another user
        add.append(dict(base, event_id=f"new{j}i", user_id=r.user_id, item_id=r.item_id,
                        event="impression", ts=t, request_id="reqnew"))
        add.append(dict(base, event_id=f"new{j}k", user_id=other, item_id=r.item_id, event="click", ts=t))
        add.append(dict(base, event_id=f"new{j}s", user_id=r.user_id, item_id="", event="search",
                        ts=cut, query="future leak tokens"))
    for j, r in enumerate(older.sample(20, random_state=3).itertuples()):   # posts that appear after the cut
        t = int(rng.integers(cut, max_ts + 1))
        for kind in ("impression", "click", "view"):
            add.append(dict(base, event_id=f"newpost{j}{kind}", user_id=r.user_id, item_id=f"inew{j}",
                            event=kind, ts=t))
    out = pd.concat([past, fut, pd.DataFrame(add)], ignore_index=True)
    return out.sample(frac=1.0, random_state=3).reset_index(drop=True)   # file order changes too


def _perturb_tables(items: pd.DataFrame, users: pd.DataFrame, cut: int,
                    rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows valid from ``cut`` on: price cuts, category and region changes of existing posts,
    region changes of users, and the new posts `_perturb` adds."""
    items, users = items.assign(valid_from=np.nan), users.assign(valid_from=np.nan)   # valid from the start
    later = items.sample(60, random_state=4).copy()
    later["valid_from"] = rng.integers(cut, cut + DAY_S, len(later))
    later["price"] = later["price"] * 0.5
    later.loc[later.index[:20], "category_id"] = items["category_id"].iloc[0]
    later.loc[later.index[20:40], "region_id"] = "r_moved"
    new = pd.DataFrame(dict(item_id=[f"inew{j}" for j in range(20)], category_id="new/category",
                            region_id="r_new", price=99.0, title="brand new post", valid_from=cut))
    moved = users.sample(40, random_state=5).copy()
    moved["valid_from"] = rng.integers(cut, cut + DAY_S, len(moved))
    moved["region_id"] = "r_moved"
    return (pd.concat([items, later, new], ignore_index=True)[list(items.columns)],
            pd.concat([users, moved], ignore_index=True))


def _perturbed_log(a: str, out: str, cut: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    ev, items, users = H.load(a), H.load(a, "items"), H.load(a, "users")
    b = H.copy_log(a, out)
    H.save(_perturb(ev, items, cut, rng), b)
    new_items, new_users = _perturb_tables(items, users, cut, rng)
    H.save(new_items, b, "items")
    H.save(new_users, b, "users")
    return b


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The original log, its examples, and the cut times."""
    a = H.make_log(str(tmp_path_factory.mktemp("orig")), days=6, seed=5)
    res = H.run(a, str(tmp_path_factory.mktemp("orig_gen")), **EXAMPLES)
    assert res["train_start_ts"] < res["valid_start_ts"] < res["eval_start_ts"]
    ev = H.load(a)
    imp_ts = np.sort(ev.ts[(ev.event == contract.IMPRESSION) & (ev.ts >= res["train_start_ts"])].to_numpy())
    mid = int(imp_ts[int(0.5 * len(imp_ts))]) + 300   # busy time: impressions right before T
    return a, res, mid


@pytest.fixture(scope="module")
def mid_cut(world, tmp_path_factory):
    a, res, mid = world
    return a, _perturbed_log(a, str(tmp_path_factory.mktemp("perturbed_mid")), mid, 0), mid


def test_future_events_do_not_leak_into_examples(world, mid_cut, tmp_path):
    a, b, cut = mid_cut
    res_a = world[1]
    res_b = H.run(b, str(tmp_path / "b"), **EXAMPLES)
    for key in ("max_ts", "train_start_ts", "valid_start_ts", "eval_start_ts"):
        assert res_a[key] == res_b[key], key
    splits = ("train", "valid", "eval")
    ex_a, ex_b = H.by_impression(res_a["output_dir"], splits), H.by_impression(res_b["output_dir"], splits)
    labels = set(F.LABELS)
    n_exact = n_features = label_changed = 0
    for imp_id, rec in ex_a.items():
        d = H.to_dict(rec)
        ts = d["ts"][0]
        if ts >= cut:
            continue
        assert imp_id in ex_b, f"impression {imp_id} before the cut vanished"
        if ts < cut - WINDOW:
            assert ex_b[imp_id] == rec, f"example {imp_id} (ts {ts}) changed"
            n_exact += 1
        db = H.to_dict(ex_b[imp_id])
        assert {k: v for k, v in d.items() if k not in labels} == \
               {k: v for k, v in db.items() if k not in labels}, f"features of {imp_id} changed"
        n_features += 1
        label_changed += d[F.LABEL] != db[F.LABEL] or d[F.CONVERSION_LABEL] != db[F.CONVERSION_LABEL]
    assert n_exact > 300 and n_features > n_exact + 5
    assert label_changed > 0            # the perturbation reached the label windows
    after = {k: H.to_dict(v) for k, v in ex_b.items() if H.to_dict(v)["ts"][0] >= cut}
    assert sum(ex_a.get(k) != ex_b[k] for k in after) > 0   # and the future did change
    # the later rows of the tables reached the later examples: new posts, re-priced posts
    assert any(d[F.ITEM_ID.name][0].startswith("inew") for d in after.values())
    assert any(H.to_dict(ex_a[k])[F.PRICE.name] != d[F.PRICE.name] for k, d in after.items() if k in ex_a)


def test_sampling_decisions_are_stable_before_the_cut(mid_cut, tmp_path):
    a, b, cut = mid_cut
    kept = {}
    for name, log in (("a", a), ("b", b)):
        res = H.run(log, str(tmp_path / name), negative_sampling_rate=0.4, seed=9, **EXAMPLES)
        kept[name] = {k: v for k, v in H.by_impression(res["output_dir"], ("train", "valid", "eval")).items()
                      if H.to_dict(v)["ts"][0] < cut - WINDOW}
    assert kept["a"] and kept["a"] == kept["b"]


# --------------------------------------------------------------------------
# Word2Vec, tf.Transform and the model's inputs
# --------------------------------------------------------------------------
def _vectors(log: str, end: int):
    from feedrank.vectors.corpus import load_corpus
    from feedrank.vectors.train import Word2VecParams, train_vectors

    params = Word2VecParams(vector_size=8, token_vector_size=4, epochs=20, sample=0.0, seed=0)
    return train_vectors(load_corpus(log, WARMUP, warmup_days=WARMUP, end=end), params)


def test_word2vec_sees_nothing_from_the_train_split_on(world, tmp_path):
    from feedrank.vectors.corpus import train_start

    a, res, _ = world
    start = res["train_start_ts"]
    assert start == train_start(H.load(a), WARMUP)   # the standalone rule is the example gen's
    b = _perturbed_log(a, str(tmp_path / "perturbed_train_start"), start, 1)
    wa, wb = _vectors(a, start), _vectors(b, start)
    assert wa.meta["window_end_ts"] == start and wa.meta["counts"]["clicks_in_window"] > 20
    assert wa.item_ids == wb.item_ids and wa.tokens == wb.tokens
    np.testing.assert_array_equal(wa.item_vectors, wb.item_vectors)
    np.testing.assert_array_equal(wa.token_vectors, wb.token_vectors)
    # not vacuous: a window that reached into the perturbed days would have changed
    later_a, later_b = _vectors(a, res["valid_start_ts"]), _vectors(b, res["valid_start_ts"])
    assert later_a.item_ids != later_b.item_ids or not np.array_equal(later_a.item_vectors, later_b.item_vectors)


def _analyze_train(examples_dir: str, out_dir: str):
    """tf.Transform's analysis of the train split (what the Transform component analyses),
    the real preprocessing_fn on tft_beam's DirectRunner; returns the TFTransformOutput."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.public import tfxio

    from feedrank.examples.tfdv_schema import make_schema
    from feedrank.transform.preprocessing import preprocessing_fn

    files = sorted(glob.glob(os.path.join(examples_dir, "Split-train", "*.gz")))
    source = tfxio.TFExampleRecord(files, schema=make_schema(F.BUILTIN))
    options = beam.options.pipeline_options.PipelineOptions(["--direct_running_mode=in_memory",
                                                             "--direct_num_workers=1"])
    with beam.Pipeline(options=options) as p, \
            tft_beam.Context(temp_dir=os.path.join(out_dir, "tmp"), force_tf_compat_v1=False):
        raw = p | "Read" >> source.BeamSource()
        transform_fn = (raw, source.TensorAdapterConfig()) | tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(os.path.join(out_dir, "transform_graph"))
    return tft.TFTransformOutput(os.path.join(out_dir, "transform_graph"))


def _model_inputs(examples_dir: str, tft_out) -> dict:
    """impression id -> {model input -> array}: the train split's raw examples through the
    Transform layer, as the Trainer reads them."""
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(examples_dir, "Split-train", "*.gz")))
    spec = F.BUILTIN.raw_feature_spec(include_labels=True, include_metadata=True)
    trainer_keys = set(F.BUILTIN.raw_feature_spec(include_labels=True, include_metadata=False))   # the Trainer's
    layer = tft_out.transform_features_layer()
    out = {}
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(512):
        raw = tf.io.parse_example(batch, spec)
        x = layer({k: v for k, v in raw.items() if k in trainer_keys})
        ids = raw[F.IMPRESSION_ID].numpy()
        inputs = {k: x[k].numpy() for k in F.BUILTIN.model_input_names()}
        for i, imp in enumerate(ids):
            out[imp] = {k: v[i] for k, v in inputs.items()}
    return out


def _in_graph_dense(tft_out, vectors_dir: str, inputs: dict) -> dict:
    """impression id -> the model's dense inputs computed in-graph (`common.embed`): the dense
    features, the match features and the two Word2Vec similarity features, from the vectors
    mapped onto Transform's item vocabulary as the Trainer maps them."""
    import tf_keras as keras

    from feedrank.train import word_vectors
    from feedrank.train.families import common
    from feedrank.train.settings import TrainerSettings, Word2VecUse
    from feedrank.train.trainer import vocab_sizes

    sizes = vocab_sizes(tft_out, spec=F.BUILTIN)
    settings = TrainerSettings(word2vec=Word2VecUse(init=False, freeze=False, similarity=True),
                               word_vectors_uri=vectors_dir)
    settings = word_vectors.attach(settings, tft_out, sizes[F.ITEM_VOCAB.name])
    e = common.embed(sizes, settings, spec=F.BUILTIN)
    model = keras.Model(e.inputs, e.dense)
    ids = sorted(inputs)
    batch = {k: np.stack([inputs[i][k] for i in ids]) for k in F.BUILTIN.model_input_names()}
    dense = model.predict(batch, batch_size=1024, verbose=0)
    return dict(zip(ids, dense))


def _same(x, y, what: str) -> None:
    """Ids and strings exactly; floats to float32 rounding: tf.Transform's mean and variance
    sum the same train rows, but in the logs' file order, which the perturbation shuffles."""
    x, y = np.asarray(x), np.asarray(y)
    if np.issubdtype(x.dtype, np.floating):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=what)
    else:
        np.testing.assert_array_equal(x, y, err_msg=what)


def test_transform_and_model_inputs_see_nothing_from_the_valid_split_on(world, tmp_path):
    from feedrank.transform.preprocessing import vocab_file_name
    from feedrank.vectors import artifact

    a, res_a, _ = world
    cut = res_a["valid_start_ts"]
    b = _perturbed_log(a, str(tmp_path / "perturbed_valid_start"), cut, 2)
    res_b = H.run(b, str(tmp_path / "gen_b"), **EXAMPLES)
    assert res_b["valid_start_ts"] == cut and res_b["train_start_ts"] == res_a["train_start_ts"]
    vocabs, inputs, dense = [], [], []
    for name, log, res in (("a", a, res_a), ("b", b, res_b)):
        tft_out = _analyze_train(res["output_dir"], str(tmp_path / f"tft_{name}"))
        vocabs.append({v.name: tft_out.vocabulary_by_name(vocab_file_name(v)) for v in F.BUILTIN.vocabs
                       if not v.labels})   # a fixed vocabulary (the ages) is not computed from data
        inputs.append(_model_inputs(res["output_dir"], tft_out))
        vectors_dir = artifact.save(_vectors(log, res["train_start_ts"]), str(tmp_path / f"wv_{name}"))
        dense.append(_in_graph_dense(tft_out, vectors_dir, inputs[-1]))
    assert vocabs[0] == vocabs[1]
    assert inputs[0].keys() == inputs[1].keys() and len(inputs[0]) > 300
    for imp, x in inputs[0].items():
        for k in F.BUILTIN.model_input_names():
            _same(x[k], inputs[1][imp][k], f"{k} of {imp!r}")
        _same(dense[0][imp], dense[1][imp], f"in-graph features of {imp!r}")
    similarity = np.stack(list(dense[0].values()))[:, -2:]
    assert (np.abs(similarity) > 0).all(axis=1).sum() > 10   # not vacuous: the vectors reach the features
    # and the perturbation did reach the examples from the cut on
    after_a = H.by_impression(res_a["output_dir"], ("valid", "eval"))
    after_b = H.by_impression(res_b["output_dir"], ("valid", "eval"))
    assert after_a != after_b


def test_the_pipeline_transform_analyses_only_the_train_split(tmp_path):
    """What makes the check above the pipeline's: its Transform component analyses "train" only
    (TFX's default when no splits_config is given) and transforms every split."""
    import dataclasses

    from google.protobuf import json_format
    from tfx.proto import transform_pb2

    import pipeline
    from feedrank import config as config_lib
    from tests.helpers.config import TINY_CONFIG

    cfg = dataclasses.replace(config_lib.load(TINY_CONFIG), input_base=str(tmp_path / "log"),
                              run_root=str(tmp_path / "runs"))
    transform = next(c for c in pipeline.create_pipeline(cfg).components if c.id == "Transform")
    raw = transform.exec_properties.get("splits_config")
    analyze = list(json_format.Parse(raw, transform_pb2.SplitsConfig()).analyze) if raw else ["train"]
    assert analyze == ["train"]
