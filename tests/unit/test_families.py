"""The deep-interest model zoo: every family fits, saves and reloads (in this
process and in a fresh one) to identical scores; padding never changes a
score; DIEN's auxiliary loss is only a training loss and ignores padding."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train.families import FAMILIES, build_model
from tests.helpers.config import ROOT
from tests.helpers.model_harness import TINY, VOCAB_SIZES, fit_save_reload, random_batch

ZOO = ("dien", "bst", "double_channel", "multi_channel", "dnn", "wide_deep", "deepfm")
SMALL = {"transformer_heads": 2, "position_dim": 4, "aux_units": [8], "feature_mlp_units": [8],
         "cluster_dim": 4, "fusion_units": 4, "wide_buckets": 101, "fm_dim": 4}
_rng = np.random.default_rng(7)
CLUSTERED = {  # the lead's k-means labels and pretrained token vectors, in miniature
    "item_clusters": np.concatenate([[0], _rng.integers(-1, 6, VOCAB_SIZES["item"] - 1)]),
    "token_vectors": _rng.normal(size=(VOCAB_SIZES["token"], 5)).astype(np.float32),
    "click_encoder": "transformer", "fusion": "gated",
}
# Word2Vec post vectors (feedrank/train/word_vectors.py): NaN rows have no vector (padding, OOV, unseen posts)
_W2V = _rng.normal(size=(VOCAB_SIZES["item"], TINY["embedding_dims"]["item"])).astype(np.float32)
_W2V[0] = _W2V[-8:] = np.nan
W2V = {"item_vectors": _W2V, "word2vec": {"init": True, "freeze": True, "similarity": True}}
# variant name -> (family, config on top of TINY)
VARIANTS = {
    "dien": ("dien", SMALL),
    "bst": ("bst", SMALL),
    "double_channel": ("double_channel", SMALL),
    # the clustered variant exercises more (cluster lookup weight, pretrained
    # token table, Transformer click channel, gated fusion) than the default
    "multi_channel_clusters": ("multi_channel", {**SMALL, **CLUSTERED}),
    "dnn": ("dnn", SMALL),
    "wide_deep": ("wide_deep", SMALL),
    "deepfm": ("deepfm", SMALL),
    # initialised + frozen item table and the in-graph similarity features (frozen copy)
    "din_w2v": ("din", {**SMALL, **W2V}),
}
PADDING_ONLY = {  # built and checked for padding, not saved (saving is the slow part)
    "multi_channel": ("multi_channel", SMALL),
    "bst_mean_2layers": ("bst", {**SMALL, "bst_pooling": "mean", "transformer_layers": 2}),
    "multi_channel_hash": ("multi_channel", {**SMALL, "conversion_clusters_from": "hash",
                                             "conversion_clusters": 5}),
    # every family with the Word2Vec similarity features in `dense` (trainable init)
    **{f"{family}_w2v": (family, {**SMALL, **W2V, "word2vec": {"similarity": True}})
       for family in ("dien", "bst", "double_channel", "multi_channel", "dnn", "wide_deep", "deepfm")},
}


def test_every_zoo_family_is_registered():
    assert set(ZOO) | {"din"} <= set(FAMILIES)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Fits and saves every variant once: name -> (path, before, after)."""
    out = {}
    for name, (family, config) in VARIANTS.items():
        tmp = tmp_path_factory.mktemp(name)
        before, after, model = fit_save_reload(family, tmp, config)
        np.savez(tmp / "weights.npz", *model.get_weights())
        out[name] = (str(tmp / f"{family}_model"), before, after)
    return out


@pytest.mark.parametrize("name", list(VARIANTS))
def test_fit_save_reload_gives_identical_scores(saved, name):
    _, before, after = saved[name]
    assert before.shape == (256,) and np.all((before > 0) & (before < 1))
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def test_reload_in_a_fresh_process_gives_identical_scores(saved, tmp_path):
    paths = {name: path for name, (path, _, _) in saved.items()}
    script = (
        "import json, sys, numpy as np, tf_keras as keras\n"
        "import feedrank.train.families  # registers the feedrank layers\n"
        "from tests.helpers.model_harness import random_batch\n"
        "paths, out = json.loads(sys.argv[1]), sys.argv[2]\n"
        "x = random_batch(256)\n"
        "for name, path in paths.items():\n"
        "    model = keras.models.load_model(path)\n"
        "    np.save(f'{out}/{name}.npy', model.predict(x, verbose=0))\n"
        "    np.savez(f'{out}/{name}_weights.npz', *model.get_weights())\n"
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(paths), str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, (path, before, _) in saved.items():
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), before, rtol=1e-5, atol=1e-6,
                                   err_msg=name)
        # every weight comes back, training-only ones (DIEN's auxiliary net) included
        want = np.load(os.path.join(os.path.dirname(path), "weights.npz"))
        got = np.load(tmp_path / f"{name}_weights.npz")
        assert len(got.files) == len(want.files), name
        for key in want.files:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name} {key}")


