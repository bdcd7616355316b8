"""Word2Vec vectors (docs/word2vec.md) on the simulator's tiny log.

* co-clicked posts (adjacent in a user's click sequence) are closer than random pairs;
* the window ends where the example generator's train split starts (after its
  warm-up days): perturbing any event from then on changes no vector, and
  malformed rows are skipped;
* under LocalDagRunner (the e2e run's log and store, with warm-up days)
  Word2VecGen feeds the Trainer, whose frozen item rows equal the vectors and
  whose exported model scores with the in-graph similarity features;
* the similarity features ignore padding; the Kubeflow package still compiles.
"""
import dataclasses
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from feedrank import config as config_lib
from feedrank.train.settings import Word2VecUse
from feedrank.vectors import artifact
from feedrank.vectors.corpus import DAY_S, EmptyCorpusError, load_corpus, train_start
from feedrank.vectors.train import Word2VecParams, train_vectors
from tests.helpers.config import ROOT

# A tiny log's 3 warm-up days hold ~300 clicks: more epochs and no down-sampling than the demo's defaults.
TINY_PARAMS = Word2VecParams(vector_size=8, token_vector_size=4, epochs=50, sample=0.0, seed=0)
WARMUP = 3   # of the tiny log's 5 days: warm-up days 0-2, then train (and valid users) and eval


def _train(data_dir, window_days=WARMUP):
    return train_vectors(load_corpus(str(data_dir), window_days, warmup_days=WARMUP), TINY_PARAMS)


@pytest.fixture(scope="module")
def vectors(tiny_data):
    return load_corpus(str(tiny_data), WARMUP, warmup_days=WARMUP), _train(tiny_data)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_co_clicked_posts_are_closer_than_random_pairs(vectors):
    corpus, wv = vectors
    row = {k: i for i, k in enumerate(wv.item_ids)}
    x = _unit(wv.item_vectors)
    pairs = np.array([(row[a], row[b]) for seq in corpus.click_sequences
                      for a, b in zip(seq[:-1], seq[1:]) if a != b])
    assert len(pairs) > 100
    rng = np.random.default_rng(0)
    rand = rng.integers(0, len(x), (20000, 2))
    rand = rand[rand[:, 0] != rand[:, 1]]
    co = float(np.mean(np.sum(x[pairs[:, 0]] * x[pairs[:, 1]], axis=1)))
    random = float(np.mean(np.sum(x[rand[:, 0]] * x[rand[:, 1]], axis=1)))
    assert co > random + 0.05, (co, random)
    assert wv.token_vectors.shape == (len(wv.tokens), 4) and len(wv.tokens) > 20
    assert wv.item_vectors.shape == (wv.meta["counts"]["distinct_clicked_items"], 8)


def test_artifact_round_trip_and_determinism(vectors, tmp_path, tiny_data):
    _, wv = vectors
    back = artifact.load(artifact.save(wv, str(tmp_path / "wv")))
    assert back.item_ids == wv.item_ids and back.tokens == wv.tokens and back.meta == wv.meta
    np.testing.assert_array_equal(back.item_vectors, wv.item_vectors)
    again = _train(tiny_data)   # one worker, a fixed seed, a process-independent hash
    np.testing.assert_array_equal(again.item_vectors, wv.item_vectors)


def test_window_ends_where_the_train_split_starts(vectors, tiny_data, tmp_path):
    from tests.helpers import examplegen as H

    corpus, wv = vectors
    events = pd.read_parquet(tiny_data / "events.parquet")
    end = corpus.window_end
    assert end == train_start(events, WARMUP) == wv.meta["window_end_ts"]
    assert corpus.window_start == end - WARMUP * DAY_S
    # the example generator's train split starts exactly there: no example precedes the window's end
    gen = H.run(str(tiny_data), str(tmp_path / "gen"), warmup_days=WARMUP, valid_split="user_hash", num_shards=1)
    assert gen["train_start_ts"] == end
    first = min(H.to_dict(r)["ts"][0] for r in H.by_impression(gen["output_dir"], ("train",)).values())
    assert end <= first < end + DAY_S
    clicks = events[events["event"] == "click"]
    assert corpus.counts["clicks_in_window"] == int(((clicks.ts >= corpus.window_start) & (clicks.ts < end)).sum())
    assert corpus.counts["clicks_from_train_start"] > 0   # the example days have clicks, and none was used
    short = load_corpus(str(tiny_data), 1, warmup_days=WARMUP)
    assert short.window_start == end - DAY_S and short.counts["clicks_in_window"] < corpus.counts["clicks_in_window"]
    explicit = load_corpus(str(tiny_data), 1, end=end - DAY_S)   # the example generator's train_start_ts
    assert (explicit.window_start, explicit.window_end) == (end - 2 * DAY_S, end - DAY_S)


