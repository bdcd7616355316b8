"""The user's side computed once per request (`feedrank.train.serving_graph`).

Every score of the shared path is compared with the unshared model: the
same Keras model on inputs where the user's side is copied to every
candidate row (the `ServingModule.broadcast_scores` path for raw requests).
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train import serving_graph as SG
from feedrank.train.families import FAMILIES, build_model
from tests.helpers.model_harness import TINY, VOCAB_SIZES, random_batch

CANDIDATES = (1, 20, 120)
SPEC = F.BUILTIN   # the synthetic batches' and the tiny run's feature contract


def _fitted(family, vocab_sizes, config=None, spec: F.FeatureSpec = SPEC):
    keras.utils.set_random_seed(0)
    model = build_model(family, vocab_sizes, {**TINY, **(config or {})}, spec=spec)
    x = random_batch(256, seed=1, spec=spec)
    y = (x[F.dense(F.INTEREST_CATEGORY_SHARE.name)] > 0.5).astype(np.float32)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return model


def _split(batch, user_row, n):
    """Transformed inputs: row ``user_row``'s user side at batch 1, the first n candidates."""
    user = SG.user_input_names(SPEC)
    return {k: (v[user_row:user_row + 1] if k in user else v[:n]) for k, v in batch.items()}


# gbdt is trained by TF-DF, not Keras's fit: tests/unit/test_gbdt_family.py serves it through this graph
@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"gbdt"}))
def test_shared_user_graph_equals_the_model_on_broadcast_inputs(family):
    model = _fitted(family, VOCAB_SIZES)
    batch = random_batch(max(CANDIDATES), seed=2, min_len=1, spec=SPEC)
    graph = SG.SharedUserGraph(model, fold=True, spec=SPEC)
    run = tf.function(lambda x, n: graph(x, n))
    for user_row in (0, 7):
        for n in CANDIDATES:
            inputs = _split(batch, user_row, n)
            want = model({k: np.broadcast_to(v, (n,) + v.shape[1:]) for k, v in inputs.items()},
                         training=False).numpy()
            got = run({k: tf.constant(v) for k, v in inputs.items()}, tf.constant(n)).numpy()
            assert got.shape == (n,)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{family} n={n}")


@pytest.mark.parametrize("softmax", [False, True])
def test_folded_target_attention_equals_the_layer(softmax):
    tf.random.set_seed(0)
    att = L.TargetAttention((12, 6), activation="sigmoid", softmax=softmax)
    n, length, d = 33, 50, 10
    q = tf.random.normal([n, d])
    k = tf.random.normal([1, length, d])
    mask = tf.constant([[True] * 37 + [False] * 13])
    want = att(q, tf.broadcast_to(k, [n, length, d]), tf.broadcast_to(mask, [n, length]))
    got = SG.folded_target_attention(att, q, k, mask)
    # a sum of 37 weighted keys of size ~10: float32 rounding differs in the 6th digit
    scale = float(np.abs(want.numpy()).max())
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6 * scale)
    empty = SG.folded_target_attention(att, q, k, tf.zeros_like(mask))   # no history: zeros
    np.testing.assert_array_equal(empty.numpy(), np.zeros([n, d], np.float32))


def test_din_attention_is_folded_and_history_layers_run_once():
    graph = SG.SharedUserGraph(_fitted("din", VOCAB_SIZES), fold=True, spec=SPEC)
    modes = {node.layer.name: mode for node, mode in graph._plan}
    assert modes["din_attention"] == modes["din_view_attention"] == "fold"
    assert modes["click_mean"] == "user"
    assert SG.SharedUserGraph(graph.model, fold=False, spec=SPEC)._plan[-1][1] == "cand"


def test_a_model_that_is_not_functional_is_refused():
    with pytest.raises(TypeError, match="functional Keras model"):
        SG.SharedUserGraph(keras.Sequential([keras.layers.Dense(1)]), spec=SPEC)


# ----------------------------------------------------------------------------
# Raw requests through the tf.Transform layer (the tiny pipeline's Transform)
# ----------------------------------------------------------------------------
def _raw_request(user_ex, candidates, width=50):
    """A raw request: ``user_ex``'s histories left-padded to ``width``, N candidates."""
    from tests.e2e.test_serving_contract import _request, _values

    req = _request(user_ex, candidates, SPEC)
    for s in F.BUILTIN.seq_features:
        h = _values(user_ex, s.name)[-width:]
        req[s.name] = tf.constant([[""] * (width - len(h)) + h])
    return req