# --------------------------------------------------------------------------
# Padding never changes a score
# --------------------------------------------------------------------------
ALL = {**VARIANTS, **PADDING_ONLY}


@pytest.fixture(scope="module")
def models():
    built = {}
    for name, (family, config) in ALL.items():
        keras.utils.set_random_seed(0)
        built[name] = build_model(family, VOCAB_SIZES, {**TINY, **config}, spec=F.BUILTIN)
    return built


def _left_padded(batch):
    """The same real histories moved to the end of each row (padding first)."""
    out = dict(batch)
    for s in F.BUILTIN.seq_features:
        ids = batch[F.idx(s.name)]
        moved = np.zeros_like(ids)
        for i, row in enumerate(ids):
            real = row[row != F.PAD_ID]
            if len(real):
                moved[i, -len(real):] = real
        out[F.idx(s.name)] = moved
    return out


def _rewrite_padding_rows(model, seed=0):
    rng = np.random.default_rng(seed)
    n = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Embedding) and layer.name.endswith("_embedding"):
            w = layer.get_weights()[0]
            w[F.PAD_ID] = rng.normal(size=w.shape[1]) * 50
            layer.set_weights([w])
            n += 1
    return n


@pytest.mark.parametrize("name", list(ALL))
def test_padding_never_changes_a_score(models, name):
    model = models[name]
    x = random_batch(64, seed=3)       # lengths 0..max_len, empty histories included
    before = model(x, training=False).numpy()
    moved = model(_left_padded(x), training=False).numpy()
    np.testing.assert_allclose(moved, before, rtol=1e-5, atol=1e-5,
                               err_msg="moving the history within its padding changed a score")
    assert _rewrite_padding_rows(model) >= 3       # item, category, region at least
    after = model(x, training=False).numpy()
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6,
                               err_msg="the padding rows of the embedding tables changed a score")


def test_history_changes_the_score(models):
    """The padding tests are not vacuous: a different real history moves scores."""
    x = random_batch(32, seed=4, min_len=3)
    y = dict(x)
    y[F.idx(F.CLICK_ITEMS.name)] = random_batch(32, seed=5, min_len=3)[F.idx(F.CLICK_ITEMS.name)]
    y[F.idx(F.CLICK_ITEMS.name)][x[F.idx(F.CLICK_ITEMS.name)] == F.PAD_ID] = F.PAD_ID
    y[F.idx(F.CLICK_ITEMS.name)][(x[F.idx(F.CLICK_ITEMS.name)] != F.PAD_ID)
                                 & (y[F.idx(F.CLICK_ITEMS.name)] == F.PAD_ID)] = 1
    for name, model in models.items():
        a, b = model(x, training=False).numpy(), model(y, training=False).numpy()
        assert np.abs(a - b).max() > 1e-7, name


# --------------------------------------------------------------------------
# DIEN's auxiliary loss inside the model
# --------------------------------------------------------------------------
def _aux_loss(model, x):
    tf.random.set_seed(11)             # the same negatives on every call
    model(x, training=True)
    assert len(model.losses) == 1
    return float(model.losses[0])


def test_dien_aux_loss_is_training_only_and_ignores_padding():
    keras.utils.set_random_seed(0)
    model = build_model("dien", VOCAB_SIZES, {**TINY, **SMALL, "aux_loss_weight": 0.5}, spec=F.BUILTIN)
    x = random_batch(64, seed=3)
    base = _aux_loss(model, x)
    assert base > 0
    model(x, training=False)
    assert model.losses == []
    _rewrite_padding_rows(model)
    np.testing.assert_allclose(_aux_loss(model, x), base, rtol=1e-5)
    empty = dict(x)
    for s in F.CLICK_SEQUENCE:
        empty[F.idx(s.name)] = np.zeros_like(x[F.idx(s.name)])
    assert _aux_loss(model, empty) == 0.0


def test_dien_without_aux_loss_has_no_sampler():
    model = build_model("dien", VOCAB_SIZES, {**TINY, **SMALL, "aux_loss_weight": 0.0}, spec=F.BUILTIN)
    names = {layer.name for layer in model.layers}
    assert "aux_loss" not in names and "aux_negatives" not in names
    model(random_batch(8), training=True)
    assert model.losses == []