def test_events_from_the_train_split_on_change_no_vector_and_bad_rows_are_skipped(vectors, tiny_data, tmp_path):
    corpus, wv = vectors
    data = tmp_path / "perturbed"
    shutil.copytree(tiny_data, data)
    events = pd.read_parquet(data / "events.parquet")
    late = events["ts"] >= corpus.window_end
    rng = np.random.default_rng(1)
    for kind, col in (("click", "item_id"), ("search", "query")):   # scramble what every example saw
        sel = late & (events["event"] == kind)
        events.loc[sel, col] = rng.permutation(events.loc[sel, col].to_numpy())
    bad = events.iloc[[0]].assign(event_id="bad-row", ts="not a time")   # quarantined by the example gen
    events = pd.concat([events.astype({"ts": object}), bad], ignore_index=True)
    events.to_csv(data / "events.csv", index=False)
    os.remove(data / "events.parquet")
    perturbed = _train(data)
    assert perturbed.item_ids == wv.item_ids and perturbed.tokens == wv.tokens
    np.testing.assert_array_equal(perturbed.item_vectors, wv.item_vectors)
    np.testing.assert_array_equal(perturbed.token_vectors, wv.token_vectors)
    assert perturbed.meta["counts"]["skipped_bad"] == 1


def test_no_click_in_the_window_is_a_clear_error(tiny_data, tmp_path):
    data = tmp_path / "late_clicks_only"
    shutil.copytree(tiny_data, data)
    events = pd.read_parquet(data / "events.parquet")
    cutoff = train_start(events, WARMUP)
    events[~((events["event"] == "click") & (events["ts"] < cutoff))].to_parquet(data / "events.parquet")
    with pytest.raises(EmptyCorpusError, match="no clicks in the word2vec window.*examples.warmup_days"):
        load_corpus(str(data), WARMUP, warmup_days=WARMUP)


def test_similarity_features_ignore_padding():
    import tensorflow as tf

    from feedrank.train.word_vectors import VectorSimilarity

    rng = np.random.default_rng(0)
    table = rng.normal(size=(30, 6)).astype(np.float32)
    table[0] = 0.0
    cand = rng.integers(1, 30, 16)
    hist = rng.integers(1, 30, (16, 10))
    lengths = rng.integers(0, 11, 16)
    hist[np.arange(10)[None, :] >= lengths[:, None]] = 0          # right padding; some rows empty
    left = np.zeros_like(hist)
    for i, n in enumerate(lengths):
        left[i, 10 - n:] = hist[i, :n]
    layer = VectorSimilarity()

    def features(ids, tbl):
        return layer(tf.constant(tbl[cand]), tf.constant(tbl[ids]), tf.constant(ids != 0)).numpy()

    base = features(hist, table)
    noisy = table.copy()
    noisy[0] = rng.normal(size=6) * 100                          # what padding looks up must not matter
    np.testing.assert_allclose(features(left, table), base, atol=1e-6)
    np.testing.assert_allclose(features(hist, noisy), base, atol=1e-6)
    unit = _unit(table[1:])
    for i, n in enumerate(lengths):                              # the NumPy reference
        if n == 0:
            np.testing.assert_array_equal(base[i], [0.0, 0.0])
            continue
        c, h = unit[cand[i] - 1], table[hist[i, :n]]
        mean = h.mean(axis=0)
        assert base[i, 0] == pytest.approx(c @ (mean / np.linalg.norm(mean)), abs=1e-5)
        assert base[i, 1] == pytest.approx(np.max(_unit(h) @ c), abs=1e-5)


