"""The parts of `feedrank.train.serving_graph` that keep the user's side at batch 1
compute what the model computes with the user's side copied to every candidate."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train import serving_graph as SG
from feedrank.train.families import build_model
from feedrank.transform.crosses import cross_features
from tests.helpers.model_harness import TINY, VOCAB_SIZES, random_batch

SPEC = F.BUILTIN


def test_id_dropout_keeps_the_histories_user_side_and_the_attention_folded():
    keras.utils.set_random_seed(0)
    config = {**TINY, "id_dropout": 0.3, "attention_units": [8, 4]}
    model = build_model("din", VOCAB_SIZES, config, spec=SPEC)   # untrained: compared with itself
    graph = SG.SharedUserGraph(model, spec=SPEC)
    modes = {node.layer.name: mode for node, mode in graph._plan}
    assert modes["item_id_dropout"] == "each"
    assert modes["din_attention"] == modes["din_view_attention"] == "fold"
    assert modes["click_mean"] == "user" and modes["match_features"] == "self"
    batch = random_batch(40, seed=2, spec=SPEC)   # some histories empty
    user = SG.user_input_names(SPEC)
    run = tf.function(lambda x, n: graph(x, n))
    for row in range(6):
        for n in (1, 40):
            inputs = {k: (v[row:row + 1] if k in user else v[:n]) for k, v in batch.items()}
            want = model({k: np.broadcast_to(v, (n,) + v.shape[1:]) for k, v in inputs.items()},
                         training=False).numpy()
            got = run({k: tf.constant(v) for k, v in inputs.items()}, tf.constant(n)).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"row {row}, n {n}")


@pytest.mark.parametrize("activation,softmax", [("sigmoid", False), ("sigmoid", True), ("dice", False)])
@pytest.mark.parametrize("trim", [True, False])
def test_folded_attention_equals_the_layer_with_and_without_trimming(activation, softmax, trim):
    tf.random.set_seed(0)
    att = L.TargetAttention((12, 6), activation=activation, softmax=softmax)
    n, length, d = 17, 30, 10
    q = tf.random.normal([n, d])
    k = tf.random.normal([1, length, d])
    fold = tf.function(lambda m: SG.folded_target_attention(att, q, k, m, trim=trim))
    for real in ([False] * 11 + [True] * 19, [True] * 5 + [False] * 20 + [True] * 5, [True] * 30, [False] * 30):
        mask = tf.constant([real])
        want = att(q, tf.broadcast_to(k, [n, length, d]), tf.broadcast_to(mask, [n, length])).numpy()
        got = fold(mask).numpy()
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale, err_msg=f"{sum(real)} real steps")


def test_shared_crosses_equal_the_crosses_value_for_value():
    regions = tf.constant(["r1", "r2", "", "r1", "r3"])
    categories = tf.constant(["c1", "c3", "", "c9", "c2"])
    n = 5
    for history, user_region in ((["c1", "c2", "c1", "c3"], "r1"), ([], "r1"), (["c2"], ""), (["c1"] * 7, "r3")):
        padded = tf.constant([[""] * 3 + history], tf.string)
        want = cross_features(tf.constant([user_region] * n), regions,
                              tf.broadcast_to(padded, [n, padded.shape[1]]), categories)
        got = SG.shared_crosses(tf.constant([user_region]), regions, tf.constant(history, tf.string), categories)
        assert sorted(got) == sorted(want)
        for name in want:
            np.testing.assert_array_equal(got[name].numpy(), want[name].numpy(), err_msg=f"{name} {history}")


def test_one_row_padding_is_stripped_as_the_ragged_rows_are():
    for row in (["", "", "a", "b"], ["a", "", "b", ""], ["", ""], [""], ["1", "2", "3", "4", "5"]):
        x = tf.constant([row])
        want = SG.strip_padding(x, 3).to_sparse()
        got = SG.strip_padding_one_row(x, 3)
        np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
        np.testing.assert_array_equal(got.values.numpy(), want.values.numpy())
        np.testing.assert_array_equal(got.dense_shape.numpy(), want.dense_shape.numpy())


def test_a_declared_attribute_keeps_its_missing_values_beside_its_posts():
    """A history attribute's padding is where its channel's item ids are empty: a missing
    value "" of a real post stays in place, as in the example (other sequences drop every "")."""
    ids = tf.constant([["", "a", "b", "c", "d"]])
    seller = tf.constant([["", "s1", "", "s2", ""]])
    want = [b"s1", b"", b"s2", b""]
    assert SG.strip_padding(seller, 50, ids).to_list() == [want]
    assert SG.strip_padding(seller, 3, ids).to_list() == [want[-3:]]
    assert SG.strip_padding_one_row(seller, 50, ids).values.numpy().tolist() == want
    assert SG.strip_padding(seller, 50).to_list() == [[b"s1", b"s2"]]
    # another width than the ids: its own non-empty values
    assert SG.strip_padding(tf.constant([["s1", "", "s2"]]), 50, ids).to_list() == [[b"s1", b"s2"]]
    spec = F.FeatureSpec((F.Declared("items", "seller", "categorical"),))
    request = {F.VIEW_ITEMS.name: ids, F.VIEW_CATEGORIES.name: seller, "view_item_seller": seller}
    assert SG.aligned_ids(request, spec.attribute_sequences[1], spec) is ids
    assert SG.aligned_ids(request, F.VIEW_CATEGORIES, spec) is None


def test_history_attributes_keep_the_user_side_shared():
    """The declared attribute projection runs once on the user's histories and per candidate
    on the candidate's own value; the shared graph scores as the model (projection non-zero)."""
    spec = F.FeatureSpec((F.Declared("items", "seller", "categorical"),))
    sizes = {**VOCAB_SIZES, "attr_item_seller": 6}
    keras.utils.set_random_seed(0)
    model = build_model("din", sizes, TINY, spec=spec)
    projection = model.get_layer("declared_attribute_projection")
    projection.set_weights([np.random.default_rng(3).normal(size=projection.kernel.shape).astype(np.float32)])
    graph = SG.SharedUserGraph(model, spec=spec)
    modes = [mode for node, mode in graph._plan if node.layer.name == "declared_attribute_projection"]
    assert modes == ["user"] * 3 + ["cand"]     # click, view, conversion once; the candidates per candidate
    from feedrank.train import synthetic

    batch = synthetic.random_batch(20, sizes, spec, seed=2)
    user = SG.user_input_names(spec)
    assert {F.idx(s.name) for s in spec.attribute_sequences} <= user and "item_seller_idx" not in user
    for row in range(3):
        inputs = {k: (v[row:row + 1] if k in user else v) for k, v in batch.items()}
        want = model({k: np.broadcast_to(v, (20,) + v.shape[1:]) for k, v in inputs.items()}, training=False).numpy()
        got = graph({k: tf.constant(v) for k, v in inputs.items()}, tf.constant(20)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"row {row}")
