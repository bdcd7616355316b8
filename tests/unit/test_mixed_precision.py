"""Masked softmaxes under the ``mixed_float16`` policy (Keras runs it on CPU):
computed in float32, exactly 0 on padding, a zero vector for a row with no
real step, and never NaN (scores or gradients), for a user with no clicks included;
DeepFM's pairwise term is summed in float32."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train.families import bst, build_model, deepfm, dien
from tests.helpers.model_harness import TINY, VOCAB_SIZES, random_batch


@pytest.fixture
def mixed_float16():
    """The global mixed_float16 policy for one test, restored afterwards."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def _softmax(s):
    e = np.exp(s - s.max())
    return e / e.sum()


def test_masked_softmax_of_float16_scores_is_float32_exact_and_zero_on_empty_rows():
    scores = tf.constant([[1.0, 2.0, 300.0], [0.5, -4.0, 7.0], [3.0, 3.0, 3.0]], tf.float16)
    mask = tf.constant([[True, True, False], [True, True, True], [False, False, False]])
    w = L.masked_softmax(scores, mask)
    assert w.dtype == tf.float16
    out = w.numpy().astype(np.float64)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], [*_softmax(np.array([1.0, 2.0])), 0.0], atol=1e-3)
    np.testing.assert_allclose(out[1], _softmax(np.array([0.5, -4.0, 7.0])), atol=1e-3)
    np.testing.assert_array_equal(out[2], 0.0)
    # The float16 way (-1e9 in float16 is -inf) gives NaN on the empty row: what this guards against.
    naive = tf.nn.softmax(tf.where(mask, scores, tf.fill(tf.shape(scores), tf.constant(-1e9, tf.float16))))
    assert np.isnan(naive.numpy()[2]).all()


def test_bilinear_attention_under_mixed_float16_matches_hand_computation(mixed_float16):
    att = dien.BilinearAttention()
    keys = tf.constant([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]], [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])
    query = tf.constant([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]])
    mask = tf.constant([[True, True, False], [False, False, False]])   # row 2: no clicks
    att(keys, query, mask)
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]], np.float32)
    att.proj.set_weights([w])
    out = att(keys, query, mask)
    assert att.compute_dtype == "float16" and out.dtype == tf.float16
    out = out.numpy().astype(np.float64)
    q = query.numpy()[0] @ w
    s = np.array([keys.numpy()[0, 0] @ q, keys.numpy()[0, 1] @ q])
    np.testing.assert_allclose(out[0], [*_softmax(s), 0.0], atol=2e-3)
    np.testing.assert_array_equal(out[1], 0.0)


def test_target_attention_softmax_under_mixed_float16_has_no_nan(mixed_float16):
    att = L.TargetAttention(hidden_units=[4], softmax=True)
    q = tf.cast(tf.random.normal([3, 5], seed=1), tf.float16)     # as float16 embeddings give them
    k = tf.cast(tf.random.normal([3, 6, 5], seed=2), tf.float16)
    mask = tf.constant([[True] * 6, [True] * 2 + [False] * 4, [False] * 6])
    assert np.isfinite(att(q, k, mask).numpy().astype(np.float64)).all()
    w = att.scores(q, k, mask).numpy().astype(np.float64)
    raw = att.score_out(att.score_mlp(tf.concat(
        [tf.broadcast_to(q[:, None], k.shape), k, q[:, None] - k, q[:, None] * k], -1)))
    raw = tf.cast(tf.squeeze(raw, -1), tf.float32).numpy()
    np.testing.assert_allclose(w[0], _softmax(raw[0]), atol=2e-3)
    np.testing.assert_allclose(w[1], [*_softmax(raw[1, :2]), 0, 0, 0, 0], atol=2e-3)
    np.testing.assert_array_equal(w[2], 0.0)


def test_transformer_attention_under_mixed_float16_matches_hand_computation(mixed_float16):
    block = bst.TransformerBlock(num_heads=1)
    x = tf.random.normal([2, 4, 6], seed=4)
    mask = tf.constant([[True, True, False, True], [False] * 4])      # row 2: every key padded
    out = block(x, mask)
    assert np.isfinite(out.numpy().astype(np.float64)).all()
    w = block.attention_scores(x, mask).numpy().astype(np.float64)   # [B, 1, L, L]
    (wq, bq), (wk, bk) = block.mha._query_dense.get_weights(), block.mha._key_dense.get_weights()
    xn = x.numpy().astype(np.float64)
    qn = np.einsum("bld,dnh->blnh", xn, wq) + bq
    kn = np.einsum("bld,dnh->blnh", xn, wk) + bk
    s = np.einsum("bqh,bkh->bqk", qn[:, :, 0], kn[:, :, 0]) / np.sqrt(wq.shape[-1])
    for i in range(4):
        real = mask.numpy()[0]
        expected = np.zeros(4)
        expected[real] = _softmax(s[0, i, real])
        np.testing.assert_allclose(w[0, 0, i], expected, atol=3e-3)
    np.testing.assert_array_equal(w[1], 0.0)


def test_factorization_machine_under_mixed_float16_sums_in_float32(mixed_float16):
    """(150 + 150)^2 overflows float16; the pairwise term 150 * 150 does not."""
    fm = deepfm.FactorizationMachine()
    v = tf.constant([[[150.0], [150.0]]], tf.float16)
    out = fm(v)
    assert fm.compute_dtype == "float16" and out.dtype == tf.float16
    np.testing.assert_allclose(out.numpy().astype(np.float64), [[22500.0]], rtol=1e-3)


@pytest.mark.parametrize("family", ["din", "dien", "bst", "multi_channel", "double_channel", "dnn", "wide_deep",
                                    "deepfm"])
def test_a_user_with_no_history_scores_a_number_under_mixed_float16(mixed_float16, family):
    keras.utils.set_random_seed(0)
    model = build_model(family, VOCAB_SIZES, {**TINY, "gru_units": 8, "transformer_heads": 2}, spec=F.BUILTIN)
    x = random_batch(8, seed=1, min_len=1)
    for s in F.BUILTIN.seq_features:   # the first user has no behaviour at all
        x[F.idx(s.name)][0] = F.PAD_ID
    p = model.predict(x, verbose=0)
    assert p.dtype == np.float32 and np.isfinite(p).all(), p
    x1 = {k: v[:1] for k, v in x.items()}   # alone in its batch: every step of every sequence is padding
    assert np.isfinite(model.predict(x1, verbose=0)).all()
    # A padded step's NaN would vanish from the scores (masked out) but not from the gradients.
    with tf.GradientTape() as tape:
        p = model(x, training=True)
        loss = tf.reduce_mean(keras.losses.binary_crossentropy(tf.ones([8, 1]), p[:, None]))
        loss += tf.add_n([tf.cast(extra, tf.float32) for extra in model.losses] or [0.0])
    grads = tape.gradient(loss, model.trainable_variables)
    for var, g in zip(model.trainable_variables, grads):
        if g is not None:
            values = g.values if isinstance(g, tf.IndexedSlices) else g
            assert np.isfinite(tf.cast(values, tf.float32).numpy()).all(), var.name