def test_vector_trainer_injects_the_uri():
    from tfx.utils import json_utils

    from components.trainer.component import with_vectors_uri

    props = with_vectors_uri({"custom_config": json_utils.dumps({"model": "din"}), "run_fn": "f"}, "/v")
    assert json_utils.loads(props["custom_config"]) == {"model": "din", "word_vectors_uri": "/v"}
    assert json_utils.loads(with_vectors_uri({}, "/v")["custom_config"]) == {"word_vectors_uri": "/v"}


def test_configs():
    cfg = config_lib.load(os.path.join(ROOT, "configs", "din_w2v.yaml"))
    assert cfg.word2vec.enabled and cfg.trainer.word2vec.similarity and cfg.model_name == "din"
    for name in ("demo.yaml", "tiny.yaml"):
        assert not config_lib.load(os.path.join(ROOT, "configs", name)).word2vec.enabled
    with pytest.raises(config_lib.ConfigError, match="word2vec section is not enabled"):
        config_lib.load(os.path.join(ROOT, "configs", "tiny.yaml"),
                        {"trainer": {"model": "din", "word2vec": {"init": True}}})
    with pytest.raises(config_lib.ConfigError, match="trainer.word2vec: unknown"):
        config_lib.load(os.path.join(ROOT, "configs", "din_w2v.yaml"),
                        {"trainer": {"model": "din", "word2vec": {"frozen": True}}})
    for name in ("din_w2v.yaml", "quality_w2v.yaml"):   # the window lies inside the warm-up days
        cfg = config_lib.load(os.path.join(ROOT, "configs", name))
        assert cfg.word2vec.enabled and 1 <= cfg.word2vec.window_days <= cfg.examples.warmup_days
    with pytest.raises(config_lib.ConfigError,
                       match=r"word2vec.window_days \(4\) exceeds examples.warmup_days \(2\)"):
        config_lib.load(os.path.join(ROOT, "configs", "din_w2v.yaml"), {"examples": {"warmup_days": 2}})


# --------------------------------------------------------------------------
# In the pipeline (LocalDagRunner), on a copy of the e2e run's store
# --------------------------------------------------------------------------
UP_TO_TRAINER = ("BehaviorExampleGen", "Word2VecGen", "StatisticsGen", "ImportSchemaGen",
                 "ExampleValidator", "AnomaliesGate", "Transform", "Trainer")


@pytest.fixture(scope="module")
def w2v_run(first_run, tmp_path_factory):
    """The pipeline with word2vec enabled, up to the Trainer, on a COPY of the e2e
    run's MLMD store (which stays untouched).  The vectors need warm-up days,
    so the example generator and what reads its examples run again; the schema
    comes from the cache."""
    from tfx import v1 as tfx

    import pipeline
    from feedrank.evaluate.mlmd_reader import latest_run

    cfg, summary = first_run
    assert summary["status"] == "succeeded", summary.get("failure")
    tmp = tmp_path_factory.mktemp("w2v_run")
    metadata = str(tmp / "metadata.sqlite")
    shutil.copy(cfg.metadata_path, metadata)
    w2v = dataclasses.replace(cfg.word2vec, enabled=True, window_days=2, epochs=TINY_PARAMS.epochs,
                              sample=TINY_PARAMS.sample)
    examples = dataclasses.replace(cfg.examples, warmup_days=2)   # days 0-1 of 5: history and the corpus
    trainer = dataclasses.replace(cfg.trainer, epochs=1, word2vec=Word2VecUse(init=True, freeze=True, similarity=True))
    full = pipeline.create_pipeline(dataclasses.replace(cfg, word2vec=w2v, examples=examples, trainer=trainer))
    kept = [c for c in full.components if c.id in UP_TO_TRAINER]
    for c in kept:
        for down in [d for d in c.downstream_nodes if d.id not in UP_TO_TRAINER]:
            c.remove_downstream_node(down)
    p = tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline_name, pipeline_root=str(tmp / "root"), components=kept, enable_cache=True,
        # (no beam_pipeline_args: the components already carry them from `full`; twice would miss the cache)
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata))
    tfx.orchestration.LocalDagRunner().run(p)
    return latest_run(metadata)