def test_multi_channel_cluster_lookup_survives_reload(saved):
    path, _, _ = saved["multi_channel_clusters"]
    reloaded = keras.models.load_model(path)
    table = reloaded.get_layer("item_cluster_lookup").get_weights()[0]
    labels = CLUSTERED["item_clusters"]
    expected = np.where(labels >= 0, labels + 1, labels.max() + 2)
    expected[0] = 0
    np.testing.assert_array_equal(table, expected)


def test_bad_family_options_are_clear_errors():
    for family, config in (("bst", {"bst_pooling": "max"}), ("multi_channel", {"fusion": "sum"}),
                           ("multi_channel", {"click_encoder": "gru"}),
                           ("multi_channel", {"item_clusters": np.zeros(3)})):
        with pytest.raises(ValueError):
            build_model(family, VOCAB_SIZES, {**TINY, **SMALL, **config}, spec=F.BUILTIN)


def test_word_vectors_initialise_freeze_and_survive_reload(saved):
    """The frozen item table is the vectors where they exist (random elsewhere), after
    fitting and after a reload; the similarity table is a frozen zero-filled copy."""
    path, _, _ = saved["din_w2v"]
    reloaded = keras.models.load_model(path)
    has = ~np.isnan(_W2V).any(axis=1)
    items = reloaded.get_layer("item_embedding")
    assert not items.trainable
    table = items.get_weights()[0]
    np.testing.assert_array_equal(table[has], _W2V[has])
    assert np.abs(table[~has]).sum() > 0
    copy = reloaded.get_layer("item_w2v_embedding").get_weights()[0]
    np.testing.assert_array_equal(copy[has], _W2V[has])
    assert not copy[~has].any()


def test_word_vector_options_are_checked():
    for config, match in (({"word2vec": {"init": True}}, "none were given"),
                          ({**W2V, "word2vec": {"frozen": True}}, "unknown key"),
                          ({**W2V, "item_vectors": _W2V[:, :3]}, "item embedding dim"),
                          ({**W2V, "item_vectors": _W2V[:5]}, "one row per item table row")):
        with pytest.raises(ValueError, match=match):
            build_model("din", VOCAB_SIZES, {**TINY, **config}, spec=F.BUILTIN)


# --------------------------------------------------------------------------
# Declared item columns on the history side (`features.history_sequences`)
# --------------------------------------------------------------------------
ATTRIBUTED = F.FeatureSpec((F.Declared("items", "seller", "categorical"), F.Declared("users", "tier", "categorical")))
ATTRIBUTE_VOCABS = {**VOCAB_SIZES, "attr_item_seller": 7, "attr_user_tier": 5}


def _build(family: str, spec: F.FeatureSpec):
    keras.backend.clear_session()   # the same automatic layer names in both models
    keras.utils.set_random_seed(0)
    return build_model(family, ATTRIBUTE_VOCABS, {**TINY, **SMALL, "match_features": False}, spec=spec)


@pytest.mark.parametrize("family", ["din", "dien", "bst", "multi_channel", "dnn"])
def test_history_attributes_start_as_the_model_without_them_and_then_move_the_score(family):
    """At initialisation (zero projection) the model equals the same model without history
    attributes, weight for weight; once the projection is non-zero, as training makes it,
    another seller of the history posts, or of the candidate, changes the score."""
    from feedrank.train import synthetic

    model = _build(family, ATTRIBUTED)
    without = _build(family, F.FeatureSpec(ATTRIBUTED.declared, history_attributes=False))
    for layer in without.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    x = synthetic.random_batch(32, ATTRIBUTE_VOCABS, ATTRIBUTED, seed=4, min_len=3)
    base = model(x, training=False).numpy()
    np.testing.assert_allclose(base, without({k: x[k] for k in without.input_names}, training=False).numpy(),
                               rtol=1e-6, atol=1e-7)
    projection = model.get_layer("declared_attribute_projection")
    kernel = projection.get_weights()[0]
    assert not kernel.any()
    projection.set_weights([np.random.default_rng(1).normal(size=kernel.shape).astype(np.float32)])
    base = model(x, training=False).numpy()
    for names in ([F.idx(s.name) for s in ATTRIBUTED.attribute_sequences], [F.idx("item_seller")]):
        y = dict(x)
        for name in names:   # another seller for every real entry, padding kept
            y[name] = np.where(x[name] != F.PAD_ID, 1 + x[name] % (ATTRIBUTE_VOCABS["attr_item_seller"] - 1), F.PAD_ID)
        assert np.abs(model(y, training=False).numpy() - base).max() > 1e-5, (family, names)
