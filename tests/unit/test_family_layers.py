"""The family-specific layers (DIEN, BST, multi-channel, Wide & Deep, DeepFM): NumPy
references on hand-set weights, masking, the DIEN auxiliary loss and its
negatives, serialisation under their registered names."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train.families import bst, build_model, deepfm, dien, multi_channel, wide_deep
from tests.helpers.model_harness import TINY, VOCAB_SIZES, random_batch


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_layers_keep_their_registered_names():
    """Saved models find their layers by ``feedrank>ClassName``, not by module path."""
    layers = (dien.AUGRUCell, dien.BilinearAttention, dien.NegativeSampler, dien.AuxiliaryLoss,
              bst.RecencyPositionEmbedding, bst.TransformerBlock, multi_channel.ClusterLookup,
              multi_channel.GatedFusion, wide_deep.HashedCross, deepfm.FactorizationMachine,
              L.TrimPadding, L.MaskedPooling, L.Dice, L.TargetAttention, L.MatchFeatures)
    for cls in layers:
        name = f"feedrank>{cls.__name__}"
        assert keras.saving.get_registered_name(cls) == name
        assert keras.saving.get_registered_object(name) is cls


def test_augru_matches_numpy_reference_with_a_masked_step():
    units, d = 2, 3
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(d, 3 * units)).astype(np.float32)
    recurrent = rng.normal(size=(units, 3 * units)).astype(np.float32)
    bias = rng.normal(size=(3 * units,)).astype(np.float32)
    cell = dien.AUGRUCell(units)
    rnn = keras.layers.RNN(cell)
    x = rng.normal(size=(2, 3, d)).astype(np.float32)
    att = np.array([[0.2, 0.5, 0.3], [0.7, 0.3, 0.0]], np.float32)
    mask = np.array([[True, False, True], [True, True, False]])
    rnn(np.concatenate([x, att[..., None]], -1), mask=mask)   # builds
    cell.set_weights([kernel, recurrent, bias])
    out = rnn(np.concatenate([x, att[..., None]], -1), mask=mask).numpy()

    expected = np.zeros((2, units), np.float32)
    for b in range(2):
        h = np.zeros(units)
        for t in range(3):
            if not mask[b, t]:
                continue  # a masked step keeps the state
            xz, hz = x[b, t] @ kernel + bias, h @ recurrent
            u = _sigmoid(xz[:units] + hz[:units]) * att[b, t]
            r = _sigmoid(xz[units:2 * units] + hz[units:2 * units])
            c = np.tanh(xz[2 * units:] + r * hz[2 * units:])
            h = (1 - u) * h + u * c
        expected[b] = h
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_augru_zero_attention_keeps_the_state_and_empty_history_is_zero():
    cell = dien.AUGRUCell(4)
    rnn = keras.layers.RNN(cell)
    x = tf.random.normal([2, 5, 6], seed=0)
    zero_att = tf.concat([x, tf.zeros([2, 5, 1])], -1)
    np.testing.assert_allclose(rnn(zero_att).numpy(), 0.0, atol=1e-7)
    inputs = tf.concat([x, tf.ones([2, 5, 1])], -1)
    np.testing.assert_allclose(rnn(inputs, mask=tf.zeros([2, 5], tf.bool)).numpy(), 0.0)


def test_bilinear_attention_matches_hand_computation():
    att = dien.BilinearAttention()
    keys = tf.constant([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])
    query = tf.constant([[0.5, -1.0, 2.0]])
    mask = tf.constant([[True, True, False]])
    att(keys, query, mask)
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]], np.float32)  # query dim x key dim
    att.proj.set_weights([w])
    out = att(keys, query, mask).numpy()[0]
    q = query.numpy()[0] @ w                     # [2]
    s = np.array([keys.numpy()[0, 0] @ q, keys.numpy()[0, 1] @ q])
    expected = np.exp(s) / np.exp(s).sum()
    np.testing.assert_allclose(out, [expected[0], expected[1], 0.0], rtol=1e-5, atol=1e-7)
    empty = att(keys, query, tf.zeros([1, 3], tf.bool)).numpy()
    np.testing.assert_allclose(empty, 0.0)


# --------------------------------------------------------------------------
# DIEN auxiliary loss and its negatives
# --------------------------------------------------------------------------
def _aux_inputs(seed=0):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(3, 5, 4)).astype(np.float32)
    pos = rng.normal(size=(3, 5, 2)).astype(np.float32)
    neg = rng.normal(size=(3, 5, 2)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    valid = np.ones((3, 5), bool)
    return hidden, pos, neg, mask, valid


def test_aux_loss_matches_hand_computation():
    aux = dien.AuxiliaryLoss(weight=1.0, hidden_units=[])
    hidden, pos, neg, mask, valid = _aux_inputs()
    aux([hidden, pos, neg, mask, valid])
    w = np.random.default_rng(1).normal(size=(6, 1)).astype(np.float32)
    aux.out.set_weights([w, np.array([0.1], np.float32)])
    got = float(aux.loss_value(hidden, pos, neg, mask, valid))
    terms = []
    for b in range(3):
        for t in range(4):
            if mask[b, t] and mask[b, t + 1]:
                lp = np.concatenate([hidden[b, t], pos[b, t + 1]]) @ w[:, 0] + 0.1
                ln = np.concatenate([hidden[b, t], neg[b, t + 1]]) @ w[:, 0] + 0.1
                terms.append(-np.log(_sigmoid(lp)) - np.log(1 - _sigmoid(ln)))
    assert len(terms) == 2 + 4
    np.testing.assert_allclose(got, np.mean(terms), rtol=1e-5)


def test_aux_loss_ignores_padded_steps_and_is_zero_on_all_padding():
    aux = dien.AuxiliaryLoss(weight=1.0, hidden_units=[8])
    hidden, pos, neg, mask, valid = _aux_inputs()
    base = float(aux.loss_value(hidden, pos, neg, mask, valid))
    pad = ~mask[..., None]
    rng = np.random.default_rng(5)
    garbage = [np.where(pad, rng.normal(size=a.shape).astype(np.float32) * 100, a) for a in (hidden, pos, neg)]
    # NaN at padded steps must not leak either
    garbage[1] = np.where(pad, np.nan, garbage[1]).astype(np.float32)
    np.testing.assert_allclose(float(aux.loss_value(*garbage, mask, valid)), base, rtol=1e-6)
    none = np.zeros_like(mask)
    assert float(aux.loss_value(hidden, pos, neg, none, valid)) == 0.0
    # a single real step has no next click: no pair, no loss
    one = np.zeros_like(mask)
    one[:, 0] = True
    assert float(aux.loss_value(hidden, pos, neg, one, valid)) == 0.0


def test_aux_loss_is_added_only_in_training():
    aux = dien.AuxiliaryLoss(weight=0.5, hidden_units=[4])
    hidden, pos, neg, mask, valid = _aux_inputs()
    out = aux([hidden, pos, neg, mask, valid], training=False)
    np.testing.assert_array_equal(out.numpy(), hidden)
    assert aux.losses == []
    aux([hidden, pos, neg, mask, valid], training=True)
    assert len(aux.losses) == 1
    np.testing.assert_allclose(float(aux.losses[0]), 0.5 * float(aux.loss_value(hidden, pos, neg, mask, valid)),
                               rtol=1e-6)


def test_negatives_come_from_the_pool_and_never_equal_the_positive():
    pool = 40
    rng = np.random.default_rng(0)
    ids = rng.integers(1, pool, (64, 12)).astype(np.int64)
    ids[:, 8:] = 0                                    # right padding
    sampler = dien.NegativeSampler(pool, num_tries=4)
    tf.random.set_seed(0)
    seen = set()
    for _ in range(20):
        neg, valid = (t.numpy() for t in sampler(ids, training=True))
        real = ids != 0
        assert neg.min() >= 1 and neg.max() < pool
        assert not np.any((neg == ids)[real]), "a negative equals its positive"
        in_seq = (neg[:, :, None] == ids[:, None, :]).any(-1)
        assert not np.any(in_seq & valid), "a valid negative is one of the sequence's own posts"
        assert valid[real].mean() > 0.9
        seen.update(neg[valid].tolist())
    assert seen == set(range(1, pool)), "negatives should cover the whole pool"


def test_negatives_collide_when_the_sequence_holds_the_whole_pool():
    sampler = dien.NegativeSampler(4, num_tries=3)
    ids = np.array([[1, 2, 3, 0]], np.int64)
    neg, valid = (t.numpy() for t in sampler(ids, training=True))
    assert not valid.any()
    assert np.all(neg[0, :3] != ids[0, :3])
    neg, valid = (t.numpy() for t in sampler(ids, training=False))
    assert not valid.any() and not neg.any()


# --------------------------------------------------------------------------
# BST and the rest
# --------------------------------------------------------------------------
def test_recency_positions_ignore_where_padding_sits():
    mask = tf.constant([[True, True, True, False, False], [False, False, True, True, True],
                        [True, False, True, False, True]])
    np.testing.assert_array_equal(bst.recency_positions(mask).numpy(),
                                  [[2, 1, 0, 0, 0], [3, 3, 2, 1, 0], [2, 2, 1, 1, 0]])


def test_transformer_attention_on_padded_keys_is_zero():
    block = bst.TransformerBlock(num_heads=2)
    x = tf.random.normal([3, 6, 8], seed=1)
    mask = tf.constant([[True] * 6, [True, True, False, False, False, True], [False] * 5 + [True]])
    out = block(x, mask)
    w = block.attention_scores(x, mask).numpy()      # [B, heads, L, L]
    np.testing.assert_array_equal(w[~np.broadcast_to(mask.numpy()[:, None, None, :], w.shape)], 0.0)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    garbage = tf.where(mask[..., None], x, tf.random.normal([3, 6, 8], seed=2) * 100)
    np.testing.assert_allclose(block(garbage, mask).numpy()[mask.numpy()], out.numpy()[mask.numpy()],
                               rtol=1e-4, atol=1e-5)


def test_position_embedding_concatenates_recency_rows():
    pe = bst.RecencyPositionEmbedding(4, 2)
    values = tf.zeros([1, 3, 1])
    mask = tf.constant([[True, False, True]])
    pe(values, mask)
    table = np.arange(8, dtype=np.float32).reshape(4, 2)
    pe.set_weights([table])
    out = pe(values, mask).numpy()[0]
    np.testing.assert_array_equal(out[:, 1:], table[[1, 1, 0]])
    np.testing.assert_array_equal(out[:, 0], 0.0)


def test_first_occurrence_mask_is_multi_hot():
    ids = tf.constant([[3, 5, 3, 5, 7, 0, 0], [0, 2, 2, 0, 0, 0, 0]], tf.int64)
    mask = tf.constant(np.array([[1, 1, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0, 0]], bool))
    np.testing.assert_array_equal(wide_deep.first_occurrence_mask(ids, mask).numpy(),
                                  [[1, 1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0, 0]])


def test_hashed_cross_is_deterministic_and_in_range():
    cross = wide_deep.HashedCross(101)
    a = tf.constant([1, 2, 3], tf.int64)
    b = tf.constant([[4, 5], [4, 5], [0, 9]], tf.int64)
    out = cross(a, b).numpy()
    assert out.shape == (3, 2) and out.min() >= 0 and out.max() < 101
    np.testing.assert_array_equal(out, wide_deep.HashedCross(101)(a, b).numpy())
    assert out[0, 0] != out[1, 0]


def test_cluster_table_and_lookup():
    table, rows = multi_channel.cluster_table(np.array([5, 0, 2, -1, 1]), 5)
    np.testing.assert_array_equal(table, [0, 1, 3, 4, 2])
    assert rows == 5                                   # pad + 3 clusters + unknown
    lookup = multi_channel.ClusterLookup(5)
    lookup.set_table(table)
    np.testing.assert_array_equal(lookup(tf.constant([[1, 3, 0]])).numpy(), [[1, 4, 0]])
    assert not lookup.trainable_weights
    with pytest.raises(ValueError):
        multi_channel.cluster_table(np.zeros(4), 5)
    h = multi_channel.hash_clusters(100, 7)
    assert h.min() >= 0 and h.max() < 7 and len(set(h.tolist())) == 7


def test_gated_fusion_shape():
    fusion = multi_channel.GatedFusion(3)
    out = fusion([tf.ones([2, 4]), tf.ones([2, 5]), tf.ones([2, 1])])
    assert out.shape == (2, 9)


def test_family_layers_round_trip_their_config():
    for layer in (dien.AUGRUCell(5), dien.BilinearAttention(), dien.NegativeSampler(10, 3),
                  dien.AuxiliaryLoss(0.3, [7]), bst.RecencyPositionEmbedding(9, 3, "add"),
                  bst.TransformerBlock(3, 12, 0.1), multi_channel.ClusterLookup(11), multi_channel.GatedFusion(6),
                  wide_deep.HashedCross(13), deepfm.FactorizationMachine()):
        config = layer.get_config()
        clone = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(layer))
        assert type(clone) is type(layer)
        assert clone.get_config() == config


# --------------------------------------------------------------------------
# DeepFM
# --------------------------------------------------------------------------
def _pairwise(v):
    """sum over field pairs i < j of <v_i, v_j>, pair by pair: v [B, F, k] -> [B]."""
    out = np.zeros(v.shape[0])
    for i in range(v.shape[1]):
        for j in range(i + 1, v.shape[1]):
            out += (v[:, i] * v[:, j]).sum(-1)
    return out


def test_factorization_machine_matches_the_pairwise_sum():
    v = np.array([[[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]]], np.float32)   # one row, 3 fields, k = 2
    fm = deepfm.FactorizationMachine()
    # <v1,v2> + <v1,v3> + <v2,v3> = (3 - 2) + 0.5 + 1.5
    np.testing.assert_allclose(fm(v).numpy(), [[3.0]])
    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(fm(v).numpy()[:, 0], _pairwise(v), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fm([v[:, f] for f in range(6)]).numpy()[:, 0], _pairwise(v), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fm(v[:, :1]).numpy(), 0.0)   # one field: no pair
    with pytest.raises(ValueError, match="field vectors"):
        fm(v[:, 0])


def test_deepfm_fm_terms_match_hand_computation_over_the_shared_tables():
    """The FM's first- and second-order terms of a built DeepFM, with small weights set by
    hand (padding rows set large: they must not count), against NumPy over the shared
    tables; the deep MLP's input is the same field vectors (then the dense features);
    the score is sigmoid(first + second + deep)."""
    k = 3
    keras.utils.set_random_seed(0)
    model = build_model("deepfm", VOCAB_SIZES, {**TINY, "fm_dim": k}, spec=F.BUILTIN)
    rng = np.random.default_rng(1)
    tables, projections, weights = {}, {}, {}
    for v in F.BUILTIN.vocabs:
        layer = model.get_layer(f"{v.name}_embedding")
        t = (rng.normal(size=layer.get_weights()[0].shape) * 0.3).astype(np.float32)
        t[F.PAD_ID] = 100.0
        layer.set_weights([t])
        tables[v.name] = t
    for name in deepfm.field_names(F.BUILTIN):
        layer = model.get_layer(f"fm_{name}_field")
        projections[name] = (rng.normal(size=layer.get_weights()[0].shape) * 0.3).astype(np.float32)
        layer.set_weights([projections[name]])
        layer = model.get_layer(f"fm_{name}_weight_embedding")
        weights[name] = (rng.normal(size=layer.get_weights()[0].shape) * 0.1).astype(np.float32)
        weights[name][F.PAD_ID] = 100.0
        layer.set_weights([weights[name]])
    dense_w = np.array([[0.1 * (i % 5) - 0.2] for i in range(model.get_layer("fm_dense").input.shape[-1])],
                       np.float32)
    model.get_layer("fm_dense").set_weights([dense_w, np.array([0.05], np.float32)])

    x = random_batch(16, seed=2)
    for s in F.BUILTIN.seq_features:       # row 0: no behaviour at all
        x[F.idx(s.name)][0] = F.PAD_ID
    probe = keras.Model(model.inputs, [model.get_layer("fm_first_order").output,
                                       model.get_layer("fm_second_order").output,
                                       model.get_layer("deep_logit").output,
                                       model.get_layer("fm_dense").input, model.output,
                                       model.get_layer("deep_input").output])
    first, second, deep, dense, prob, deep_in = (t.numpy() for t in probe(x, training=False))

    vocab = ({f.name: f.vocab.name for f in F.BUILTIN.id_features}
             | {s.name: s.vocab.name for s in F.BUILTIN.seq_features})
    fields, want_first = [], dense.astype(np.float64) @ dense_w[:, 0] + 0.05
    for name in deepfm.field_names(F.BUILTIN):
        ids = x[F.idx(name)]
        if ids.ndim == 1:
            row, w = tables[vocab[name]][ids], weights[name][ids, 0]
        else:
            real = (ids != F.PAD_ID)[..., None]
            n = np.maximum(real.sum(1), 1)
            row = (tables[vocab[name]][ids] * real).sum(1) / n
            w = (weights[name][ids] * real).sum(1)[:, 0] / n[:, 0]
        fields.append(row @ projections[name])
        want_first = want_first + w
    v = np.stack(fields, axis=1)                                     # [B, F, k]
    assert v.shape == (16, len(F.BUILTIN.id_features) + len(F.BUILTIN.seq_features), k)
    np.testing.assert_allclose(second[:, 0], _pairwise(v), rtol=1e-4, atol=1e-5)
    # the deep part reads the very same field vectors, then the dense features
    np.testing.assert_allclose(deep_in, np.concatenate([v.reshape(16, -1), dense], -1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(first[:, 0], want_first, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(prob, _sigmoid(first[:, 0] + second[:, 0] + deep[:, 0]), rtol=1e-5, atol=1e-6)