@pytest.mark.e2e
def test_pipeline_trains_with_frozen_word_vectors(w2v_run):
    import tensorflow as tf
    import tensorflow_transform as tft

    from feedrank import features as F
    from feedrank.train.word_vectors import vocab_matrix
    from feedrank.transform.preprocessing import vocab_file_name

    run = w2v_run
    states = {name: c["state"] for name, c in run.components.items()}
    assert states["Word2VecGen"] == states["Trainer"] == states["BehaviorExampleGen"] == "COMPLETE", states
    assert states["ImportSchemaGen"] == "CACHED", states
    examples = run.artifact("BehaviorExampleGen", "examples")
    wv_art = run.artifact("Word2VecGen", "word_vectors")
    # the window ends exactly where the example generator's train split starts
    summary = json.loads(examples.get_string_custom_property("summary"))
    assert wv_art.get_int_custom_property("window_end_ts") == summary["train_start_ts"] == \
        examples.get_int_custom_property("train_start_ts")
    assert wv_art.get_int_custom_property("window_start_ts") == summary["train_start_ts"] - 2 * 86400
    wv = artifact.load(wv_art.uri)
    vocab = tft.TFTransformOutput(run.artifact("Transform", "transform_graph").uri).vocabulary_by_name(
        vocab_file_name(F.ITEM_VOCAB))
    model_dir = os.path.join(run.artifact("Trainer", "model").uri, "Format-Serving")
    loaded = tf.saved_model.load(model_dir)
    weights = {v.name: v.numpy() for v in loaded.model.variables}
    table = weights["item_embedding/embeddings:0"]
    expected = vocab_matrix(wv.item_ids, wv.item_vectors, vocab, table.shape[0])
    has = ~np.isnan(expected).any(axis=1)
    assert has.sum() >= 0.9 * len(wv.item_ids)             # (nearly) every vector found its vocabulary row
    np.testing.assert_array_equal(table[has], expected[has])   # frozen: still exactly the vectors
    frozen = weights["item_w2v_embedding/embeddings:0"]
    np.testing.assert_array_equal(frozen[has], expected[has])
    assert not frozen[~has].any()
    # the exported signature scores with the in-graph similarity features
    files = sorted(tf.io.gfile.glob(os.path.join(examples.uri, "Split-eval", "*")))
    records = tf.stack(list(tf.data.TFRecordDataset(files, compression_type="GZIP").take(64)))
    probs = loaded.signatures["serving_tf_example"](examples=records)["probabilities"].numpy()
    assert probs.shape == (64,) and np.all((probs > 0) & (probs < 1))


def test_kubeflow_package_compiles_with_word2vec(tmp_path):
    import yaml

    from feedrank.runners.kubeflow import compile_pipeline, task_executors
    from feedrank.runners.kubeflow_config import load_kubeflow_config
    from pipeline import create_pipeline

    cfg = config_lib.load(os.path.join(ROOT, "configs", "din_w2v.yaml"))
    out = compile_pipeline(create_pipeline, cfg, load_kubeflow_config(os.path.join(ROOT, "configs", "kubeflow.yaml")),
                           str(tmp_path / "pipeline.yaml"))
    spec = [d for d in yaml.safe_load_all(open(out)) if d][0]
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["Word2VecGen"]["inputs"]["parameters"]["input_base"] == {"componentInputParameter": "input_base"}
    assert "word_vectors" in tasks["Trainer"]["inputs"]["artifacts"]
    trainer = spec["deploymentSpec"]["executors"][task_executors(spec)["Trainer"]]["container"]
    assert trainer["resources"]["accelerator"]["count"] == "1"   # still the GPU-pool Trainer