@pytest.fixture(scope="module")
def pipeline_parts(first_run):
    import tensorflow_transform as tft

    from feedrank.evaluate.mlmd_reader import latest_run
    from tests.e2e.test_serving_contract import _eval_examples, _values

    cfg, _ = first_run
    assert cfg.features_spec == SPEC   # configs/tiny.yaml declares no columns
    tft_output = tft.TFTransformOutput(latest_run(cfg.metadata_path).artifact("Transform", "transform_graph").uri)
    examples = _eval_examples(cfg, 400)
    users = [e for e in examples if len(_values(e, F.CLICK_ITEMS.name)) >= 3][:3]
    assert users, "no eval example with a click history"
    return tft_output, examples[:max(CANDIDATES)], users


@pytest.mark.e2e
@pytest.mark.parametrize("family", ["din", "bst", "dien"])
def test_serve_raw_shares_the_user_side_and_equals_the_broadcast_path(pipeline_parts, family):
    from feedrank.train.export import ServingModule

    tft_output, candidates, users = pipeline_parts
    module = ServingModule(_fitted(family, _vocab_sizes(tft_output)), tft_output, 0.3, spec=SPEC)
    broadcast = tf.function(module.broadcast_scores)
    for user_ex in users:
        for n in CANDIDATES:
            req = _raw_request(user_ex, candidates[:n])
            got = module.serve_raw(req)["probabilities"].numpy()
            want = broadcast(req).numpy()
            assert got.shape == (n,)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{family} n={n}")
        # the user side sent once per candidate takes the broadcast path, same scores
        per_row = {k: (tf.repeat(v, 20, axis=0) if k in SPEC.features_of_side("user") else v)
                   for k, v in _raw_request(user_ex, candidates[:20]).items()}
        np.testing.assert_allclose(module.serve_raw(per_row)["probabilities"].numpy(),
                                   module.serve_raw(_raw_request(user_ex, candidates[:20]))["probabilities"].numpy(),
                                   rtol=1e-5, atol=1e-6)


def _vocab_sizes(tft_output):
    from feedrank.train.trainer import vocab_sizes
    return vocab_sizes(tft_output, spec=SPEC)


def _plain(x):
    """Nested lists with bytes decoded, for JSON."""
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x.decode() if isinstance(x, bytes) else x


_RELOAD = """
import json, sys
import tensorflow as tf
req = json.load(open(sys.argv[2]))
fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = {}
for name, r in req.items():
    args = {k: tf.constant(v, tf.float32 if isinstance(v[0], float) else tf.string) for k, v in r.items()}
    out[name] = fn(**args)["probabilities"].numpy().tolist()
json.dump(out, open(sys.argv[3], "w"))
"""


@pytest.mark.e2e
def test_saved_model_reloaded_in_a_fresh_process_gives_the_same_scores(pipeline_parts, tmp_path):
    from feedrank.train.export import ServingModule, export

    tft_output, candidates, users = pipeline_parts
    model = _fitted("din", _vocab_sizes(tft_output))
    module = ServingModule(model, tft_output, 1.0, spec=SPEC)
    requests = {f"n{n}": _raw_request(users[0], candidates[:n]) for n in CANDIDATES}
    want = {k: module.serve_raw(r)["probabilities"].numpy() for k, r in requests.items()}
    path = export(model, tft_output, str(tmp_path / "model"), spec=SPEC)
    as_json = {k: {f: _plain(v.numpy().tolist()) for f, v in r.items()} for k, r in requests.items()}
    (tmp_path / "req.json").write_text(json.dumps(as_json))
    subprocess.run([sys.executable, "-c", _RELOAD, path, str(tmp_path / "req.json"), str(tmp_path / "out.json")],
                   check=True)
    got = json.loads((tmp_path / "out.json").read_text())
    for k in requests:
        np.testing.assert_allclose(np.array(got[k], np.float32), want[k], rtol=1e-5, atol=1e-6, err_msg=k)
