"""Id dropout (`layers.IdDropout`): trained OOV rows for posts unseen in training."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from feedrank.train import layers as L
from tests.helpers.model_harness import fit_save_reload

# 1 padding row + V = 5 entries + 3 OOV buckets
VOCAB, OOV = 9, 3


def test_dropped_ids_go_to_their_bucket_padding_and_oov_stay():
    layer = L.IdDropout(VOCAB, OOV, rate=0.999999)
    x = tf.constant([[0, 1, 2, 5, 6, 7, 8]], tf.int64)
    tf.random.set_seed(0)
    (out,) = layer([x], training=True)
    # bucket of entry i = V + 1 + i mod 3 = 6 + i mod 3; 0 (padding) and 6..8 (OOV) unchanged
    assert out.numpy().tolist() == [[0, 7, 8, 8, 6, 7, 8]]


def test_identity_outside_training_and_at_rate_zero():
    x = tf.constant([[1, 2, 3, 4, 5]], tf.int64)
    assert (L.IdDropout(VOCAB, OOV, 0.5)([x], training=False)[0].numpy() == x.numpy()).all()
    assert (L.IdDropout(VOCAB, OOV, 0.0)([x], training=True)[0].numpy() == x.numpy()).all()


def test_one_draw_per_step_shared_by_every_input():
    """An id dropped as the candidate is dropped in the history too, as an unseen post is."""
    layer = L.IdDropout(VOCAB, OOV, rate=0.5)
    cand = tf.constant([1, 2, 3, 4, 5], tf.int64)
    hist = tf.constant([[5, 4, 3, 2, 1, 0]], tf.int64)
    dropped = []
    for _ in range(200):
        c, h = layer([cand, hist], training=True)
        c, h = c.numpy(), h.numpy()[0]
        for i in range(1, 6):
            assert (c[i - 1] != i) == (h[5 - i] != i)
        dropped.append((c != cand.numpy()).mean())
    assert 0.4 < np.mean(dropped) < 0.6  # the rate, over 1,000 draws


def test_config_round_trip_and_bad_rates():
    layer = L.IdDropout(VOCAB, OOV, 0.1, name="d")
    again = L.IdDropout.from_config(layer.get_config())
    assert (again.vocab_size, again.num_oov, again.rate) == (VOCAB, OOV, 0.1)
    with pytest.raises(ValueError, match="rate"):
        L.IdDropout(VOCAB, OOV, 1.0)
    with pytest.raises(ValueError, match="num_oov"):
        L.IdDropout(3, 3, 0.1)


@pytest.mark.parametrize("family", ["din", "deepfm", "multi_channel"])
def test_families_train_with_id_dropout_and_reload(family, tmp_path):
    before, after, model = fit_save_reload(family, tmp_path, {"id_dropout": 0.2})
    assert model.get_layer("item_id_dropout").rate == 0.2
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)
    assert isinstance(model.get_layer("item_id_dropout"), keras.layers.Layer)
