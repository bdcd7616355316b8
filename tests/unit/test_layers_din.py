"""DIN and the shared layers: hand-computed values, masking, serialisation."""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train.families import build_model
from tests.helpers.model_harness import TINY, VOCAB_SIZES, fit_save_reload, random_batch


def test_masked_pooling_matches_hand_computation():
    values = tf.constant([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = tf.constant([[True, True, False]])
    np.testing.assert_allclose(L.MaskedPooling("mean")(values, mask).numpy(), [[2.0, 3.0]])
    np.testing.assert_allclose(L.MaskedPooling("sum")(values, mask).numpy(), [[4.0, 6.0]])
    empty = L.MaskedPooling("mean")(values, tf.constant([[False, False, False]]))
    np.testing.assert_allclose(empty.numpy(), [[0.0, 0.0]])


def test_trim_padding_cuts_only_columns_padded_in_every_row():
    seq = tf.reshape(tf.range(12, dtype=tf.float32), [2, 3, 2])
    mask, out = L.TrimPadding()([tf.constant([[True, False, False], [True, True, False]]), seq])
    np.testing.assert_array_equal(mask.numpy(), [[True, False], [True, True]])
    np.testing.assert_array_equal(out.numpy(), seq.numpy()[:, :2])
    left = tf.constant([[False, False, True], [False, True, True]])  # left padding: nothing to cut
    assert L.TrimPadding()([left, seq])[1].shape == (2, 3, 2)
    empty, out = L.TrimPadding()([tf.zeros([2, 3], tf.bool), seq])  # all padding: one masked step stays
    assert out.shape == (2, 1, 2) and not empty.numpy().any()


def test_target_attention_matches_numpy_reference():
    att = L.TargetAttention(hidden_units=[3], activation="sigmoid")
    q = tf.constant([[0.5, -1.0]])
    k = tf.constant([[[1.0, 0.0], [0.0, 2.0], [7.0, 7.0]]])
    mask = tf.constant([[True, True, False]])
    out = att(q, k, mask).numpy()
    (w1, b1), (w2, b2) = att.score_mlp.layers[0].get_weights(), att.score_out.get_weights()
    qn, kn = q.numpy()[0], k.numpy()[0]
    expected = np.zeros(2)
    for t in range(2):  # the third step is padding
        x = np.concatenate([qn, kn[t], qn - kn[t], qn * kn[t]])
        h = 1 / (1 + np.exp(-(x @ w1 + b1)))
        expected += (h @ w2 + b2)[0] * kn[t]
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-6)


def test_attention_ignores_padded_keys():
    att = L.TargetAttention(hidden_units=[4])
    q = tf.random.normal([3, 5], seed=1)
    k = tf.random.normal([3, 6, 5], seed=2)
    mask = tf.constant([[True] * 6, [True] * 2 + [False] * 4, [False] * 6])
    garbage = tf.where(mask[..., None], k, tf.random.normal([3, 6, 5], seed=3) * 100)
    np.testing.assert_allclose(att(q, k, mask).numpy(), att(q, garbage, mask).numpy(), atol=1e-5)
    np.testing.assert_allclose(att(q, k, mask).numpy()[2], 0.0)


def test_din_padding_changes_nothing():
    """Rewriting the padding row of every embedding table leaves every score unchanged."""
    keras.utils.set_random_seed(0)
    model = build_model("din", VOCAB_SIZES, TINY, spec=F.BUILTIN)
    x = random_batch(64, seed=3)
    before = model(x, training=False).numpy()
    for v in F.BUILTIN.vocabs:
        table = model.get_layer(f"{v.name}_embedding")
        w = table.get_weights()[0]
        w[F.PAD_ID] = np.random.default_rng(0).normal(size=w.shape[1]) * 50
        table.set_weights([w])
    after = model(x, training=False).numpy()
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def test_layers_round_trip_their_config():
    for layer in (L.MaskedPooling("sum"), L.Dice(), L.TargetAttention([5, 3], softmax=True),
                  L.MatchFeatures(recent=4)):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_match_features_against_hand_computed_values():
    # histories: most recent real entry last; row 1 is left-padded, row 2 empty
    hist = np.array([[7, 3, 7, 7, 5, 0],
                     [0, 0, 7, 5, 7, 7],
                     [0, 0, 0, 0, 0, 0]], np.int64)
    cand = np.array([7, 7, 7], np.int64)
    got = L.MatchFeatures(recent=2)(cand, hist).numpy()
    # row 0: 3 of 5 match; the 2 most recent are (7, 5) -> 1/2; the last is 5 -> 0
    # row 1: 3 of 4 match; the 2 most recent are (7, 7) -> 1;   the last is 7 -> 1
    np.testing.assert_allclose(got, [[3 / 5, 1 / 2, 0], [3 / 4, 1, 1], [0, 0, 0]], rtol=1e-6)


def test_din_fit_save_reload(tmp_path):
    before, after, _ = fit_save_reload("din", tmp_path)
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def test_unknown_family_is_a_clear_error():
    try:
        build_model("nope", VOCAB_SIZES, TINY, spec=F.BUILTIN)
    except ValueError as e:
        assert "unknown model family 'nope'" in str(e) and "din" in str(e)
    else:
        raise AssertionError("expected ValueError")
